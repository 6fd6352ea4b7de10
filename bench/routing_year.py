"""A year of referrals through routing's own use cases, compared with a naive router and with
the offline optimum of the same year. Not a test: it prints a table per seed, the ratios to the
optimum, the acceptance targets, and its own checks; exits 1 when a target or a check fails.

    ./run bench routing_year     (or: .venv/bin/python bench/routing_year.py --help)

What is simulated (the seed directory, capacities marked assumed in the data):
- 22,000 referrals over 365 days per seed, residence drawn by commune population (Paris, Lyon and
  Marseille by arrondissement), needs, prescribers and frames from a realistic mix (about 9 in 10
  judicial, 5% eviction housing, urgent); 15% exclude the victim's commune (half of those in
  Paris, Lyon or Marseille written as the whole city), 5% ban a neighbouring département.
- An offer is answered after 1 to 4 days (eviction housing: within 24 h); 12% are declined
  (``--decline-rate``; routing then tries another site, at most ``--max-attempts``); an accepted
  person follows a path whose length depends on the needs (a course: 1 month; follow-ups and
  groups: 4 to 6 months), then the centre reports the path completed, which frees the places.

Routers compared on the same arrivals and the same answers:
- ours: the service itself - ``route_referral``, ``answer_offer`` and ``report_path`` on the
  in-memory store (``routing.adapters.memory``), so decisions, reservations, waiting lists, freed
  places and told positions are the service's own;
- naive: nearest site offering the services with room (ignores territory, load, eligibility;
  keeps exclusion zones, which are a safety rule, not a preference);
- optimum: the offline optimum of the same year, a linear programme solved by HiGHS (scipy) over
  time buckets; see ``optimum`` and docs/routing.md. It knows the future: a bound, not a policy.

Checks on ours, from what the benchmark itself knows (its own statement of the rules, not the
service's code): exclusion violations, oversubscriptions, queue jumps against the documented
order, and referrals waiting while a site meeting every rule has room. Then decide()'s latency
on the real directory and on a synthetic one of 10,000 sites.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import dataclasses
import heapq
import itertools
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiguillage_common.geography import Geography, default_data_dir, haversine_km, load_geography
from aiguillage_schemas.events.centres import (
    OfferAnswered,
    OfferAnsweredData,
    PathReport,
    PathReportData,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralAcceptedData
from aiguillage_schemas.events.routing_decisions import (
    HousingOffered,
    HousingUpdated,
    ReferralEscalated,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
)
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.adapters.directory_csv import load_directory
from routing.adapters.memory import MemoryRoutingUow, RoutingStore
from routing.domain.decision import Decision, Policy, Routed, Unroutable, Waitlisted, decide
from routing.domain.directory import Capacity, Centre, Directory, Site
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import route_referral

S = ServiceCode
START = datetime(2026, 1, 1, tzinfo=UTC)
CITIES_WITH_ARRONDISSEMENTS = frozenset({"75056", "69123", "13055"})
# (needs, weight, path days): the mix of what prescribers ask for.
NEEDS: list[tuple[tuple[ServiceCode, ...], float, int]] = [
    ((S.RESPONSIBILITY_COURSE,), 0.34, 30),
    ((S.INITIAL_ASSESSMENT, S.DISCUSSION_GROUP), 0.16, 150),
    ((S.INITIAL_ASSESSMENT, S.PSYCHOLOGICAL_FOLLOWUP), 0.14, 150),
    ((S.PSYCHOLOGICAL_FOLLOWUP, S.ADDICTION_CARE), 0.10, 180),
    ((S.DISCUSSION_GROUP, S.SOCIAL_SUPPORT), 0.08, 120),
    ((S.RESPONSIBILITY_COURSE, S.PSYCHOLOGICAL_FOLLOWUP), 0.07, 120),
    ((S.EVICTION_HOUSING, S.INITIAL_ASSESSMENT), 0.05, 75),
    ((S.HELPLINE_ORIENTATION, S.DISCUSSION_GROUP), 0.04, 90),
    ((S.PSYCHIATRIC_FOLLOWUP,), 0.02, 180),
]
JUDICIAL: list[tuple[PrescriberKind, JudicialFrame, float]] = [
    (PrescriberKind.PARQUET, JudicialFrame.ALTERNATIVE_ORIENTATION, 0.30),
    (PrescriberKind.TRIBUNAL_CORRECTIONNEL, JudicialFrame.RESPONSIBILITY_COURSE_PENALTY, 0.15),
    (PrescriberKind.SPIP, JudicialFrame.SURSIS_PROBATOIRE, 0.25),
    (PrescriberKind.JUGE_INSTRUCTION, JudicialFrame.CONTROLE_JUDICIAIRE, 0.10),
    (PrescriberKind.JAP, JudicialFrame.SENTENCE_ADJUSTMENT, 0.05),
    (PrescriberKind.PARQUET, JudicialFrame.COMPOSITION_PENALE, 0.05),
]


@dataclass(frozen=True)
class Arrival:
    index: int
    at: datetime
    data: ReferralAcceptedData
    path_days: int
    answers: tuple[tuple[bool, float], ...]  # per attempt: accepted?, days to answer


def generate_year(
    geography: Geography, count: int, seed: int, decline_rate: float = 0.12
) -> list[Arrival]:
    rng = random.Random(seed)  # noqa: S311 - simulation
    communes: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with (default_data_dir() / "communes_population.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            insee = row["code_commune_insee"]
            # People live in arrondissements, not in "Paris": the three cities are drawn by
            # arrondissement (the city row would count them twice).
            if (
                insee not in CITIES_WITH_ARRONDISSEMENTS
                and insee in geography.communes
                and row["departement"] in geography.departements
            ):
                communes[row["departement"]].append((insee, int(row["population"] or 0)))
    departements = sorted(d for d in communes if communes[d])
    dep_weights = [sum(p for _, p in communes[d]) for d in departements]
    cumulative = {d: list(itertools.accumulate(p for _, p in communes[d])) for d in departements}
    arrivals: list[Arrival] = []
    for index in range(count):
        at = START + timedelta(days=365 * index / count + rng.uniform(0, 365 / count))
        departement = rng.choices(departements, weights=dep_weights)[0]
        weights = cumulative[departement]
        pick = bisect.bisect(weights, rng.uniform(0, weights[-1]))
        commune = communes[departement][min(pick, len(weights) - 1)][0]
        needs, _, path_days = NEEDS[
            rng.choices(range(len(NEEDS)), weights=[w for _, w, _ in NEEDS])[0]
        ]
        voluntary = S.HELPLINE_ORIENTATION in needs or rng.random() < 0.06
        if voluntary and S.EVICTION_HOUSING not in needs:
            kind, frame = PrescriberKind.VOLUNTARY, JudicialFrame.VOLUNTARY
        else:
            choice = rng.choices(JUDICIAL, weights=[w for *_, w in JUDICIAL])[0]
            kind, frame = choice[0], choice[1]
        excluded_communes: list[str] = []
        excluded_departements: list[str] = []
        if rng.random() < 0.15:  # the victim lives near: often the same commune
            city = geography.communes[commune].parent
            # ... which a prescriber may write as the whole city.
            excluded_communes.append(city if city and rng.random() < 0.5 else commune)
        if rng.random() < 0.05:
            neighbours = sorted(geography.neighbours.get(departement, ()))
            if neighbours:
                excluded_departements.append(rng.choice(neighbours))
        data = ReferralAcceptedData(
            prescriber_id="bench",
            prescriber_kind=kind,
            judicial_frame=frame,
            residence_commune_insee=commune,
            residence_departement=departement,
            needed_services=list(needs),
            excluded_communes=excluded_communes,
            excluded_departements=excluded_departements,
            urgency=Urgency.URGENT if S.EVICTION_HOUSING in needs else Urgency.STANDARD,
            language="fr" if rng.random() < 0.93 else "ar",
            interpreter_needed=False,
        )
        urgent = S.EVICTION_HOUSING in needs
        # Centres answer in 1 to 4 days; within the 24 h deadline for eviction housing.
        answers = tuple(
            (rng.random() >= decline_rate, rng.uniform(0.1, 0.9) if urgent else rng.uniform(1, 4))
            for _ in range(6)
        )
        days = max(7, int(rng.gauss(path_days, path_days / 4)))
        arrivals.append(Arrival(index, at, data, days, answers))
    return arrivals


Router = Callable[[ReferralAcceptedData, Directory, datetime, tuple[str, ...]], Decision]


def naive(geography: Geography) -> Router:
    """Nearest site offering the services with room; if none, wait at the nearest offering."""
    policy = Policy(allow_neighbour_fallback=True, max_distance_km=10_000)

    def route(
        data: ReferralAcceptedData, directory: Directory, now: datetime, tried: tuple[str, ...]
    ) -> Decision:
        origin = geography.coordinates(data.residence_commune_insee) or (46.5, 2.5)
        needed = sorted(set(data.needed_services))
        best: tuple[float, Site] | None = None
        best_any: tuple[float, Site] | None = None
        for site in directory.sites:
            if site.site_id in tried or not set(needed) <= site.services:
                continue
            if (
                site.commune_insee in data.excluded_communes
                or site.departement in data.excluded_departements
            ):
                continue
            distance = haversine_km(origin, (site.lat, site.lon))
            room = all(
                directory.capacity[(site.site_id, s)].places_held
                < directory.capacity[(site.site_id, s)].places_total
                for s in needed
            )
            if best_any is None or distance < best_any[0]:
                best_any = (distance, site)
            if room and (best is None or distance < best[0]):
                best = (distance, site)
        record = decide(data, Directory({}, ()), geography, policy, now=now).record
        if best is not None:
            return Routed(best[1], round(best[0], 1), "naive", record)
        if best_any is not None:
            site = best_any[1]
            full = next(
                s
                for s in needed
                if directory.capacity[(site.site_id, s)].places_held
                >= directory.capacity[(site.site_id, s)].places_total
            )
            return Waitlisted(site, full, round(best_any[0], 1), "naive", record)
        return Unroutable("no_site_offers_services", "naive", record)

    return route


@dataclass
class Outcome:
    placed: dict[int, tuple[Site, float]] = field(default_factory=dict)
    joined_wait: dict[int, datetime] = field(default_factory=dict)
    waited_days: dict[int, float] = field(default_factory=dict)
    unroutable: int = 0
    escalated: int = 0
    peak_waiting: int = 0
    waiting_at_end: int = 0
    decisions: int = 0


def simulate(
    arrivals: list[Arrival],
    directory: Directory,
    router: Router,
    geography: Geography,
    max_attempts: int,
    drain_limit: int = 50,
) -> Outcome:
    capacity: dict[tuple[str, ServiceCode], Capacity] = dict(directory.capacity)
    live = dataclasses.replace(directory, capacity=capacity)
    sites = {s.site_id: s for s in directory.sites}
    reach: dict[str, set[str]] = {}
    for site in directory.sites:
        near = {*site.serves, site.departement}
        for departement in list(near):
            near |= geography.neighbours.get(departement, frozenset())
        reach[site.site_id] = near
    outcome = Outcome()
    by_index = {a.index: a for a in arrivals}
    tried: dict[int, tuple[str, ...]] = defaultdict(tuple)
    holding: dict[int, str] = {}
    waiting: dict[int, tuple[int, datetime, int, ServiceCode]] = {}  # index -> rank, at, seq, svc
    seq = itertools.count()
    events: list[tuple[datetime, int, str, int]] = [
        (a.at, next(seq), "arrive", a.index) for a in arrivals
    ]
    heapq.heapify(events)

    def change(site_id: str, services: list[ServiceCode], delta: int) -> None:
        for service in services:
            key = (site_id, service)
            capacity[key] = dataclasses.replace(
                capacity[key], places_held=capacity[key].places_held + delta
            )

    def route(index: int, now: datetime) -> bool:
        """Offer or wait; True when offered."""
        arrival = by_index[index]
        outcome.decisions += 1
        decision = router(arrival.data, live, now, tried[index])
        needed = sorted(set(arrival.data.needed_services))
        if isinstance(decision, Routed):
            site = decision.site
            change(site.site_id, needed, +1)
            holding[index] = site.site_id
            tried[index] = (*tried[index], site.site_id)
            waiting.pop(index, None)
            accepted, delay = arrival.answers[min(len(tried[index]) - 1, 5)]
            heapq.heappush(
                events,
                (
                    now + timedelta(days=delay),
                    next(seq),
                    "accept" if accepted else "decline",
                    index,
                ),
            )
            joined = outcome.joined_wait.pop(index, None)
            if joined is not None:
                outcome.waited_days[index] = (
                    outcome.waited_days.get(index, 0.0) + (now - joined).total_seconds() / 86_400
                )
            return True
        if isinstance(decision, Waitlisted):
            if index not in waiting:
                outcome.joined_wait[index] = now
                rank = 0 if arrival.data.urgency is Urgency.URGENT else 1
                waiting[index] = (rank, arrival.at, next(seq), decision.service)
                outcome.peak_waiting = max(outcome.peak_waiting, len(waiting))
            return False
        if tried[index]:
            outcome.escalated += 1
        else:
            outcome.unroutable += 1
        return False

    def drain(site_id: str, services: list[ServiceCode], now: datetime) -> None:
        for service in services:
            candidates = sorted(
                (entry[:3], index)
                for index, entry in waiting.items()
                if entry[3] == service
                and by_index[index].data.residence_departement in reach[site_id]
            )
            for _, index in candidates[:drain_limit]:
                held = capacity[(site_id, service)]
                if held.places_held >= held.places_total:
                    break
                route(index, now)

    end = START + timedelta(days=365)
    while events and events[0][0] <= end:  # the year ends; what is still queued stays queued
        now, _, kind, index = heapq.heappop(events)
        arrival = by_index[index]
        needed = sorted(set(arrival.data.needed_services))
        if kind == "arrive":
            route(index, now)
        elif kind == "accept":
            site_id = holding[index]
            outcome.placed[index] = (sites[site_id], _distance(geography, arrival, sites[site_id]))
            heapq.heappush(
                events, (now + timedelta(days=arrival.path_days), next(seq), "discharge", index)
            )
        elif kind in ("decline", "discharge"):
            site_id = holding.pop(index)
            change(site_id, needed, -1)
            if kind == "decline":
                if len(tried[index]) >= max_attempts:
                    outcome.escalated += 1
                else:
                    route(index, now)
            drain(site_id, needed, now)
    outcome.waiting_at_end = len(waiting)
    for index, joined in outcome.joined_wait.items():  # still waiting: count the wait so far
        outcome.waited_days[index] = outcome.waited_days.get(index, 0.0) + max(
            (end - joined).total_seconds() / 86_400, 0.0
        )
    return outcome


def _distance(geography: Geography, arrival: Arrival, site: Site) -> float:
    origin = geography.coordinates(arrival.data.residence_commune_insee)
    return haversine_km(origin, (site.lat, site.lon)) if origin else 0.0


def _weighted_quantile(pairs: list[tuple[float, float]], q: float) -> float:
    ordered = sorted(pairs)
    total = sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= q * total:
            return value
    return ordered[-1][0] if ordered else 0.0


def annual_capacity() -> dict[str, float]:
    """annual_capacity_persons per centre: the load ratio is placements in the year over it."""
    with (default_data_dir() / "cpca_centres.csv").open(encoding="utf-8") as handle:
        return {
            row["centre_id"]: float(row["annual_capacity_persons"] or 0)
            for row in csv.DictReader(handle)
        }


def summarise(outcome: Outcome, arrivals: list[Arrival]) -> dict[str, float]:
    home = [
        site.departement == arrivals[index].data.residence_departement
        for index, (site, _) in outcome.placed.items()
    ]
    distances = sorted(km for _, km in outcome.placed.values())
    waits = list(outcome.waited_days.values())
    per_centre: dict[str, int] = defaultdict(int)
    for site, _ in outcome.placed.values():
        per_centre[site.centre_id] += 1
    annual = annual_capacity()
    loads = [per_centre.get(c, 0) / annual[c] for c in annual if annual[c]]
    return {
        "placed": len(outcome.placed),
        "home_share": sum(home) / len(home) if home else 0.0,
        "mean_km": statistics.fmean(distances) if distances else 0.0,
        "p90_km": distances[int(0.9 * (len(distances) - 1))] if distances else 0.0,
        "waited": len(waits),
        "mean_wait_days": statistics.fmean(waits) if waits else 0.0,
        "peak_waiting": outcome.peak_waiting,
        "waiting_at_end": outcome.waiting_at_end,
        "unroutable": outcome.unroutable,
        "escalated": outcome.escalated,
        "load_std": statistics.pstdev(loads) if loads else 0.0,
    }


def synthetic_directory(geography: Geography, sites_count: int, seed: int) -> Directory:
    """``sites_count`` sites spread over the départements, around their chefs-lieux."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    departements = sorted(geography.departements.values(), key=lambda d: d.code)
    centres = {
        f"SYN-{d.code}": Centre(
            f"SYN-{d.code}", f"Centre {d.name}", d.region_code, frozenset({d.code})
        )
        for d in departements
    }
    sites: list[Site] = []
    capacity: dict[tuple[str, ServiceCode], Capacity] = {}
    services = list(ServiceCode)
    for i in range(sites_count):
        d = departements[i % len(departements)]
        offered = frozenset(rng.sample(services, rng.randint(4, len(services))))
        site = Site(
            site_id=f"SYN-{d.code}-{i:05d}",
            centre_id=f"SYN-{d.code}",
            commune_insee=d.chef_lieu_insee,
            departement=d.code,
            lat=d.lat + rng.uniform(-0.4, 0.4),
            lon=d.lon + rng.uniform(-0.4, 0.4),
            services=offered,
            serves=frozenset(
                {d.code, rng.choice(sorted(geography.neighbours.get(d.code) or {d.code}))}
            ),
        )
        sites.append(site)
        for service in offered:
            capacity[(site.site_id, service)] = Capacity(
                places_total=rng.randint(0, 30), places_held=rng.randint(0, 10), updated_at=START
            )
    return Directory(centres=centres, sites=tuple(sites), capacity=capacity)


