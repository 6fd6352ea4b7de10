"""Reference data the console's network pages read once at start: départements (names,
régions, metropolitan or overseas) and the map's geometry from the GeoJSON in ``data/raw``."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from aiguillage_common.geography import default_data_dir
from portal.domain.map_svg import MapGeometry, build_geometry

GEOJSON = "raw/france-geojson_departements-version-simplifiee.geojson"


@dataclass(frozen=True, slots=True)
class Territory:
    departements: dict[str, str]  # code -> name, in code order
    regions: dict[str, str]  # code -> name, by name
    region_of: dict[str, str]  # département code -> région code
    overseas: tuple[str, ...]  # codes of the départements not on the metropolitan map
    geometry: MapGeometry


def load_territory(data_dir: Path | None = None) -> Territory:
    folder = data_dir or default_data_dir()
    departements: dict[str, str] = {}
    regions: dict[str, str] = {}
    region_of: dict[str, str] = {}
    overseas: list[str] = []
    with (folder / "departements.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            departements[row["code"]] = row["nom"]
            regions[row["region_code"]] = row["region_nom"]
            region_of[row["code"]] = row["region_code"]
            if row["zone"] != "metro":
                overseas.append(row["code"])
    geojson = json.loads((folder / GEOJSON).read_text(encoding="utf-8"))
    return Territory(
        departements=dict(sorted(departements.items())),
        regions=dict(sorted(regions.items(), key=lambda item: item[1])),
        region_of=region_of,
        overseas=tuple(sorted(overseas)),
        geometry=build_geometry(geojson),
    )
