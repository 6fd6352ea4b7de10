"""The CPCA directory as routing sees it: centres, the sites they route to, and per site and
service the capacity with who may use it and when it was last reported."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode

Eligibility = Literal["judicial_only", "all"]
# A directory of more sites than this is indexed by (département, service) on its first decision.
INDEX_ABOVE_SITES = 2_000


@dataclass(frozen=True, slots=True)
class Centre:
    centre_id: str
    name: str
    region_code: str
    departements: frozenset[str]
    coordinator_contact: str = ""


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
    services: frozenset[ServiceCode]  # services open at this site
    serves: frozenset[str]  # départements this site takes referrals from
    address_confidential: bool = False
    assumed: bool = False
    languages: frozenset[str] = frozenset({"fr"})
    # A national provider (the national housing platform): never a candidate of the ordinary
    # decision, only the housing leg of a split (care locally, housing nationally).
    national: bool = False


@dataclass(frozen=True, slots=True)
class Capacity:
    """Places for one service at one site. ``places_total`` is what the centre reports;
    ``places_held`` is what Aiguillage has offered or placed there and not released."""

    places_total: int
    places_held: int
    updated_at: datetime
    eligibility: Eligibility = "all"
    assumed: bool = False

    def open_places(self, now: datetime, freshness: timedelta) -> int | None:
        """Free places, or None when the last report is too old to be trusted."""
        if now - self.updated_at > freshness:
            return None
        return max(self.places_total - self.places_held, 0)

    def admits(self, kind: PrescriberKind) -> bool:
        return self.eligibility == "all" or kind.is_judicial

    @property
    def load_ratio(self) -> float:
        return self.places_held / self.places_total if self.places_total else 1.0


@dataclass(frozen=True)
class Directory:
    centres: Mapping[str, Centre]
    sites: tuple[Site, ...]
    capacity: Mapping[tuple[str, ServiceCode], Capacity] = field(default_factory=dict)

    def centre_of(self, site: Site) -> Centre:
        return self.centres[site.centre_id]

    def site(self, site_id: str) -> Site | None:
        return self.by_id.get(site_id)

    @cached_property
    def by_id(self) -> dict[str, Site]:
        return {site.site_id: site for site in self.sites}

    @cached_property
    def local_sites(self) -> tuple[Site, ...]:
        """The sites the ordinary decision and the waiting lists look at (national ones aside)."""
        return tuple(site for site in self.sites if not site.national)

    @cached_property
    def national_housing(self) -> tuple[Site, ...]:
        """National providers of eviction housing (the national platform), by site id."""
        return tuple(
            site
            for site in sorted(self.sites, key=lambda s: s.site_id)
            if site.national and ServiceCode.EVICTION_HOUSING in site.services
        )

    @cached_property
    def _by_departement(self) -> dict[str, tuple[Site, ...]]:
        """Each département's sites: those serving it and those lying in it (built once)."""
        index: dict[str, list[Site]] = {}
        for site in self.local_sites:
            for departement in {*site.serves, site.departement}:
                index.setdefault(departement, []).append(site)
        return {d: tuple(sites) for d, sites in index.items()}

    @cached_property
    def _by_service(self) -> dict[tuple[str, ServiceCode], tuple[Site, ...]]:
        """Per (département, service): the sites offering the service that serve the département
        or lie in it (built once per snapshot)."""
        index: dict[tuple[str, ServiceCode], list[Site]] = {}
        for site in self.local_sites:
            for departement in {*site.serves, site.departement}:
                for service in site.services:
                    index.setdefault((departement, service), []).append(site)
        return {key: tuple(sites) for key, sites in index.items()}

    def candidates(
        self,
        home: str,
        neighbours: frozenset[str],
        needed: tuple[ServiceCode, ...],
        fallback: bool,
    ) -> list[Site]:
        """Sites offering every needed service that serve ``home`` or lie in it, and, when the
        fallback is allowed, those lying in a neighbouring département: the only sites that can
        pass the territory and service constraints."""
        key = (home, needed, fallback)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = tuple(self._candidates(home, neighbours, needed, fallback))
        return list(pool)

    def territory(self, departements: Collection[str]) -> tuple[Site, ...]:
        """Every site, national ones too, serving or lying in any of ``departements``, in the
        directory's order: what the database selects for a territory. Remembered per territory
        (a consumer batch asks for the same few again and again)."""
        wanted = frozenset(departements)
        found = self._territories.get(wanted)
        if found is None:
            found = self._territories[wanted] = tuple(
                s for s in self.sites if s.departement in wanted or not s.serves.isdisjoint(wanted)
            )
        return found

    @cached_property
    def _territories(self) -> dict[frozenset[str], tuple[Site, ...]]:
        return {}

    @cached_property
    def _pools(self) -> dict[tuple[str, tuple[ServiceCode, ...], bool], tuple[Site, ...]]:
        return {}

    @cached_property
    def _trig(self) -> dict[str, tuple[float, float, float]]:
        return {}

    def trig(self, site: Site) -> tuple[float, float, float]:
        """The site's latitude and longitude in radians and the cosine of its latitude (kept)."""
        found = self._trig.get(site.site_id)
        if found is None:
            lat = math.radians(site.lat)
            found = self._trig[site.site_id] = (lat, math.radians(site.lon), math.cos(lat))
        return found

    def _candidates(
        self,
        home: str,
        neighbours: frozenset[str],
        needed: tuple[ServiceCode, ...],
        fallback: bool,
    ) -> list[Site]:
        if not needed:
            return self.sites_near({home, *neighbours}) if fallback else self.sites_near({home})
        wanted = set(needed)
        if len(self.sites) <= INDEX_ABOVE_SITES and "_by_service" not in self.__dict__:
            # A snapshot of one territory (what the service reads per decision) is scanned: cheaper
            # than indexing it for a single decision.
            return [
                site
                for site in self.local_sites
                if wanted <= site.services
                and (
                    home in site.serves
                    or site.departement == home
                    or (fallback and site.departement in neighbours)
                )
            ]
        index = self._by_service
        rarest = min(needed, key=lambda s: len(index.get((home, s), ())))
        found: dict[str, Site] = {
            site.site_id: site
            for site in index.get((home, rarest), ())
            if wanted <= site.services and (home in site.serves or site.departement == home)
        }
        if fallback:
            for departement in sorted(neighbours):
                rarest = min(needed, key=lambda s: len(index.get((departement, s), ())))
                for site in index.get((departement, rarest), ()):
                    if site.departement == departement and wanted <= site.services:
                        found.setdefault(site.site_id, site)
        return list(found.values())

    def sites_near(self, departements: set[str] | frozenset[str]) -> list[Site]:
        """Sites serving or lying in any of ``departements`` (callers sort what they keep)."""
        seen: dict[str, Site] = {}
        for departement in sorted(departements):
            for site in self._by_departement.get(departement, ()):
                seen[site.site_id] = site
        return list(seen.values())


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A count a centre must confirm: when, and whether it is already past due."""

    site_id: str
    service: ServiceCode
    updated_at: datetime
    confirm_by: datetime
    stale: bool


def confirmations_due(
    directory: Directory, now: datetime, freshness: timedelta, reminder: timedelta
) -> list[Confirmation]:
    """Counts already stale, or going stale within ``reminder``, earliest first: what centres
    are reminded of and operators are shown."""
    due = []
    for (site_id, service), capacity in directory.capacity.items():
        confirm_by = capacity.updated_at + freshness
        if confirm_by - reminder <= now:
            due.append(
                Confirmation(site_id, service, capacity.updated_at, confirm_by, confirm_by < now)
            )
    return sorted(due, key=lambda c: (c.confirm_by, c.site_id, c.service))
