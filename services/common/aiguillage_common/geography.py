"""French territorial reference data: communes, postal codes, départements and their neighbours.

Loaded once at start from the project's ``data/`` folder (see data/PROVENANCE.md). The structures
are plain and immutable so the domain cores of intake and routing can use them without any I/O.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Commune:
    insee: str
    name: str
    departement: str
    lat: float | None
    lon: float | None
    parent: str | None = None  # the city of a municipal arrondissement (Paris, Lyon, Marseille)


@dataclass(frozen=True, slots=True)
class Departement:
    code: str
    name: str
    region_code: str
    chef_lieu_insee: str
    chef_lieu_name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Geography:
    communes: dict[str, Commune]
    postal_codes: dict[str, tuple[str, ...]]  # postal code -> INSEE codes, sorted
    departements: dict[str, Departement]
    neighbours: dict[str, frozenset[str]]

    def communes_for_postal_code(self, postal_code: str) -> tuple[Commune, ...]:
        return tuple(self.communes[c] for c in self.postal_codes.get(postal_code, ()))

    @cached_property
    def _arrondissements(self) -> dict[str, frozenset[str]]:
        cities: dict[str, set[str]] = defaultdict(set)
        for commune in self.communes.values():
            if commune.parent is not None:
                cities[commune.parent].add(commune.insee)
        return {city: frozenset(codes) for city, codes in cities.items()}

    def same_place(self, insee: str) -> frozenset[str]:
        """The codes that name ``insee`` or part of it: a city with its municipal arrondissements
        (75056, 69123, 13055), an arrondissement with its city. Sibling arrondissements are
        distinct places. Any other code stands for itself."""
        commune = self.communes.get(insee)
        if commune is not None and commune.parent is not None:
            return frozenset({insee, commune.parent})
        return frozenset({insee}) | self._arrondissements.get(insee, frozenset())

    def exclusion_zone(self, communes: Iterable[str]) -> frozenset[str]:
        """Every commune code a site must not lie in when ``communes`` are excluded: exclusion
        works on places, not on the spelling of a code."""
        zone: set[str] = set()
        for insee in communes:
            zone |= self.same_place(insee)
        return frozenset(zone)

    def coordinates(self, insee: str) -> tuple[float, float] | None:
        """A commune's centroid, or its département's chef-lieu when the commune has none."""
        commune = self.communes.get(insee)
        if commune is None:
            return None
        if commune.lat is not None and commune.lon is not None:
            return commune.lat, commune.lon
        departement = self.departements.get(commune.departement)
        return (departement.lat, departement.lon) if departement else None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def default_data_dir() -> Path:
    """``AIGUILLAGE_DATA_DIR``, else the repository's data/ folder (editable install)."""
    configured = os.environ.get("AIGUILLAGE_DATA_DIR")
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "data" / "cpca_centres.csv").exists():
            return parent / "data"
    raise FileNotFoundError("reference data not found: set AIGUILLAGE_DATA_DIR")


def _float(text: str) -> float | None:
    return float(text) if text else None


def load_geography(data_dir: Path | None = None) -> Geography:
    folder = data_dir or default_data_dir()
    communes: dict[str, Commune] = {}
    postal: defaultdict[str, set[str]] = defaultdict(set)
    with (folder / "codes_postaux_communes.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            insee = row["code_commune_insee"]
            communes.setdefault(
                insee,
                Commune(
                    insee,
                    row["nom_commune"],
                    row["departement"],
                    _float(row["lat"]),
                    _float(row["lon"]),
                ),
            )
            postal[row["code_postal"]].add(insee)
    # The postal file gives the 45 municipal arrondissements their city's centroid; each gets its
    # own point (GeoNames, see PROVENANCE.md) and knows its city.
    with (folder / "arrondissements_municipaux.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            insee = row["code_commune_insee"]
            base = communes.get(insee) or Commune(insee, row["nom"], insee[:2], None, None)
            communes[insee] = replace(
                base,
                lat=float(row["lat"]),
                lon=float(row["lon"]),
                parent=row["commune_parente"],
            )
    # The city codes (75056, 69123, 13055) come from the population file and borrow the
    # chef-lieu coordinates.
    with (folder / "communes_population.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            insee = row["code_commune_insee"]
            if insee not in communes:
                communes[insee] = Commune(insee, row["nom"], row["departement"], None, None)
    departements: dict[str, Departement] = {}
    with (folder / "departements.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            departements[row["code"]] = Departement(
                row["code"],
                row["nom"],
                row["region_code"],
                row["chef_lieu_insee"],
                row["chef_lieu_nom"],
                float(row["chef_lieu_lat"]),
                float(row["chef_lieu_lon"]),
            )
    adjacency = json.loads((folder / "departements_adjacency.json").read_text("utf-8"))
    neighbours = {code: frozenset(near) for code, near in adjacency["adjacency"].items()}
    return Geography(
        communes=communes,
        postal_codes={code: tuple(sorted(insees)) for code, insees in postal.items()},
        departements=departements,
        neighbours=neighbours,
    )