async def database_rate(
    database_url: str, arrivals: list[Arrival], seconds: float, concurrency: int
) -> tuple[float, float]:
    """route_referral() end to end on PostgreSQL (inbox claim, snapshot, decision, conditional
    reservation, record, outbox row, commit) in a throwaway schema, ``concurrency`` at a time
    like as many partitions; Kafka is left out. Also returns, for scale, the rate of a bare
    two-insert transaction on one connection measured in the same run (the engineering notes'
    baseline)."""
    import asyncio
    import uuid

    import asyncpg

    from aiguillage_common.migrations.runner import migrate
    from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
    from routing.adapters.postgres import PostgresRoutingUnitOfWork, seed_directory
    from routing.use_cases.ports import RoutingContext
    from routing.use_cases.route_referral import route_referral

    geography = load_geography()
    schema = f"bench_routing_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection, schema, "routing")
        await connection.execute(f"SET search_path TO {schema}")
        await seed_directory(connection, load_directory(geography))
        pool = await asyncpg.create_pool(
            database_url,
            min_size=concurrency,
            max_size=concurrency,
            server_settings={"search_path": schema},
        )
        assert pool is not None
        ctx = RoutingContext(
            uow_factory=lambda: PostgresRoutingUnitOfWork(pool),
            geography=geography,
            policy=Policy(),
            decisions_topic="bench.routed",
        )
        feed = iter(itertools.cycle(arrivals))
        done = 0
        began = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() - began < seconds:
                arrival = next(feed)
                event = ReferralAccepted(
                    source="bench",
                    correlation_id=uuid.uuid4(),
                    subject=f"bench-{uuid.uuid4().hex[:16]}",
                    data=arrival.data,
                )
                await route_referral(event, ctx)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        await pool.close()
        return done / elapsed, await _baseline(connection, seconds)
    finally:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()


