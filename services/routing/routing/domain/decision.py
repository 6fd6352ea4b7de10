"""The routing decision: hard constraints first, then a scored, deterministic preference.

Hard constraints (a site failing one is never chosen, whatever the score): the site serves the
person's territory (or lies in a neighbouring département when the fallback is allowed), within the
maximum distance; it offers every needed service, to this kind of prescriber; it lies outside every
exclusion zone (bans and the victim's commune); it has not been tried for this referral already.
Among feasible sites, one with a free place for every needed service is chosen by lowest score:
territory tier (own département, neighbour, elsewhere in the territory, fallback) dominates, then
distance, then the load of the site, then a language penalty; ties go to the lowest site id. When
no feasible site has room, the referral waits at the best feasible site.

Pure: the same directory, policy, time and referral always give the same decision and record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from aiguillage_common.geography import Geography, haversine_km
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Directory, Site

UnroutableReason = Literal["no_site_offers_services", "all_sites_excluded", "territory_not_served"]

TIER_LABELS = (
    "dans le département de résidence",
    "dans un département voisin",
    "dans le territoire du centre",
    "hors territoire, en repli dans un département voisin",
)


@dataclass(frozen=True, slots=True)
class Policy:
    """Every value a coordinator may want to change; the version names the combination."""

    max_distance_km: float = 200.0
    allow_neighbour_fallback: bool = True
    tier_weight_km: float = 1000.0
    load_weight_km: float = 25.0
    language_penalty_km: float = 30.0
    capacity_freshness: timedelta = timedelta(days=30)
    name: str = "default"

    @property
    def version(self) -> str:
        values = {k: str(v) for k, v in sorted(asdict(self).items()) if k != "name"}
        digest = hashlib.sha256(json.dumps(values).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One site considered: why it was excluded (empty: feasible), its score, its capacity."""

    site_id: str
    centre_id: str
    departement: str
    distance_km: float
    tier: int
    excluded: tuple[str, ...]
    score: dict[str, float]
    capacity: dict[str, int | None]  # open places per needed service (None: unknown)

    @property
    def feasible(self) -> bool:
        return not self.excluded

    @property
    def has_room(self) -> bool:
        return all(places is not None and places > 0 for places in self.capacity.values())


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    policy_version: str
    decided_at: datetime
    residence_departement: str
    needed_services: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    tried: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["decided_at"] = self.decided_at.isoformat()
        return document


@dataclass(frozen=True, slots=True)
class Routed:
    site: Site
    distance_km: float
    explanation: str
    record: DecisionRecord = field(compare=True)


@dataclass(frozen=True, slots=True)
class Waitlisted:
    site: Site
    service: ServiceCode
    distance_km: float
    explanation: str
    record: DecisionRecord


@dataclass(frozen=True, slots=True)
class Unroutable:
    reason: UnroutableReason
    explanation: str
    record: DecisionRecord


Decision = Routed | Waitlisted | Unroutable


def decide(
    referral: ReferralAcceptedData,
    directory: Directory,
    geography: Geography,
    policy: Policy | None = None,
    *,
    now: datetime,
    tried: Collection[str] = (),
) -> Decision:
    policy = policy or Policy()
    home = referral.residence_departement
    neighbours = geography.neighbours.get(home, frozenset())
    needed = tuple(sorted(set(referral.needed_services)))
    origin = geography.coordinates(referral.residence_commune_insee)
    candidates = [
        _assess(site, referral, directory, policy, now, tried, home, neighbours, needed, origin)
        for site in directory.sites_near({home})
        if home in site.serves or site.departement == home or site.departement in neighbours
    ]
    candidates += [
        _assess(site, referral, directory, policy, now, tried, home, neighbours, needed, origin)
        for site in directory.sites_near(neighbours)
        if home not in site.serves and site.departement in neighbours
    ]
    candidates.sort(key=lambda c: (c.score["total"], c.site_id))
    record = DecisionRecord(
        policy_version=policy.version,
        decided_at=now,
        residence_departement=home,
        needed_services=needed,
        candidates=tuple(candidates),
        tried=tuple(sorted(tried)),
    )
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        reason, explanation = _why_unroutable(candidates, home, needed)
        return Unroutable(reason, explanation, record)
    with_room = [c for c in feasible if c.has_room]
    sites = directory.by_id
    if with_room:
        best = with_room[0]
        site = sites[best.site_id]
        return Routed(
            site, best.distance_km, _routed_words(best, site, directory, feasible), record
        )
    best = feasible[0]
    site = sites[best.site_id]
    service = next(ServiceCode(s) for s, places in sorted(best.capacity.items()) if not places)
    unknown = best.capacity[service] is None
    explanation = (
        f"{directory.centre_of(site).name} : aucun des {len(feasible)} site(s) possibles n'a de "
        f"place; attente au site {site.site_id} ({TIER_LABELS[best.tier]}, "
        f"{best.distance_km:.0f} km) pour le service {service}"
        + (" (capacité non confirmée récemment)." if unknown else ".")
    )
    return Waitlisted(site, service, best.distance_km, explanation, record)


