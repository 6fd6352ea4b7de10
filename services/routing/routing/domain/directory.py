"""The CPCA directory as routing sees it: centres and the sites they route to."""

from __future__ import annotations

from dataclasses import dataclass

from aiguillage_schemas.vocabulary import ServiceCode


@dataclass(frozen=True, slots=True)
class Centre:
    centre_id: str
    name: str
    region_code: str
    departements: frozenset[str]


@dataclass(frozen=True, slots=True)
class Site:
    """A place where the person is received. ``assumed`` marks a site placed at a département's
    chef-lieu because no address is published."""

    site_id: str
    centre_id: str
    commune_insee: str
    departement: str
    lat: float
    lon: float
    services: frozenset[ServiceCode]
    serves: frozenset[str]  # départements this site takes referrals from
    address_confidential: bool = False
    assumed: bool = False


@dataclass(frozen=True)
class Directory:
    centres: dict[str, Centre]
    sites: tuple[Site, ...]

    def centre_of(self, site: Site) -> Centre:
        return self.centres[site.centre_id]