async def _baseline(connection: Any, seconds: float) -> float:
    await connection.execute("CREATE TABLE bench_baseline (id bigserial, x int)")
    done = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        async with connection.transaction():
            await connection.execute("INSERT INTO bench_baseline (x) VALUES (1)")
            await connection.execute("INSERT INTO bench_baseline (x) VALUES (2)")
        done += 1
    return done / (time.perf_counter() - began)


# -- the rules, written out again for the checks -------------------------------------------------


class Rules:
    """The hard constraints and the documented waiting order, written independently of the
    service's code, so the benchmark's checks do not grade the code with itself."""

    def __init__(self, directory: Directory, geography: Geography, policy: Policy) -> None:
        self.directory = directory
        self.geography = geography
        self.policy = policy
        parents: dict[str, str] = {}
        with (default_data_dir() / "arrondissements_municipaux.csv").open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                parents[row["code_commune_insee"]] = row["commune_parente"]
        self.parents = parents
        self._origin: dict[str, tuple[float, float] | None] = {}

    def zone(self, communes: list[str]) -> set[str]:
        zone = set(communes)
        for code in communes:
            if code in self.parents:
                zone.add(self.parents[code])
            zone |= {a for a, city in self.parents.items() if city == code}
        return zone

    def km(self, data: ReferralAcceptedData, site: Site) -> float:
        insee = data.residence_commune_insee
        if insee not in self._origin:
            self._origin[insee] = self.geography.coordinates(insee)
        origin = self._origin[insee]
        return haversine_km(origin, (site.lat, site.lon)) if origin else 0.0

    def feasible(self, data: ReferralAcceptedData, site: Site, tried: Collection[str]) -> bool:
        home = data.residence_departement
        near = site.departement == home or site.departement in self.geography.neighbours.get(
            home, ()
        )
        if not (home in site.serves or (self.policy.allow_neighbour_fallback and near)):
            return False
        if site.site_id in tried or not set(data.needed_services) <= site.services:
            return False
        for service in data.needed_services:
            if (
                self.directory.capacity[(site.site_id, service)].eligibility == "judicial_only"
                and not data.prescriber_kind.is_judicial
            ):
                return False
        if site.departement in data.excluded_departements:
            return False
        if site.commune_insee in self.zone(data.excluded_communes):
            return False
        return self.km(data, site) <= self.policy.max_distance_km + 0.05

    @staticmethod
    def room(capacity: Mapping[tuple[str, ServiceCode], Capacity], site: Site, needs: Any) -> bool:
        return all(
            capacity[(site.site_id, s)].places_held < capacity[(site.site_id, s)].places_total
            for s in needs
        )

    @staticmethod
    def order(arrival: Arrival, site: Site) -> tuple[object, ...]:
        """docs/routing.md: urgent first, then the site's own département, then arrival."""
        urgent = arrival.data.urgency is Urgency.URGENT or S.EVICTION_HOUSING in (
            arrival.data.needed_services
        )
        away = site.departement != arrival.data.residence_departement
        return (not urgent, away, arrival.at, arrival.index)


