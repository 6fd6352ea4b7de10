"""Builds the directory from data/cpca_centres.csv (not an official registry: see PROVENANCE.md).

Where no site address is published, the centre gets one site per served département: its main
commune where it lies in that département, else the département's chef-lieu, marked as assumed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from aiguillage_common.geography import Geography, default_data_dir
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Centre, Directory, Site


def load_directory(geography: Geography, data_dir: Path | None = None) -> Directory:
    folder = data_dir or default_data_dir()
    centres: dict[str, Centre] = {}
    sites: list[Site] = []
    with (folder / "cpca_centres.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            departements = frozenset(row["departements"].split())
            centre = Centre(row["centre_id"], row["name"], row["region_code"], departements)
            centres[centre.centre_id] = centre
            services = frozenset(ServiceCode(code) for code in row["services"].split())
            main = geography.communes.get(row["main_site_commune_insee"])
            for departement in sorted(departements):
                if main is not None and main.departement == departement:
                    insee, assumed = main.insee, False
                else:
                    insee, assumed = geography.departements[departement].chef_lieu_insee, True
                coordinates = geography.coordinates(insee)
                if coordinates is None:
                    prefecture = geography.departements[departement]
                    coordinates = (prefecture.lat, prefecture.lon)
                sites.append(
                    Site(
                        site_id=f"{centre.centre_id}-{departement}",
                        centre_id=centre.centre_id,
                        commune_insee=insee,
                        departement=departement,
                        lat=coordinates[0],
                        lon=coordinates[1],
                        services=services,
                        serves=departements,
                        assumed=assumed,
                    )
                )
    return Directory(centres=centres, sites=tuple(sites))
