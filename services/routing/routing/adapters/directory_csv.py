"""Builds the seed directory from data/cpca_centres.csv (not an official registry: see
PROVENANCE.md).

Where no site address is published, the centre gets one site per served département: its main
commune where it lies in that département, else the département's chef-lieu, marked as assumed.
Capacity is derived, and marked assumed: a centre's annual_capacity_persons times the mean length
of a path (a setting) gives the people it follows at once, shared between its sites by the
population of their départements; published eviction places all sit at the main site, the only
one offering eviction housing. Housing and probationary placement are for judicial referrals.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from aiguillage_common.geography import Geography, default_data_dir
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Capacity, Centre, Directory, Eligibility, Site

JUDICIAL_ONLY = frozenset({ServiceCode.EVICTION_HOUSING, ServiceCode.PROBATIONARY_PLACEMENT})


def seed_eligibility(service: ServiceCode) -> Eligibility:
    return "judicial_only" if service in JUDICIAL_ONLY else "all"


def _populations(folder: Path) -> dict[str, int]:
    with (folder / "departements_population.csv").open(encoding="utf-8") as handle:
        return {row["code"]: int(row["population"]) for row in csv.DictReader(handle)}


def load_directory(
    geography: Geography,
    data_dir: Path | None = None,
    *,
    as_of: datetime | None = None,
    path_months: float = 4.0,
) -> Directory:
    """The seed directory; capacities are stamped ``as_of`` (default: the epoch of the seed
    data is unknown, so the caller passes the load time)."""
    folder = data_dir or default_data_dir()
    stamp = as_of or datetime.now().astimezone()
    population = _populations(folder)
    centres: dict[str, Centre] = {}
    sites: list[Site] = []
    capacity: dict[tuple[str, ServiceCode], Capacity] = {}
    with (folder / "cpca_centres.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            departements = frozenset(row["departements"].split())
            centre = Centre(
                row["centre_id"],
                row["name"],
                row["region_code"],
                departements,
                coordinator_contact=f"coordination@{row['centre_id'].lower()}.cpca.example",
            )
            centres[centre.centre_id] = centre
            services = frozenset(ServiceCode(code) for code in row["services"].split())
            main = geography.communes.get(row["main_site_commune_insee"])
            main_departement = (
                main.departement
                if main is not None and main.departement in departements
                else sorted(departements)[0]
            )
            concurrent = float(row["annual_capacity_persons"] or 0) * path_months / 12
            total_population = sum(population.get(d, 0) for d in departements) or 1
            for departement in sorted(departements):
                if main is not None and main.departement == departement:
                    insee, assumed = main.insee, False
                else:
                    insee, assumed = geography.departements[departement].chef_lieu_insee, True
                coordinates = geography.coordinates(insee)
                if coordinates is None:
                    prefecture = geography.departements[departement]
                    coordinates = (prefecture.lat, prefecture.lon)
                is_main = departement == main_departement
                offered = services if is_main else services - {ServiceCode.EVICTION_HOUSING}
                site = Site(
                    site_id=f"{centre.centre_id}-{departement}",
                    centre_id=centre.centre_id,
                    commune_insee=insee,
                    departement=departement,
                    lat=coordinates[0],
                    lon=coordinates[1],
                    services=offered,
                    serves=departements,
                    assumed=assumed,
                )
                sites.append(site)
                share = population.get(departement, 0) / total_population
                places = max(1, round(concurrent * share))
                for service in offered:
                    total = (
                        int(row["eviction_housing_places"] or 0)
                        if service is ServiceCode.EVICTION_HOUSING
                        else places
                    )
                    capacity[(site.site_id, service)] = Capacity(
                        places_total=total,
                        places_held=0,
                        updated_at=stamp,
                        eligibility=seed_eligibility(service),
                        assumed=True,
                    )
    platform = folder / NATIONAL_HOUSING_FILE
    if platform.exists():
        national_centre, national_site, housing = national_housing(platform, geography, stamp)
        centres[national_centre.centre_id] = national_centre
        sites.append(national_site)
        capacity[(national_site.site_id, ServiceCode.EVICTION_HOUSING)] = housing
    return Directory(centres=centres, sites=tuple(sites), capacity=capacity)


NATIONAL_HOUSING_FILE = "national_housing_platform.json"


def national_housing(
    path: Path, geography: Geography, as_of: datetime
) -> tuple[Centre, Site, Capacity]:
    """The national platform for housing evicted perpetrators (data/national_housing_platform.json):
    one centre, one site flagged ``national`` offering eviction housing only, serving every
    département the network serves; its places are reported like any site's."""
    row = json.loads(path.read_text(encoding="utf-8"))
    everywhere = frozenset(geography.departements)
    centre = Centre(
        row["centre_id"],
        row["name"],
        row["region_code"],
        everywhere,
        coordinator_contact=row["coordinator_contact"],
    )
    coordinates = geography.coordinates(row["commune_insee"])
    commune = geography.communes.get(row["commune_insee"])
    if coordinates is None or commune is None:
        raise ValueError(f"{path}: unknown commune {row['commune_insee']}")
    site = Site(
        site_id=row["site_id"],
        centre_id=centre.centre_id,
        commune_insee=row["commune_insee"],
        departement=commune.departement,
        lat=coordinates[0],
        lon=coordinates[1],
        services=frozenset({ServiceCode.EVICTION_HOUSING}),
        serves=everywhere,
        address_confidential=True,
        assumed=bool(row.get("assumed", True)),
        national=True,
    )
    places = Capacity(
        places_total=int(row["eviction_housing_places"]),
        places_held=0,
        updated_at=as_of,
        eligibility="judicial_only" if row["eligibility"] == "judicial_only" else "all",
        assumed=bool(row.get("assumed", True)),
    )
    return centre, site, places