def _assess(
    site: Site,
    referral: ReferralAcceptedData,
    directory: Directory,
    policy: Policy,
    now: datetime,
    tried: Collection[str],
    home: str,
    neighbours: frozenset[str],
    needed: tuple[ServiceCode, ...],
    origin: tuple[float, float] | None,
) -> Candidate:
    in_territory = home in site.serves
    if site.departement == home and in_territory:
        tier = 0
    elif site.departement in neighbours and in_territory:
        tier = 1
    elif in_territory:
        tier = 2
    else:
        tier = 3
    distance = round(haversine_km(origin, (site.lat, site.lon)), 1) if origin else 0.0
    excluded: list[str] = []
    if tier == 3 and not policy.allow_neighbour_fallback:
        excluded.append("territory_not_served")
    if distance > policy.max_distance_km:
        excluded.append("too_far")
    excluded.extend(f"service_missing:{s}" for s in needed if s not in site.services)
    capacity: dict[str, int | None] = {}
    loads: list[float] = []
    for service in needed:
        held = directory.capacity.get((site.site_id, service))
        if held is None:
            capacity[service] = None  # offered but never counted: unknown, not available
            continue
        if not held.admits(referral.prescriber_kind):
            excluded.append(f"not_eligible:{service}")
        capacity[service] = held.open_places(now, policy.capacity_freshness)
        loads.append(held.load_ratio)
    if (
        site.commune_insee in referral.excluded_communes
        or site.departement in referral.excluded_departements
    ):
        excluded.append("exclusion_zone")
    if site.site_id in tried:
        excluded.append("already_tried")
    load = max(loads, default=0.0)
    language = 0.0 if referral.language in site.languages else policy.language_penalty_km
    score = {
        "tier": tier * policy.tier_weight_km,
        "distance": distance,
        "load": round(load * policy.load_weight_km, 3),
        "language": language,
    }
    score["total"] = round(sum(score.values()), 3)
    return Candidate(
        site.site_id,
        site.centre_id,
        site.departement,
        distance,
        tier,
        tuple(excluded),
        score,
        capacity,
    )


def _why_unroutable(
    candidates: list[Candidate], home: str, needed: tuple[ServiceCode, ...]
) -> tuple[UnroutableReason, str]:
    territorial = [c for c in candidates if "territory_not_served" not in c.excluded]
    if not territorial:
        return "territory_not_served", f"aucun site ne couvre le département {home}"
    if all(any(e.startswith("service_missing") for e in c.excluded) for c in territorial):
        offered = {
            s for c in territorial for s in needed if f"service_missing:{s}" not in c.excluded
        }
        missing = ", ".join(str(s) for s in needed if s not in offered) or "la combinaison demandée"
        return (
            "no_site_offers_services",
            f"aucun site couvrant le département {home} n'offre : {missing}",
        )
    reasons = sorted({e.split(":")[0] for c in territorial for e in c.excluded})
    return (
        "all_sites_excluded",
        f"tous les {len(territorial)} sites possibles sont écartés ({', '.join(reasons)})",
    )


def _routed_words(
    best: Candidate, site: Site, directory: Directory, feasible: list[Candidate]
) -> str:
    centre = directory.centre_of(site)
    full = sum(1 for c in feasible if not c.has_room)
    crowded = f"; {full} autre(s) site(s) complet(s)" if full else ""
    return (
        f"{centre.name} : site {site.site_id} {TIER_LABELS[best.tier]}, à "
        f"{best.distance_km:.0f} km, offre les {len(best.capacity)} services demandés avec des "
        f"places libres; {len(feasible)} site(s) possibles{crowded}."
    )