@dataclass
class Checks:
    exclusion_violations: int = 0
    oversubscriptions: int = 0
    queue_jumps: int = 0
    waiting_beside_room: int = 0
    skipped_nearer: int = 0  # offers while a feasible site >= 20 km nearer had room
    skipped_extra_km: float = 0.0


@dataclass
class Year:
    """What happened to each referral in the simulated year."""

    placed: dict[int, tuple[Site, float]] = field(default_factory=dict)
    first_offer: dict[int, datetime] = field(default_factory=dict)
    waited_days: dict[int, float] = field(default_factory=dict)
    joined: dict[int, datetime] = field(default_factory=dict)
    unroutable: int = 0
    escalated: int = 0
    peak_waiting: int = 0
    waiting_at_end: int = 0
    urgent_room_at_arrival: dict[int, bool] = field(default_factory=dict)
    urgent_escalated: int = 0
    positions_told: int = 0
    split: set[int] = field(default_factory=set)  # placed with the housing at the platform
    housing_offers: int = 0  # housing legs offered to the national platform
    checks: Checks = field(default_factory=Checks)


def _rid(index: int) -> str:
    return f"y{index:05d}"


async def run_year(
    arrivals: list[Arrival],
    directory: Directory,
    geography: Geography,
    policy: Policy,
    max_attempts: int,
) -> Year:
    """The year through routing's own use cases (route_referral, answer_offer, report_path) on
    the in-memory store, with the benchmark's checks after every step."""
    store = RoutingStore(directory, transactional=False, keep_decisions=False)
    clock = _Clock(START)
    ctx = RoutingContext(
        uow_factory=lambda: MemoryRoutingUow(store),
        geography=geography,
        policy=policy,
        decisions_topic="bench.routed",
        max_attempts=max_attempts,
        clock=clock,
    )
    rules = Rules(store.directory, geography, policy)
    sites = store.directory.by_id
    capacity = store.capacity
    year = Year()
    checks = year.checks
    by_index = {a.index: a for a in arrivals}
    tried: dict[int, list[str]] = defaultdict(list)
    holds: dict[int, tuple[str, tuple[ServiceCode, ...]]] = {}
    held: dict[tuple[str, ServiceCode], int] = defaultdict(int)
    waiting: set[int] = set()
    seq = itertools.count()
    events: list[tuple[datetime, int, str, int]] = [
        (a.at, next(seq), "arrive", a.index) for a in arrivals
    ]
    heapq.heapify(events)
    read = 0
    end = START + timedelta(days=365)

    def candidates(arrival: Arrival, index: int) -> list[Site]:
        return [s for s in directory.sites if rules.feasible(arrival.data, s, tried[index])]

    housing: dict[int, str] = {}  # referral -> the national provider holding its housing leg
    care_data: dict[int, ReferralAcceptedData] = {}

    def split_room(index: int, at: Site | None = None) -> bool:
        """The benchmark's own statement of the split: the referral needs eviction housing and
        something else, is judicial, a national provider has a housing place, and a site meeting
        every rule for the other needs (``at``, or any) has room for them."""
        data = by_index[index].data
        if S.EVICTION_HOUSING not in data.needed_services or not data.prescriber_kind.is_judicial:
            return False
        if not any(
            capacity[(p.site_id, S.EVICTION_HOUSING)].places_held
            < capacity[(p.site_id, S.EVICTION_HOUSING)].places_total
            for p in national
        ):
            return False
        care = care_data.get(index)
        if care is None:
            needs = [n for n in data.needed_services if n is not S.EVICTION_HOUSING]
            care = care_data[index] = data.model_copy(update={"needed_services": needs})
        if not care.needed_services:
            return False
        sites_ = [at] if at is not None else directory.local_sites
        return any(
            rules.feasible(care, s, tried[index]) and rules.room(capacity, s, care.needed_services)
            for s in sites_
        )

    national = [s for s in directory.sites if s.national]

    while events and events[0][0] <= end:  # the year ends; what is still queued stays queued
        now, _, kind, index = heapq.heappop(events)
        clock.now = now
        arrival = by_index[index]
        before = set(waiting)
        freed_site: str | None = None
        housing_freed = False
        if kind == "arrive":
            if arrival.data.urgency is Urgency.URGENT:
                year.urgent_room_at_arrival[index] = any(
                    rules.room(capacity, s, arrival.data.needed_services)
                    for s in candidates(arrival, index)
                ) or split_room(index)
            await route_referral(
                ReferralAccepted(
                    source="bench",
                    correlation_id=uuid.UUID(int=index),
                    subject=_rid(index),
                    occurred_at=arrival.at,
                    data=arrival.data,
                ),
                ctx,
            )
        elif kind in ("accept", "decline"):
            site_id, needs = holds[index]
            if kind == "decline":
                holds.pop(index)
                for service in needs:
                    held[(site_id, service)] -= 1
                freed_site = site_id
            await answer_offer(_bench_answer(index, site_id, kind), ctx)
            if kind == "accept":
                year.placed[index] = (sites[site_id], rules.km(arrival.data, sites[site_id]))
                if index in housing:
                    year.split.add(index)
                heapq.heappush(
                    events, (now + timedelta(days=arrival.path_days), next(seq), "end", index)
                )
        elif kind == "housing_accept":
            state = store.referrals.get(_rid(index))
            if index in housing and state is not None and state.housing_status == "offered":
                await answer_offer(_bench_answer(index, housing[index], "accept"), ctx)
        elif kind == "end":
            site_id, needs = holds.pop(index)
            for service in needs:
                held[(site_id, service)] -= 1
            freed_site = site_id
            await report_path(_bench_completed(index, site_id, now), ctx)
        offered_now: list[tuple[int, Site]] = []
        for _, event in store.outbox[read:]:
            subject = int(event.subject[1:])
            if isinstance(event, HousingOffered):
                # The housing leg at the national platform: its own place in the ledger; the
                # platform answers within the day and accepts (its declines are not simulated).
                platform = event.data.site.site_id
                housing[subject] = platform
                year.housing_offers += 1
                held[(platform, S.EVICTION_HOUSING)] += 1
                if (
                    held[(platform, S.EVICTION_HOUSING)]
                    > capacity[(platform, S.EVICTION_HOUSING)].places_total
                ):
                    checks.oversubscriptions += 1
                heapq.heappush(
                    events, (now + timedelta(days=0.5), next(seq), "housing_accept", subject)
                )
                continue
            if isinstance(event, HousingUpdated):
                if event.data.outcome != "accepted" and subject in housing:
                    held[(housing.pop(subject), S.EVICTION_HOUSING)] -= 1
                    housing_freed = True
                continue
            if isinstance(event, ReferralRouted):
                site = sites[event.data.site.site_id]
                # The services offered at that site: all the needs, or the care of a split.
                needs = tuple(sorted(set(event.data.services)))
                holds[subject] = (site.site_id, needs)
                for service in needs:
                    held[(site.site_id, service)] += 1
                    if (
                        held[(site.site_id, service)]
                        > capacity[(site.site_id, service)].places_total
                    ):
                        checks.oversubscriptions += 1
                tried[subject].append(site.site_id)
                year.first_offer.setdefault(subject, now)
                if subject in waiting:
                    waiting.discard(subject)
                    year.waited_days[subject] = (
                        year.waited_days.get(subject, 0.0)
                        + (now - year.joined.pop(subject)).total_seconds() / 86_400
                    )
                offered_now.append((subject, site))
                accepted, delay = by_index[subject].answers[min(len(tried[subject]) - 1, 5)]
                heapq.heappush(
                    events,
                    (
                        now + timedelta(days=delay),
                        next(seq),
                        "accept" if accepted else "decline",
                        subject,
                    ),
                )
            elif isinstance(event, ReferralWaitlisted):
                year.positions_told += 1
                if subject not in waiting:
                    waiting.add(subject)
                    year.joined[subject] = now
                    year.peak_waiting = max(year.peak_waiting, len(waiting))
            elif isinstance(event, ReferralEscalated) and event.data.reason == "urgent_no_place":
                year.urgent_escalated += 1  # a human is told; the referral keeps waiting
            elif isinstance(event, ReferralEscalated):
                year.escalated += 1
                waiting.discard(subject)
                year.joined.pop(subject, None)
            elif isinstance(event, ReferralUnroutable):
                year.unroutable += 1
        read = len(store.outbox)
        # -- checks, on what the benchmark itself knows --------------------------------------
        for subject, site in offered_now:
            data = by_index[subject].data
            if site.commune_insee in rules.zone(data.excluded_communes) or (
                site.departement in data.excluded_departements
            ):
                checks.exclusion_violations += 1
            km = rules.km(data, site)
            nearer = [
                rules.km(data, s)
                for s in candidates(by_index[subject], subject)
                if s.site_id != site.site_id
                and rules.room(capacity, s, data.needed_services)
                and rules.km(data, s) <= km - 20
            ]
            if nearer:
                checks.skipped_nearer += 1
                checks.skipped_extra_km += km - min(nearer)
            taker = by_index[subject]
            for other in before & waiting:  # still waiting, and waiting before this step
                waiter = by_index[other]
                if (
                    set(waiter.data.needed_services) <= set(taker.data.needed_services)
                    and rules.feasible(waiter.data, site, tried[other])
                    and rules.order(waiter, site) < rules.order(taker, site)
                ):
                    checks.queue_jumps += 1
        if freed_site is not None:
            site = sites[freed_site]
            for other in waiting:
                data = by_index[other].data
                if (
                    rules.feasible(data, site, tried[other])
                    and rules.room(capacity, site, data.needed_services)
                ) or split_room(other, site):
                    checks.waiting_beside_room += 1
        if housing_freed:  # a housing place at the platform: no split left undone
            checks.waiting_beside_room += sum(1 for other in waiting if split_room(other))
        for other in waiting - before:  # joined now: nothing feasible may have room
            data = by_index[other].data
            if any(
                rules.room(capacity, s, data.needed_services)
                for s in candidates(by_index[other], other)
            ) or split_room(other):
                checks.waiting_beside_room += 1
    year.waiting_at_end = len(waiting)
    for index, joined in year.joined.items():  # still waiting: count the wait so far
        year.waited_days[index] = year.waited_days.get(index, 0.0) + max(
            (end - joined).total_seconds() / 86_400, 0.0
        )
    return year


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _bench_answer(index: int, site_id: str, kind: str) -> OfferAnswered:
    centre_id = site_id.rsplit("-", 1)[0]
    return OfferAnswered(
        source=centre_id,
        correlation_id=uuid.UUID(int=index),
        subject=_rid(index),
        data=OfferAnsweredData(
            centre_id=centre_id,
            site_id=site_id,
            answer="accepted" if kind == "accept" else "declined",
            decline_reason=None if kind == "accept" else "no_capacity",
        ),
    )


