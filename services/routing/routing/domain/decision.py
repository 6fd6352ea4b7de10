"""The routing decision: hard constraints first, then one cost.

Hard constraints (a site failing one is never chosen, whatever the cost): the site serves the
person's territory (or lies in a neighbouring département when the fallback is allowed), within the
maximum distance; it offers every needed service, to this kind of prescriber; it lies outside every
exclusion zone (bans and the victim's commune, as places: a city and its arrondissements are one
zone); it has not been tried for this referral already. Among feasible sites with a free place for
every needed service, the lowest cost wins:

    distance + away_from_home (site outside the home département) + out_of_territory (the site
    does not serve the home département) + load x load_weight + language + stale (capacity not
    confirmed recently, when the policy ranks stale sites rather than dropping them)

ties go to the lowest site id. When no feasible site has room, the referral waits; the notice names
the cheapest feasible site.

Candidates come from an index by département and service, so a decision looks only at the sites
that could serve the person, not at the whole directory. Pure: the same directory, policy, time and
referral always give the same decision and record.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from aiguillage_common.geography import Geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Directory, Site

UnroutableReason = Literal["no_site_offers_services", "all_sites_excluded", "territory_not_served"]
StalePolicy = Literal["rank", "drop"]

TIER_LABELS = (
    "dans le département de résidence",
    "dans un département voisin",
    "dans le territoire du centre",
    "hors territoire, en repli dans un département voisin",
)


@dataclass(frozen=True, slots=True)
class Policy:
    """Every value a coordinator may want to change; the version names the combination.

    Costs are in kilometres: ``away_from_home_km`` is what leaving the home département is worth
    (a site elsewhere must be that much nearer to win), ``out_of_territory_km`` what a site outside
    the centre's territory adds on top, ``load_weight_km`` the cost of a full site against an empty
    one. ``stale_capacity``: "rank" keeps offering a site whose counts were not confirmed within
    ``capacity_freshness``, on its last counts, at ``stale_penalty_km`` more; "drop" treats its
    capacity as unknown (never offered)."""

    max_distance_km: float = 200.0
    allow_neighbour_fallback: bool = True
    away_from_home_km: float = 20.0
    out_of_territory_km: float = 10.0
    load_weight_km: float = 10.0
    language_penalty_km: float = 30.0
    capacity_freshness: timedelta = timedelta(days=30)
    stale_capacity: StalePolicy = "rank"
    stale_penalty_km: float = 40.0
    record_candidates: int = 25
    name: str = "default"

    @property
    def version(self) -> str:
        return _version_of(self)


@functools.lru_cache(maxsize=32)
def _version_of(policy: Policy) -> str:
    """Computed once per policy (it is frozen): every decision records it."""
    values = {k: str(v) for k, v in sorted(asdict(policy).items()) if k != "name"}
    digest = hashlib.sha256(json.dumps(values).encode()).hexdigest()[:8]
    return f"{policy.name}-{digest}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One site considered: why it was excluded (empty: feasible), its cost, its capacity."""

    site_id: str
    centre_id: str
    departement: str
    distance_km: float
    tier: int
    excluded: tuple[str, ...]
    score: dict[str, float]
    capacity: dict[str, int | None]  # open places per needed service (None: unknown)
    stale: bool = False  # some count was not confirmed within the freshness window

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
    omitted: int = 0  # candidates left out of the record (beyond ``record_candidates``)

    def to_json(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives (with the time as ISO text), written out: asdict
        deep-copies every candidate's dicts, a tenth of routing's CPU per decision."""
        return {
            "policy_version": self.policy_version,
            "decided_at": self.decided_at.isoformat(),
            "residence_departement": self.residence_departement,
            "needed_services": self.needed_services,
            "candidates": tuple(
                {
                    "site_id": c.site_id,
                    "centre_id": c.centre_id,
                    "departement": c.departement,
                    "distance_km": c.distance_km,
                    "tier": c.tier,
                    "excluded": c.excluded,
                    "score": dict(c.score),
                    "capacity": dict(c.capacity),
                    "stale": c.stale,
                }
                for c in self.candidates
            ),
            "tried": self.tried,
            "omitted": self.omitted,
        }


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


@dataclass(frozen=True, slots=True)
class Split:
    """Care locally, housing nationally: no site has room for every need (or none offers eviction
    housing within reach), but ``care`` has room for the care (the needs without eviction
    housing) and the national platform ``housing`` has room for the housing. Both legs are
    reserved in the same transaction and offered, answered and timed out each on its own."""

    care: Routed
    housing: Site
    explanation: str

    @property
    def site(self) -> Site:
        return self.care.site

    @property
    def distance_km(self) -> float:
        return self.care.distance_km

    @property
    def record(self) -> DecisionRecord:
        return self.care.record


Decision = Routed | Waitlisted | Unroutable | Split


@dataclass(frozen=True, slots=True)
class Request:
    """What the hard constraints and the cost need from a referral, computed once."""

    home: str
    neighbours: frozenset[str]
    needed: tuple[ServiceCode, ...]
    origin: tuple[float, float] | None
    excluded_communes: frozenset[str]
    excluded_departements: frozenset[str]
    judicial: bool
    language: str
    origin_trig: tuple[float, float, float] | None = None

    @classmethod
    def of(cls, referral: ReferralAcceptedData, geography: Geography) -> Request:
        home = referral.residence_departement
        origin = geography.coordinates(referral.residence_commune_insee)
        return cls(
            home=home,
            neighbours=geography.neighbours.get(home, frozenset()),
            needed=tuple(sorted(set(referral.needed_services))),
            origin=origin,
            excluded_communes=geography.exclusion_zone(referral.excluded_communes),
            excluded_departements=frozenset(referral.excluded_departements),
            judicial=referral.prescriber_kind.is_judicial,
            language=referral.language,
            origin_trig=_trig(origin) if origin else None,
        )


def decide(
    referral: ReferralAcceptedData,
    directory: Directory,
    geography: Geography,
    policy: Policy | None = None,
    *,
    now: datetime,
    tried: Collection[str] = (),
    housing_tried: Collection[str] = (),
) -> Decision:
    """The decision for ``referral``; ``housing_tried``: national housing providers that already
    declined or let this referral's housing offer time out (never offered it again)."""
    decision = _decide(referral, directory, geography, policy or Policy(), now, tried)
    if isinstance(decision, Routed) or ServiceCode.EVICTION_HOUSING not in referral.needed_services:
        return decision
    return split(referral, directory, geography, policy or Policy(), now, tried, housing_tried) or (
        decision
    )


_HOUSING = (ServiceCode.EVICTION_HOUSING,)


def national_housing_with_room(
    referral: ReferralAcceptedData,
    directory: Directory,
    now: datetime,
    policy: Policy,
    housing_tried: Collection[str] = (),
) -> Site | None:
    """The first national housing provider that may house this person and has a place now.
    It serves nationally: no territory, distance nor exclusion zone applies (the care site is
    the one the person attends near home); eligibility (judicial only) and room do."""
    for site in directory.national_housing:
        if site.site_id in housing_tried:
            continue
        held = directory.capacity.get((site.site_id, ServiceCode.EVICTION_HOUSING))
        if held is None or not held.admits(referral.prescriber_kind):
            continue
        if site_counts(site, _HOUSING, directory, policy, now).room:
            return site
    return None


def split(
    referral: ReferralAcceptedData,
    directory: Directory,
    geography: Geography,
    policy: Policy,
    now: datetime,
    tried: Collection[str] = (),
    housing_tried: Collection[str] = (),
) -> Split | None:
    """Care at the best local site with room for the care, housing at the national platform,
    when both have room; None otherwise. The care site meets every hard constraint for the care
    needs (the same decision, on the needs without eviction housing)."""
    care_needs = [s for s in referral.needed_services if s is not ServiceCode.EVICTION_HOUSING]
    if not care_needs:
        return None
    housing = national_housing_with_room(referral, directory, now, policy, housing_tried)
    if housing is None:
        return None
    care = _decide(
        referral.model_copy(update={"needed_services": care_needs}),
        directory,
        geography,
        policy,
        now,
        tried,
    )
    if not isinstance(care, Routed):
        return None
    platform = directory.centre_of(housing).name
    return Split(
        care,
        housing,
        f"{care.explanation} Hébergement : aucun site à portée n'a de place d'hébergement pour "
        f"auteur évincé; l'hébergement est proposé à la {platform} (site {housing.site_id}).",
    )


def _decide(
    referral: ReferralAcceptedData,
    directory: Directory,
    geography: Geography,
    policy: Policy,
    now: datetime,
    tried: Collection[str],
) -> Routed | Waitlisted | Unroutable:
    request = Request.of(referral, geography)
    pool = directory.candidates(
        request.home, request.neighbours, request.needed, policy.allow_neighbour_fallback
    )
    # First a cheap screen of the sites that could serve the person (cost, feasible, room);
    # then the full record only for the sites kept in it, on the counts the screen read.
    counts: dict[str, SiteCounts] = {}
    screened = sorted(
        _screen_pool(pool, request, directory, policy, now, tried, counts),
        key=lambda s: (not s[1], s[0], s[3].site_id),
    )
    feasible_count = sum(1 for s in screened if s[1])
    if not feasible_count:
        # Rare: look at every site near the person, to say why none fits.
        assessed = [
            assess(site, request, directory, policy, now, tried, counts.get(site.site_id))
            for site in _near(directory, request)
        ]
        record = _record(assessed, request, policy, now, tried)
        reason, explanation = _why_unroutable(list(record.candidates), request.home, request.needed)
        return Unroutable(reason, explanation, record)
    chosen = next((s[3] for s in screened if s[1] and s[2]), None)
    kept = [s[3] for s in screened[: max(policy.record_candidates, 1)]]
    if chosen is not None and chosen not in kept:
        kept.append(chosen)
    assessed = [
        assess(site, request, directory, policy, now, tried, counts.get(site.site_id))
        for site in kept
    ]
    omitted = len(pool) - len(kept)
    if len(pool) < policy.record_candidates:
        # Room left in the record: say also why the other sites near the person do not fit.
        seen = {site.site_id for site in pool}
        assessed += [
            assess(site, request, directory, policy, now, tried, counts.get(site.site_id))
            for site in _near(directory, request)
            if site.site_id not in seen
        ]
    record = _record(
        assessed, request, policy, now, tried, omitted, chosen.site_id if chosen else None
    )
    feasible = [c for c in record.candidates if c.feasible]
    full = sum(1 for s in screened if s[1] and not s[2])
    sites = directory.by_id
    if chosen is not None:
        best_room = next(c for c in record.candidates if c.site_id == chosen.site_id)
        return Routed(
            chosen,
            best_room.distance_km,
            _routed_words(best_room, chosen, directory, feasible_count, full),
            record,
        )
    best = feasible[0]
    site = sites[best.site_id]
    service = next(ServiceCode(s) for s, places in sorted(best.capacity.items()) if not places)
    unknown = best.capacity[service] is None
    explanation = (
        f"{directory.centre_of(site).name} : aucun des {feasible_count} site(s) possibles n'a de "
        f"place; attente au site {site.site_id} ({TIER_LABELS[best.tier]}, "
        f"{best.distance_km:.0f} km) pour le service {service}"
        + (" (capacité non confirmée récemment)." if unknown else ".")
    )
    return Waitlisted(site, service, best.distance_km, explanation, record)


def _near(directory: Directory, request: Request) -> list[Site]:
    return [
        site
        for site in directory.sites_near({request.home, *request.neighbours})
        if request.home in site.serves
        or site.departement == request.home
        or site.departement in request.neighbours
    ]


def _record(
    assessed: list[Candidate],
    request: Request,
    policy: Policy,
    now: datetime,
    tried: Collection[str],
    omitted: int = 0,
    chosen: str | None = None,
) -> DecisionRecord:
    """Feasible sites by cost, then the excluded ones by cost; at most ``record_candidates``,
    the ``chosen`` site always among them (after cheaper sites without room, it could otherwise
    fall out of its own decision's record)."""
    ordered = sorted(assessed, key=lambda c: (not c.feasible, c.score["total"], c.site_id))
    size = max(policy.record_candidates, 1)
    kept = ordered[:size]
    if chosen is not None and all(c.site_id != chosen for c in kept):
        kept = [*kept[: size - 1], next(c for c in ordered if c.site_id == chosen)]
    return DecisionRecord(
        policy_version=policy.version,
        decided_at=now,
        residence_departement=request.home,
        needed_services=request.needed,
        candidates=tuple(kept),
        tried=tuple(sorted(tried)),
        omitted=omitted + len(ordered) - len(kept),
    )


def tier_of(site: Site, home: str, neighbours: frozenset[str]) -> int:
    in_territory = home in site.serves
    if site.departement == home and in_territory:
        return 0
    if site.departement in neighbours and in_territory:
        return 1
    if in_territory:
        return 2
    return 3


def distance_km(origin: tuple[float, float] | None, site: Site) -> float:
    """Great-circle distance, to 0.1 km."""
    if origin is None:
        return 0.0
    lat2 = math.radians(site.lat)
    return _km(_trig(origin), (lat2, math.radians(site.lon), math.cos(lat2)))


def _trig(point: tuple[float, float]) -> tuple[float, float, float]:
    lat = math.radians(point[0])
    return lat, math.radians(point[1]), math.cos(lat)


def _km(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    h = math.sin((b[0] - a[0]) / 2) ** 2 + a[2] * b[2] * math.sin((b[1] - a[1]) / 2) ** 2
    return round(2 * 6371.0 * math.asin(math.sqrt(h)), 1)


def _site_km(request: Request, site: Site, directory: Directory) -> float:
    if request.origin_trig is None:
        return 0.0
    return _km(request.origin_trig, directory.trig(site))


def hard_exclusions(
    site: Site,
    request: Request,
    directory: Directory,
    policy: Policy,
    tried: Collection[str],
    distance: float,
    tier: int,
) -> list[str]:
    """Every hard constraint the site fails for this request (empty: feasible)."""
    excluded: list[str] = []
    nearby = site.departement == request.home or site.departement in request.neighbours
    if tier == 3 and not (policy.allow_neighbour_fallback and nearby):
        excluded.append("territory_not_served")
    if distance > policy.max_distance_km:
        excluded.append("too_far")
    for service in request.needed:
        if service not in site.services:
            excluded.append(f"service_missing:{service}")
            continue
        held = directory.capacity.get((site.site_id, service))
        if held is not None and not (held.eligibility == "all" or request.judicial):
            excluded.append(f"not_eligible:{service}")
    if (
        site.commune_insee in request.excluded_communes
        or site.departement in request.excluded_departements
    ):
        excluded.append("exclusion_zone")
    if site.site_id in tried:
        excluded.append("already_tried")
    return excluded


def _screen_pool(
    pool: list[Site],
    request: Request,
    directory: Directory,
    policy: Policy,
    now: datetime,
    tried: Collection[str],
    counts: dict[str, SiteCounts],
) -> list[tuple[float, bool, bool, Site]]:
    """Screen the pool, nearest first by a lower bound of the cost (everything but load and
    stale counts), and stop once no further site can come before the chosen one nor enter the
    record: on a large directory a decision screens the few dozen sites that matter, not the
    hundreds that serve the territory. A small pool is screened whole. ``counts`` gets the
    counts of each site screened."""

    def screen_once(site: Site) -> tuple[float, bool, bool]:
        read = counts[site.site_id] = site_counts(site, request.needed, directory, policy, now)
        return screen(site, request, directory, policy, now, tried, read)

    keep = max(policy.record_candidates, 1)
    if len(pool) <= 2 * keep:
        return [(*screen_once(site), site) for site in pool]
    bounds = sorted(
        (_lower_bound(site, request, directory, policy), site.site_id, site) for site in pool
    )
    screened: list[tuple[float, bool, bool, Site]] = []
    chosen_cost = math.inf
    kept_costs: list[float] = []  # max-heap (negated) of the ``keep`` smallest costs so far
    for bound, _, site in bounds:
        if len(kept_costs) >= keep and bound > chosen_cost and bound > -kept_costs[0]:
            break
        cost, feasible, room = screen_once(site)
        screened.append((cost, feasible, room, site))
        if feasible and room:
            chosen_cost = min(chosen_cost, cost)
        if len(kept_costs) < keep:
            heapq.heappush(kept_costs, -cost)
        elif cost < -kept_costs[0]:
            heapq.heapreplace(kept_costs, -cost)
    return screened


def _lower_bound(site: Site, request: Request, directory: Directory, policy: Policy) -> float:
    return (
        _site_km(request, site, directory)
        + (0.0 if site.departement == request.home else policy.away_from_home_km)
        + (0.0 if request.home in site.serves else policy.out_of_territory_km)
        + (0.0 if request.language in site.languages else policy.language_penalty_km)
        - 1e-6
    )


class SiteCounts(NamedTuple):
    """What a site's counts say for a decision's needed services, under its policy. Read once
    per site and decision: the screen, the record and the explanation see the same places and
    the same staleness. (A named tuple: made for every site screened, cheaper than a frozen
    dataclass.)"""

    places: dict[str, int | None]  # open places per needed service as the policy sees them
    room: bool  # a free place for every needed service
    load: float  # share of places held, of the fullest needed service counted
    stale: bool  # some needed count was not confirmed within ``policy.capacity_freshness``
    stale_km: float  # what that adds to the cost: the penalty when the policy ranks them
    judicial_only: bool  # some needed service takes judicial referrals only


def site_counts(
    site: Site,
    needed: tuple[ServiceCode, ...],
    directory: Directory,
    policy: Policy,
    now: datetime,
) -> SiteCounts:
    """The site's counts of the ``needed`` services at ``now``: a count not confirmed within
    the freshness window is stale, and then "rank" still trusts its last places, "drop" counts
    none (unknown)."""
    places: dict[str, int | None] = {}
    room = True
    load = 0.0
    stale = judicial_only = False
    for service in needed:
        held = directory.capacity.get((site.site_id, service))
        if held is None:
            places[service] = None  # offered but never counted: unknown, not available
            room = False
            continue
        free = held.open_places(now, policy.capacity_freshness)
        if free is None:
            stale = True
            if policy.stale_capacity == "rank":
                free = max(held.places_total - held.places_held, 0)
        places[service] = free
        room = room and bool(free)
        load = max(load, held.load_ratio)
        judicial_only = judicial_only or held.eligibility != "all"
    ranked = stale and policy.stale_capacity == "rank"
    stale_km = policy.stale_penalty_km if ranked else 0.0
    return SiteCounts(places, room, load, stale, stale_km, judicial_only)


def screen(
    site: Site,
    request: Request,
    directory: Directory,
    policy: Policy,
    now: datetime,
    tried: Collection[str] = (),
    counts: SiteCounts | None = None,
) -> tuple[float, bool, bool]:
    """(cost, feasible, has room): what ``assess`` finds, without building the record;
    ``counts``: the site's, when the decision has read them already."""
    if counts is None:
        counts = site_counts(site, request.needed, directory, policy, now)
    feasible = (
        site.site_id not in tried
        and site.commune_insee not in request.excluded_communes
        and site.departement not in request.excluded_departements
    )
    served = request.home in site.serves
    if not served and not (
        policy.allow_neighbour_fallback
        and (site.departement == request.home or site.departement in request.neighbours)
    ):
        feasible = False
    distance = _site_km(request, site, directory)
    if distance > policy.max_distance_km:
        feasible = False
    room = counts.room
    if counts.judicial_only and not request.judicial:
        feasible = False
    if not site.services.issuperset(request.needed):
        feasible = room = False
    cost = (
        distance
        + (0.0 if site.departement == request.home else policy.away_from_home_km)
        + (0.0 if served else policy.out_of_territory_km)
        + round(min(counts.load, 1.0) * policy.load_weight_km, 3)
        + (0.0 if request.language in site.languages else policy.language_penalty_km)
        + counts.stale_km
    )
    return round(cost, 3), feasible, room


def assess(
    site: Site,
    request: Request,
    directory: Directory,
    policy: Policy,
    now: datetime,
    tried: Collection[str] = (),
    counts: SiteCounts | None = None,
) -> Candidate:
    """The site as the record shows it; ``counts``: the site's, when the decision has read them
    already."""
    if counts is None:
        counts = site_counts(site, request.needed, directory, policy, now)
    tier = tier_of(site, request.home, request.neighbours)
    distance = _site_km(request, site, directory)
    excluded = hard_exclusions(site, request, directory, policy, tried, distance, tier)
    score = {
        "distance": distance,
        "away": 0.0 if site.departement == request.home else policy.away_from_home_km,
        "territory": 0.0 if request.home in site.serves else policy.out_of_territory_km,
        "load": round(min(counts.load, 1.0) * policy.load_weight_km, 3),
        "language": 0.0 if request.language in site.languages else policy.language_penalty_km,
        "stale": counts.stale_km,
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
        counts.places,
        counts.stale,
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
    best: Candidate, site: Site, directory: Directory, feasible: int, full: int
) -> str:
    centre = directory.centre_of(site)
    crowded = f"; {full} autre(s) site(s) complet(s)" if full else ""
    stale = " (capacité non confirmée récemment)" if best.stale else ""
    return (
        f"{centre.name} : site {site.site_id} {TIER_LABELS[best.tier]}, à "
        f"{best.distance_km:.0f} km, offre les {len(best.capacity)} services demandés avec des "
        f"places libres{stale}; {feasible} site(s) possibles{crowded}."
    )
