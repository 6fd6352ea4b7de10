"""A year of referrals through routing's decision engine, compared with a naive router and with
the offline optimum on the same arrivals. Not a test: it prints a table.

    ./run bench            (or: .venv/bin/python bench/routing_year.py --help)

What is simulated (the seed directory, capacities marked assumed in the data):
- ~22,000 referrals over 365 days (Poisson arrivals), residence drawn by commune population,
  needs, prescribers and frames from a realistic mix (about 9 in 10 judicial, 5% eviction housing
  and urgent); a fifth carry an exclusion zone (the victim's commune or a banned département).
- An offer is answered after 1 to 4 days; 12% are declined (routing then tries the next site, at
  most ``--max-attempts``); an accepted person follows a path whose length depends on the needs
  (a course: 1 month; follow-ups and groups: 4 to 6 months) and is then discharged, freeing places.
- No room anywhere feasible: the referral waits at its best site; freed places go to the waiting
  referrals within the site's reach, urgency first then arrival - the service's own rules.

Routers compared on the same arrivals and the same answers:
- ours: ``routing.domain.decision.decide`` with the default policy;
- naive: nearest site offering the services with room (ignores territory, load, eligibility;
  keeps exclusion zones, which are a safety rule, not a preference);
- optimum: offline min-cost assignment (scipy HiGHS, LP) of the whole year at once to each
  site-service's yearly throughput (places x 12 / mean path months), minimising distance under
  the same hard constraints; unplaced referrals cost a penalty. A lower bound nobody can reach
  online: it knows the future and ignores timing.

Then decisions per second of ``decide`` on the real directory and on a synthetic one of 10,000
sites.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import heapq
import itertools
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiguillage_common.geography import Geography, default_data_dir, haversine_km, load_geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.adapters.directory_csv import load_directory
from routing.domain.decision import Decision, Policy, Routed, Unroutable, Waitlisted, decide
from routing.domain.directory import Capacity, Centre, Directory, Site

S = ServiceCode
START = datetime(2026, 1, 1, tzinfo=UTC)
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


def generate_year(geography: Geography, count: int, seed: int) -> list[Arrival]:
    rng = random.Random(seed)  # noqa: S311 - simulation
    communes: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with (default_data_dir() / "communes_population.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            insee = row["code_commune_insee"]
            if (
                row["type"] == "commune-actuelle"
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
            excluded_communes.append(commune)
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
        answers = tuple((rng.random() > 0.12, rng.uniform(1, 4)) for _ in range(6))
        days = max(7, int(rng.gauss(path_days, path_days / 4)))
        arrivals.append(Arrival(index, at, data, days, answers))
    return arrivals


Router = Callable[[ReferralAcceptedData, Directory, datetime, tuple[str, ...]], Decision]


def ours(policy: Policy, geography: Geography) -> Router:
    def route(
        data: ReferralAcceptedData, directory: Directory, now: datetime, tried: tuple[str, ...]
    ) -> Decision:
        return decide(data, directory, geography, policy, now=now, tried=tried)

    return route


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


def optimum(
    arrivals: list[Arrival],
    directory: Directory,
    geography: Geography,
    policy: Policy,
    path_months: float,
    penalty_km: float = 1_000.0,
) -> dict[str, float]:
    """Offline min-cost assignment of the year (LP relaxation, solved by HiGHS via scipy)."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    throughput = {key: c.places_total * 12 / path_months for key, c in directory.capacity.items()}
    # Group identical referrals: same commune, needs, eligibility and exclusions.
    groups: dict[tuple[object, ...], list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        d = arrival.data
        key = (
            d.residence_commune_insee,
            tuple(sorted(set(d.needed_services))),
            d.prescriber_kind.is_judicial,
            tuple(d.excluded_communes),
            tuple(d.excluded_departements),
        )
        groups[key].append(arrival)
    columns: list[tuple[int, str | None, float, bool]] = []  # group, site, km, home
    rows, cols, values = [], [], []
    capacity_row = {key: i for i, key in enumerate(sorted(throughput))}
    group_rows = len(capacity_row)
    demand = []
    for g, members in enumerate(groups.values()):
        data = members[0].data
        demand.append(len(members))
        candidate = decide(data, directory, geography, policy, now=START)
        for c in candidate.record.candidates:
            if c.excluded:  # a hard constraint fails (capacity is not one of them here)
                continue
            column = len(columns)
            columns.append((g, c.site_id, c.distance_km, c.tier == 0))
            rows.append(group_rows + g)
            cols.append(column)
            values.append(1.0)
            for service in candidate.record.needed_services:
                rows.append(capacity_row[(c.site_id, ServiceCode(service))])
                cols.append(column)
                values.append(1.0)
        column = len(columns)
        columns.append((g, None, penalty_km, False))  # stays unplaced
        rows.append(group_rows + g)
        cols.append(column)
        values.append(1.0)
    n = len(columns)
    matrix = coo_matrix((values, (rows, cols)), shape=(group_rows + len(groups), n)).tocsr()
    cost = np.array([km for _, _, km, _ in columns])
    upper = np.array([throughput[key] for key in sorted(throughput)])
    result = linprog(
        cost,
        A_ub=matrix[:group_rows],
        b_ub=upper,
        A_eq=matrix[group_rows:],
        b_eq=np.array(demand, dtype=float),
        bounds=(0, None),
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"optimum not found: {result.message}")
    flows = result.x
    placed = home = 0.0
    distances: list[tuple[float, float]] = []
    load: dict[str, float] = defaultdict(float)
    sites = {s.site_id: s for s in directory.sites}
    for (_, site_id, km, is_home), flow in zip(columns, flows, strict=True):
        if flow < 1e-9 or site_id is None:
            continue
        placed += flow
        home += flow if is_home else 0.0
        distances.append((km, flow))
        load[sites[site_id].centre_id] += flow
    annual = annual_capacity()
    ratios = [load.get(c, 0.0) / annual[c] for c in annual if annual[c]]
    return {
        "placed": placed,
        "home_share": home / placed if placed else 0.0,
        "mean_km": sum(k * f for k, f in distances) / placed if placed else 0.0,
        "p90_km": _weighted_quantile(distances, 0.9),
        "unplaced": len(arrivals) - placed,
        "load_std": statistics.pstdev(ratios) if ratios else 0.0,
    }


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


def decisions_per_second(
    arrivals: list[Arrival], directory: Directory, geography: Geography, seconds: float
) -> float:
    policy = Policy()
    done = 0
    began = time.perf_counter()
    for arrival in itertools.cycle(arrivals):
        decide(arrival.data, directory, geography, policy, now=START)
        done += 1
        if done % 50 == 0 and time.perf_counter() - began > seconds:
            break
    return done / (time.perf_counter() - began)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--referrals", type=int, default=22_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--path-months", type=float, default=4.0, help="seed capacity setting")
    parser.add_argument("--synthetic-sites", type=int, default=10_000)
    parser.add_argument("--speed-seconds", type=float, default=5.0)
    parser.add_argument(
        "--database-url",
        default=None,
        help="also measure route_referral() through PostgreSQL (throwaway schema, dropped)",
    )
    args = parser.parse_args(argv)

    geography = load_geography()
    directory = load_directory(geography, as_of=START, path_months=args.path_months)
    arrivals = generate_year(geography, args.referrals, args.seed)
    policy = Policy(capacity_freshness=timedelta(days=3650))  # the seed stays trusted all year
    print(
        f"{len(arrivals)} referrals over 365 days; directory: {len(directory.centres)} centres, "
        f"{len(directory.sites)} sites, {len(directory.capacity)} site services "
        f"(capacity = annual persons x {args.path_months} / 12, assumed)\n"
    )
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for name, router in (("ours", ours(policy, geography)), ("naive", naive(geography))):
        began = time.perf_counter()
        outcome = simulate(arrivals, directory, router, geography, args.max_attempts)
        timings[name] = time.perf_counter() - began
        results[name] = summarise(outcome, arrivals)
    began = time.perf_counter()
    results["optimum"] = optimum(arrivals, directory, geography, policy, args.path_months)
    timings["optimum"] = time.perf_counter() - began

    rows = [
        ("placed (accepted by a centre)", "placed", "{:.0f}"),
        ("placed in home département", "home_share", "{:.1%}"),
        ("mean distance (km)", "mean_km", "{:.1f}"),
        ("p90 distance (km)", "p90_km", "{:.1f}"),
        ("referrals put on a waiting list", "waited", "{:.0f}"),
        ("mean time on the list (days)", "mean_wait_days", "{:.1f}"),
        ("peak waiting-list size", "peak_waiting", "{:.0f}"),
        ("still waiting at year end", "waiting_at_end", "{:.0f}"),
        ("unplaced (optimum)", "unplaced", "{:.0f}"),
        ("unroutable (no feasible site)", "unroutable", "{:.0f}"),
        ("escalated after declines", "escalated", "{:.0f}"),
        ("load spread (std-dev, placed/annual cap.)", "load_std", "{:.3f}"),
    ]
    print(f"{'':<38}{'ours':>12}{'optimum':>12}{'naive':>12}")
    for label, key, fmt in rows:
        cells = [
            fmt.format(results[name][key]) if key in results[name] else "-"
            for name in ("ours", "optimum", "naive")
        ]
        print(f"{label:<38}" + "".join(f"{c:>12}" for c in cells))
    print(
        f"{'run time (s)':<38}"
        + "".join(f"{timings[n]:>12.1f}" for n in ("ours", "optimum", "naive"))
    )
    print()
    real = decisions_per_second(arrivals, directory, geography, args.speed_seconds)
    synthetic = synthetic_directory(geography, args.synthetic_sites, args.seed)
    big = decisions_per_second(arrivals, synthetic, geography, args.speed_seconds)
    print(f"decide(): {real:,.0f} decisions/s, real directory ({len(directory.sites)} sites)")
    print(f"decide(): {big:,.0f} decisions/s, synthetic directory ({len(synthetic.sites)} sites)")
    if args.database_url:
        import asyncio

        for concurrency in (1, 4):
            rate, baseline = asyncio.run(
                database_rate(args.database_url, arrivals, args.speed_seconds, concurrency)
            )
            print(
                f"route_referral() through PostgreSQL, {concurrency} at a time: "
                f"{rate:,.0f} decisions/s (bare two-insert transaction, same run: "
                f"{baseline:,.0f}/s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