def _bench_completed(index: int, site_id: str, now: datetime) -> PathReport:
    centre_id = site_id.rsplit("-", 1)[0]
    return PathReport(
        source=centre_id,
        correlation_id=uuid.UUID(int=index),
        subject=_rid(index),
        data=PathReportData(
            centre_id=centre_id, site_id=site_id, report="path_completed", occurred_on=now.date()
        ),
    )


def summarise_year(year: Year, arrivals: list[Arrival]) -> dict[str, float]:
    home = [
        site.departement == arrivals[index].data.residence_departement
        for index, (site, _) in year.placed.items()
    ]
    distances = sorted(km for _, km in year.placed.values())
    waits = list(year.waited_days.values())
    urgent = year.urgent_room_at_arrival
    within = [
        index
        for index in urgent
        if index in year.first_offer
        and year.first_offer[index] - arrivals[index].at <= timedelta(hours=24)
    ]
    promised = [index for index, room in urgent.items() if room]
    per_centre: dict[str, int] = defaultdict(int)
    for site, _ in year.placed.values():
        per_centre[site.centre_id] += 1
    annual = annual_capacity()
    loads = [per_centre.get(c, 0) / annual[c] for c in annual if annual[c]]
    checks = year.checks
    return {
        "placed": len(year.placed),
        "placed_share": len(year.placed) / len(arrivals),
        "home_share": sum(home) / len(home) if home else 0.0,
        "mean_km": statistics.fmean(distances) if distances else 0.0,
        "p90_km": distances[int(0.9 * (len(distances) - 1))] if distances else 0.0,
        "waited": len(waits),
        "mean_wait_days": statistics.fmean(waits) if waits else 0.0,
        "peak_waiting": year.peak_waiting,
        "waiting_at_end": year.waiting_at_end,
        "unroutable": year.unroutable,
        "escalated": year.escalated,
        "load_std": statistics.pstdev(loads) if loads else 0.0,
        "urgent": len(urgent),
        "urgent_24h": len(within) / len(urgent) if urgent else 0.0,
        "urgent_promised": len(promised),
        "urgent_escalated": year.urgent_escalated,
        "urgent_promise_kept": (
            sum(1 for i in promised if i in within) / len(promised) if promised else 1.0
        ),
        "positions_told": year.positions_told,
        "split": len(year.split),
        "housing_offers": year.housing_offers,
        "exclusion_violations": checks.exclusion_violations,
        "oversubscriptions": checks.oversubscriptions,
        "queue_jumps": checks.queue_jumps,
        "waiting_beside_room": checks.waiting_beside_room,
        "skipped_nearer": checks.skipped_nearer,
        "skipped_extra_km": (
            checks.skipped_extra_km / checks.skipped_nearer if checks.skipped_nearer else 0.0
        ),
    }


# -- the offline optimum -------------------------------------------------------------------------


def _site_options(
    rules: Rules,
    person: ReferralAcceptedData,
    wanted: ReferralAcceptedData,
    wanted_needs: tuple[ServiceCode, ...],
    split: bool,
) -> list[tuple[float, str, Site, float, bool]]:
    """The sites meeting every rule for ``wanted_needs`` (the whole referral, or the care of a
    split), each with the policy's cost of the site for ``person``: distance, leaving the home
    département, leaving the territory, language."""
    policy, home = rules.policy, person.residence_departement
    options = []
    for site in rules.directory.candidates(
        home,
        rules.geography.neighbours.get(home, frozenset()),
        wanted_needs,
        policy.allow_neighbour_fallback,
    ):
        if not rules.feasible(wanted, site, ()):
            continue
        km = rules.km(person, site)
        site_cost = (
            km
            + (policy.away_from_home_km if site.departement != home else 0)
            + (policy.out_of_territory_km if home not in site.serves else 0)
            + (policy.language_penalty_km if person.language not in site.languages else 0)
        )
        options.append((site_cost, site.site_id, site, km, split))
    return options


def optimum(
    arrivals: list[Arrival],
    directory: Directory,
    geography: Geography,
    policy: Policy,
    bucket_days: int,
    max_wait_buckets: int,
    wait_km_per_day: float,
    penalty_km: float,
    max_attempts: int,
) -> dict[str, float]:
    """Offline optimum of the same year (LP relaxation, HiGHS via scipy), in time buckets.

    Variable x[r, s, b] >= 0: referral r (grouped with identical ones) starts at site s in bucket
    b, its arrival bucket or up to ``max_wait_buckets`` later, still within the year; one slack per
    group for "not placed". Site s must meet every hard constraint for r (the same rules as the
    service: territory or neighbouring fallback, distance, services, eligibility, exclusion zones).
    Capacity: a person starting in bucket b (taken at its middle) for d days occupies, in each
    bucket t, the fraction of t the path covers; for every site, service and bucket the occupancy
    is at most the places. Cost: the policy's cost of the site (distance, leaving the home
    département, leaving the territory, language) + ``wait_km_per_day`` per day of delay, and
    ``penalty_km`` for a referral not placed within the year."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    buckets = -(-365 // bucket_days)
    rules = Rules(directory, geography, policy)
    # Identical referrals (same commune, needs, eligibility, language, exclusions, arrival
    # bucket, and duration to half a bucket) share their variables.
    groups: dict[tuple[object, ...], list[Arrival]] = defaultdict(list)
    shape: dict[tuple[object, ...], tuple[tuple[ServiceCode, ...], int, float, int]] = {}
    for arrival in arrivals:
        d = arrival.data
        start = int((arrival.at - START).total_seconds() // 86_400) // bucket_days
        needs = tuple(sorted(set(d.needed_services)))
        half_buckets = round(arrival.path_days / bucket_days * 2) / 2
        # The same answers as the simulation: a referral declined by its first k offers is placed
        # at none of its k best sites (a decline is final for that site, and happens where the
        # referral was offered first); declined max_attempts times, it is not placed.
        declines = next(
            (i for i, (accepted, _) in enumerate(arrival.answers) if accepted),
            len(arrival.answers),
        )
        key = (
            d.residence_commune_insee,
            needs,
            d.prescriber_kind.is_judicial,
            d.language,
            tuple(d.excluded_communes),
            tuple(d.excluded_departements),
            start,
            half_buckets,
            declines,
        )
        groups[key].append(arrival)
        shape[key] = (needs, start, half_buckets * bucket_days, declines)
    capacity_row = {key: i for i, key in enumerate(sorted(directory.capacity))}
    rows_cap = len(capacity_row) * buckets
    columns: list[tuple[str | None, float, bool, float]] = []  # site, km, home, split
    # The national housing platform, as the service has it: eviction housing for judicial
    # referrals from anywhere, distance not counted; a split (care at a site meeting every rule
    # for the other needs, housing at the platform) takes a place at both.
    platforms = [
        site for site in directory.sites if site.national and S.EVICTION_HOUSING in site.services
    ]
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    cost: list[float] = []
    demand: list[float] = []
    for g, (group, members) in enumerate(groups.items()):
        data = members[0].data
        needs, start, days, declines = shape[group]
        demand.append(len(members))
        options = _site_options(rules, data, data, needs, split=False)
        care = [n for n in needs if n is not S.EVICTION_HOUSING]
        if platforms and care and len(care) < len(needs) and data.prescriber_kind.is_judicial:
            care_data = data.model_copy(update={"needed_services": care})
            options += _site_options(rules, data, care_data, tuple(care), split=True)
        options.sort(key=lambda option: (option[0], option[1], option[4]))
        # A decline is final for the site offered (whole, or the care of a split).
        declined_sites: list[str] = []
        for option in options:
            if len(declined_sites) >= declines:
                break
            if option[1] not in declined_sites:
                declined_sites.append(option[1])
        usable = (
            [o for o in options if o[1] not in declined_sites] if declines < max_attempts else []
        )
        for site_cost, _, site, km, is_split in usable:
            services = care if is_split else list(needs)
            for b in range(start, min(start + max_wait_buckets + 1, buckets)):
                column = len(columns)
                columns.append(
                    (
                        site.site_id,
                        km,
                        site.departement == data.residence_departement,
                        float(is_split),
                    )
                )
                cost.append(site_cost + wait_km_per_day * (b - start) * bucket_days)
                rows.append(rows_cap + g)
                cols.append(column)
                values.append(1.0)
                begin = b * bucket_days + bucket_days / 2
                for t in range(b, buckets):
                    overlap = min(begin + days, (t + 1) * bucket_days) - max(begin, t * bucket_days)
                    if overlap <= 0:
                        break
                    for service in services:
                        rows.append(capacity_row[(site.site_id, service)] * buckets + t)
                        cols.append(column)
                        values.append(overlap / bucket_days)
                    if is_split:  # the housing at the (first) platform
                        housing_key = (platforms[0].site_id, S.EVICTION_HOUSING)
                        rows.append(capacity_row[housing_key] * buckets + t)
                        cols.append(column)
                        values.append(overlap / bucket_days)
        column = len(columns)
        columns.append((None, 0.0, False, 0))
        cost.append(penalty_km)
        rows.append(rows_cap + g)
        cols.append(column)
        values.append(1.0)
    matrix = coo_matrix((values, (rows, cols)), shape=(rows_cap + len(groups), len(columns)))
    matrix = matrix.tocsr()
    upper = np.repeat(
        np.array([directory.capacity[key].places_total for key in sorted(directory.capacity)]),
        buckets,
    ).astype(float)
    result = linprog(
        np.array(cost),
        A_ub=matrix[:rows_cap],
        b_ub=upper,
        A_eq=matrix[rows_cap:],
        b_eq=np.array(demand),
        bounds=(0, None),
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"optimum not found: {result.message}")
    placed = home = split = 0.0
    distances: list[tuple[float, float]] = []
    load: dict[str, float] = defaultdict(float)
    sites = directory.by_id
    for (site_id, km, is_home, split_weight), flow in zip(columns, result.x, strict=True):
        if flow < 1e-9 or site_id is None:
            continue
        placed += flow
        split += flow * split_weight
        home += flow if is_home else 0.0
        distances.append((km, flow))
        load[sites[site_id].centre_id] += flow
    annual = annual_capacity()
    ratios = [load.get(c, 0.0) / annual[c] for c in annual if annual[c]]
    return {
        "placed": placed,
        "placed_share": placed / len(arrivals),
        "home_share": home / placed if placed else 0.0,
        "mean_km": sum(k * f for k, f in distances) / placed if placed else 0.0,
        "p90_km": _weighted_quantile(distances, 0.9),
        "unplaced": len(arrivals) - placed,
        "load_std": statistics.pstdev(ratios) if ratios else 0.0,
        "lp_columns": len(columns),
        "split": split,
    }


# -- decide() latency -----------------------------------------------------------------------------


def latency_us(
    arrivals: list[Arrival],
    directory: Directory,
    geography: Geography,
    count: int,
    cold: bool = False,
) -> tuple[float, float, float, float, float, float]:
    """p50, p99 and max of one decide() call, in microseconds: wall-clock, and CPU time of the
    thread (what decide() costs, without the waits of a machine shared with other work)."""
    policy = Policy()
    wall: list[float] = []
    cpu: list[float] = []
    decide(arrivals[0].data, directory, geography, policy, now=START)  # build the indexes
    for arrival in itertools.islice(itertools.cycle(arrivals), count):
        snapshot = directory
        if cold:  # as in the service: a fresh snapshot of the territory, indexes not yet built
            home = arrival.data.residence_departement
            snapshot = Directory(
                directory.centres,
                tuple(directory.sites_near({home, *geography.neighbours.get(home, ())})),
                directory.capacity,
            )
        began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
        decide(arrival.data, snapshot, geography, policy, now=START)
        cpu.append((time.thread_time_ns() - began_cpu) / 1000)
        wall.append((time.perf_counter_ns() - began) / 1000)

    def quantiles(values: list[float]) -> tuple[float, float, float]:
        values.sort()
        return (
            values[len(values) // 2],
            values[min(int(len(values) * 0.99), len(values) - 1)],
            values[-1],
        )

    return (*quantiles(wall), *quantiles(cpu))


# -- the table ------------------------------------------------------------------------------------

ROWS = [
    ("placed within the year (accepted)", "placed", "{:,.0f}"),
    ("placed, share of referrals", "placed_share", "{:.1%}"),
    ("placed in home département", "home_share", "{:.1%}"),
    ("mean distance (km)", "mean_km", "{:.1f}"),
    ("p90 distance (km)", "p90_km", "{:.1f}"),
    ("referrals put on a waiting list", "waited", "{:,.0f}"),
    ("mean time on the list (days)", "mean_wait_days", "{:.1f}"),
    ("peak waiting-list size", "peak_waiting", "{:,.0f}"),
    ("still waiting at year end", "waiting_at_end", "{:,.0f}"),
    ("unplaced (optimum)", "unplaced", "{:,.0f}"),
    ("unroutable (no feasible site)", "unroutable", "{:,.0f}"),
    ("escalated after declines", "escalated", "{:,.0f}"),
    ("load spread (std-dev, placed/annual cap.)", "load_std", "{:.3f}"),
    ("urgent referrals", "urgent", "{:,.0f}"),
    ("urgent offered a place within 24 h", "urgent_24h", "{:.1%}"),
    ("urgent with a feasible place at arrival", "urgent_promised", "{:,.0f}"),
    ("  of which offered within 24 h", "urgent_promise_kept", "{:.1%}"),
    ("urgent escalated at once (no place)", "urgent_escalated", "{:,.0f}"),
    ("positions told (waitlisted events)", "positions_told", "{:,.0f}"),
    ("housing legs offered to the platform", "housing_offers", "{:,.0f}"),
    ("placed split: care local, housing platform", "split", "{:,.0f}"),
    ("offers skipping a site >= 20 km nearer", "skipped_nearer", "{:,.0f}"),
    ("  mean extra km of those", "skipped_extra_km", "{:.1f}"),
]
CHECKS = ("exclusion_violations", "oversubscriptions", "queue_jumps", "waiting_beside_room")
TARGETS = (  # (what, ours / optimum must be <= or >=, bound)
    ("mean_km", "<=", 1.15),
    ("home_share", ">=", 0.95),
    ("placed", ">=", 0.97),
)


def print_table(results: dict[str, dict[str, float]]) -> None:
    names = ("ours", "optimum", "naive")
    print(f"{'':<42}{'ours':>11}{'optimum':>11}{'naive':>11}{'ours/opt':>10}")
    for label, key, fmt in ROWS:
        cells = [fmt.format(results[n][key]) if key in results[n] else "-" for n in names]
        ratio = ""
        if key in results["ours"] and key in results["optimum"] and results["optimum"][key]:
            ratio = f"{results['ours'][key] / results['optimum'][key]:.3f}"
        print(f"{label:<42}" + "".join(f"{c:>11}" for c in cells) + f"{ratio:>10}")


def verdict(results: dict[str, dict[str, float]]) -> list[str]:
    """The acceptance targets and checks that fail (empty: all hold)."""
    failed = []
    for key, sense, bound in TARGETS:
        ratio = results["ours"][key] / results["optimum"][key]
        if (sense == "<=" and ratio > bound) or (sense == ">=" and ratio < bound):
            failed.append(f"{key}: ours/optimum = {ratio:.3f}, target {sense} {bound}")
    failed += [f"{c} = {results['ours'][c]:.0f}" for c in CHECKS if results["ours"][c]]
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--referrals", type=int, default=22_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2026, 2027])
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--decline-rate", type=float, default=0.12, help="offers declined")
    parser.add_argument("--path-months", type=float, default=4.0, help="seed capacity setting")
    parser.add_argument("--bucket-days", type=int, default=14, help="optimum: time bucket")
    parser.add_argument("--max-wait-buckets", type=int, default=4, help="optimum: latest start")
    parser.add_argument(
        "--wait-km-per-day",
        type=float,
        default=None,
        help="optimum: cost of a day's delay (default: the longest feasible detour per bucket, "
        "so that, like the service, the optimum never waits while a feasible site has room)",
    )
    parser.add_argument("--penalty-km", type=float, default=1_000.0, help="optimum: unplaced")
    parser.add_argument("--synthetic-sites", type=int, default=10_000)
    parser.add_argument("--latency-decisions", type=int, default=3_000)
    parser.add_argument("--no-optimum", action="store_true", help="skip the LP (quick runs)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="also measure route_referral() through PostgreSQL (throwaway schema, dropped)",
    )
    args = parser.parse_args(argv)

    geography = load_geography()
    directory = load_directory(geography, as_of=START, path_months=args.path_months)
    # Centres confirm their counts through the year (stale capacity is not what this measures).
    policy = Policy(capacity_freshness=timedelta(days=3650))
    wait_km = args.wait_km_per_day
    if wait_km is None:
        longest = (
            policy.max_distance_km
            + policy.away_from_home_km
            + policy.out_of_territory_km
            + policy.language_penalty_km
        )
        wait_km = round(longest / args.bucket_days, 2)
    print(
        f"{args.referrals} referrals over 365 days per seed; directory: "
        f"{len(directory.centres)} centres, {len(directory.sites)} sites, "
        f"{len(directory.capacity)} site services (capacity = annual persons x "
        f"{args.path_months} / 12, assumed)\n"
        f"optimum: LP over {args.bucket_days}-day buckets, start up to {args.max_wait_buckets} "
        f"buckets after arrival at {wait_km} km/day, {args.penalty_km:.0f} km per "
        "referral left unplaced, same answers (declines) as the simulation\n"
    )
    failures: list[str] = []
    arrivals: list[Arrival] = []
    for seed in args.seeds:
        arrivals = generate_year(geography, args.referrals, seed, args.decline_rate)
        results: dict[str, dict[str, float]] = {}
        timings: dict[str, float] = {}
        began = time.perf_counter()
        year = asyncio.run(run_year(arrivals, directory, geography, policy, args.max_attempts))
        timings["ours"] = time.perf_counter() - began
        results["ours"] = summarise_year(year, arrivals)
        began = time.perf_counter()
        outcome = simulate(arrivals, directory, naive(geography), geography, args.max_attempts)
        timings["naive"] = time.perf_counter() - began
        results["naive"] = summarise(outcome, arrivals)
        results["naive"]["placed_share"] = results["naive"]["placed"] / len(arrivals)
        if args.no_optimum:
            results["optimum"] = {}
        else:
            began = time.perf_counter()
            results["optimum"] = optimum(
                arrivals,
                directory,
                geography,
                policy,
                args.bucket_days,
                args.max_wait_buckets,
                wait_km,
                args.penalty_km,
                args.max_attempts,
            )
            timings["optimum"] = time.perf_counter() - began
        print(f"== seed {seed}")
        print_table(results)
        print(
            "checks on ours: "
            + ", ".join(f"{c.replace('_', ' ')} {results['ours'][c]:.0f}" for c in CHECKS)
        )
        print("run time (s): " + ", ".join(f"{n} {t:.0f}" for n, t in timings.items()))
        if not args.no_optimum:
            failed = verdict(results)
            print("targets: " + ("all hold" if not failed else "FAILED: " + "; ".join(failed)))
            failures += [f"seed {seed}: {f}" for f in failed]
        print()
    synthetic = synthetic_directory(geography, args.synthetic_sites, 2026)
    measured = [
        (
            f"{name} directory ({len(sites.sites)} sites){', fresh snapshot' if cold else ''}",
            latency_us(arrivals, sites, geography, args.latency_decisions, cold),
        )
        for name, sites in (("real", directory), ("synthetic", synthetic))
        for cold in (False, True)
    ]
    for label, (p50, p99, worst, cpu50, cpu99, cpu_worst) in measured:
        print(
            f"decide(), {label}: wall p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms, "
            f"max {worst / 1000:.2f} ms; CPU p50 {cpu50 / 1000:.2f} ms, "
            f"p99 {cpu99 / 1000:.2f} ms, max {cpu_worst / 1000:.2f} ms"
        )
    if args.database_url:
        for concurrency in (1, 4):
            rate, baseline = asyncio.run(
                database_rate(args.database_url, arrivals, 5.0, concurrency)
            )
            print(
                f"route_referral() through PostgreSQL, {concurrency} at a time: "
                f"{rate:,.0f} decisions/s (bare two-insert transaction, same run: "
                f"{baseline:,.0f}/s)"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
