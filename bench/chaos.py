"""Fault injection (issue #8, "never lose a referral"): referrals flow while everything breaks.

    ./run chaos [--count 2000] [--seed 1] [--rate 10] [--quick] [--keep-infra] [--keep-data]

Starts its own Kafka and PostgreSQL with ``deploy/local/infra.sh`` on other ports and another state
directory (29092/29093/25432 and ``.local/chaos`` by default: the infrastructure other work uses is
never touched), provisions a private topic set (prefix) and migrates private schemas (suffix), runs
the three services as real processes (their console scripts, as in production) with the demo's
local SMTP sink and webhook receiver as the centres' and prescribers' channels, and publishes
signed referrals at a steady rate, 5 % of them invalid in varied ways. Meanwhile it SIGKILLs each
service every 5-15 s and restarts it, SIGKILLs the broker once (restarted with ``infra.sh up``),
stops PostgreSQL immediately for 15-25 s once, SIGSTOPs routing past its consumer session timeout
once and runs a second routing instance for a minute. The schedule and the inputs follow
``--seed``. Then it waits for quiescence and prints one table: lost and undecided referrals, double
decisions, oversubscribed places, missing notifications, doubled effects, invalid inputs not
answered exactly once, services that exited on their own, consumer lag per group, time to
quiescence. The exit code is 1 when a must-be-0 row is not 0.

``--quick`` (CI, about 2-3 minutes): 200 referrals, one SIGKILL of each service, one PostgreSQL
stop, no broker kill. ``tests/e2e/test_chaos_quick.py`` runs it against the test infrastructure.

Readiness of a (re)started service is its ``GET /health/ready`` answering 200 on a free port.
The counting is pure and lives in ``bench/chaos_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from aiguillage_common.migrations.cli import SERVICES as MIGRATED
from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_schemas import topics
from bench import chaos_report as report
from bench.harness import (
    COMMANDS,
    ENV_PREFIX,
    INPUT_HEADER,
    REPO,
    Infra,
    Peers,
    Prepared,
    Service,
    add_infra_arguments,
    create_world,
    drop_world,
    infra_up,
    launch,
    prepare_inputs,
    private_infra,
    quiet_client_logs,
    sayer,
    service_env,
    wait_ready,
)

# Re-exported: the tests build chaos inputs and find the infrastructure through this module.
from bench.harness import INVALID_KINDS as INVALID_KINDS
from bench.harness import locate_infra as locate_infra

# SQL below names the run's own schemas (``<service>_chaos<token>``) in f-strings: S608 is noqa'd.

# Consumer groups (after the run's prefix) and the topic each reads; groups found on the broker
# with the prefix are added, so a group renamed in a service still shows up.
GROUP_TOPICS = {
    "referral-intake": topics.INTAKE,
    "referral-intake.registry": topics.PRESCRIBERS_REGISTRY,
    "referral-intake.routed": topics.ROUTED,
    "routing": topics.ACCEPTED,
    "routing.centres": topics.CENTRE_RESPONSES,
    "routing.directory": topics.DIRECTORY_UPDATES,
    "notifications": topics.ROUTED,
    "notifications.accepted": topics.ACCEPTED,
    "notifications.rejected": topics.REJECTED,
}
DEAD_LETTER_TOPICS = (
    topics.ROUTING_DEAD_LETTER,
    topics.NOTIFICATIONS_DEAD_LETTER,
    topics.INTAKE_DEAD_LETTER,
)
SESSION_TIMEOUT_S = 10.0  # FastStream's default consumer session timeout


say = sayer("chaos")
# Fallback polls faster than the defaults (NOTIFY wakes both anyway), as the demo runs them.
TUNING = {name: {f"{ENV_PREFIX[name]}OUTBOX_POLL_INTERVAL_S": "0.5"} for name in COMMANDS}
TUNING["notifications"]["AIGUILLAGE_NOTIFICATIONS_DELIVERY_POLL_INTERVAL_S"] = "0.2"


# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Plan:
    """The run's shape. Times are seconds; ranges are (low, high) drawn with the seed."""

    count: int = 2000
    seed: int = 1
    rate: float = 10.0  # inputs per second
    invalid_share: float = 0.05
    periodic_kills: bool = True  # every kill_every; else one kill of each service
    kill_every: tuple[float, float] = (5.0, 15.0)
    pg_stop: tuple[float, float] = (15.0, 25.0)
    broker_kill: bool = True
    sigstop_s: float | None = SESSION_TIMEOUT_S + 10.0
    second_routing_s: float | None = 60.0
    min_fault_window_s: float = 180.0  # faults span max(publishing time, this)
    ready_timeout_s: float = 120.0
    quiet_s: float = 20.0  # nothing changed and nothing pending for this long: quiescent
    stall_s: float = 90.0  # nothing changed for this long although work is pending: give up
    cap_s: float = 600.0  # overall bound on the wait for quiescence

    @property
    def publish_s(self) -> float:
        return self.count / self.rate

    @property
    def fault_window_s(self) -> float:
        return max(self.publish_s, self.min_fault_window_s)


def quick_plan(seed: int = 1, count: int = 200) -> Plan:
    """For CI: a few minutes, one kill of each service, one PostgreSQL stop, no broker kill."""
    return Plan(
        count=count,
        seed=seed,
        rate=4.0,
        periodic_kills=False,
        pg_stop=(12.0, 16.0),
        broker_kill=False,
        sigstop_s=None,
        second_routing_s=None,
        min_fault_window_s=45.0,
        ready_timeout_s=90.0,
        quiet_s=10.0,
        stall_s=60.0,
        cap_s=150.0,
    )


@dataclass(frozen=True)
class Fault:
    at_s: float  # after the first input
    kind: str  # kill, broker_kill, pg_stop, sigstop, second_routing
    target: str = ""
    duration_s: float = 0.0

    def describe(self) -> str:
        what = f"{self.kind} {self.target}".strip()
        lasting = f" for {self.duration_s:.0f} s" if self.duration_s else ""
        return f"t+{self.at_s:5.1f}s {what}{lasting}"


def one_off_faults(plan: Plan) -> list[Fault]:
    """The faults that happen once, at seeded times spread over the fault window so that each
    can be told apart in the logs (the periodic kills overlap with all of them)."""
    rng = random.Random(plan.seed * 7919 + 1)  # noqa: S311 - a schedule, not a secret
    window = plan.fault_window_s
    faults = []
    if not plan.periodic_kills:
        slots = {"referral-intake": 0.1, "routing": 0.5, "notifications": 0.75}
        for name, start in slots.items():
            faults.append(Fault(window * rng.uniform(start, start + 0.1), "kill", name))
    if plan.second_routing_s:
        at = window * rng.uniform(0.05, 0.1)
        faults.append(Fault(at, "second_routing", "routing", plan.second_routing_s))
    if plan.broker_kill:
        faults.append(Fault(window * rng.uniform(0.3, 0.35), "broker_kill", "kafka"))
    pg_at = (0.5, 0.55) if plan.periodic_kills else (0.3, 0.35)
    faults.append(
        Fault(window * rng.uniform(*pg_at), "pg_stop", "postgresql", rng.uniform(*plan.pg_stop))
    )
    if plan.sigstop_s:
        faults.append(Fault(window * rng.uniform(0.75, 0.8), "sigstop", "routing", plan.sigstop_s))
    return sorted(faults, key=lambda f: f.at_s)


def kill_intervals(plan: Plan, service: str) -> Iterable[float]:
    """Seconds between a service being back and its next SIGKILL, forever (seeded)."""
    rng = random.Random(f"{plan.seed}:{service}")  # noqa: S311 - a schedule, not a secret
    while True:
        yield rng.uniform(*plan.kill_every)


# --------------------------------------------------------------------------------- the run


@dataclass
class Result:
    rows: list[report.Row]
    table: str
    observations: report.Observations
    faults: list[str]  # what was injected, when

    @property
    def failed(self) -> list[report.Row]:
        return report.failed(self.rows)


@dataclass
class _Run:
    plan: Plan
    bootstrap: str
    database_url: str
    infra: Infra
    work_dir: Path
    prefix: str
    suffix: str
    services: list[Service] = field(default_factory=list)
    exits: list[report.Exit] = field(default_factory=list)
    overbooked: list[report.Overbooked] = field(default_factory=list)
    t0: float = 0.0
    faults_done: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    restart_s: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    published: dict[int, bool] = field(default_factory=dict)
    resent: int = 0
    last_input_at: float = 0.0

    def schema(self, service: str) -> str:
        return MIGRATED[service][1] + self.suffix

    def topic(self, topic: topics.Topic) -> str:
        return f"{self.prefix}{topic.name}"

    def at(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str) -> None:
        self.faults_done.append(f"t+{self.at():6.1f}s {what}")
        say(what)


async def run_chaos(
    plan: Plan,
    bootstrap: str,
    database_url: str,
    infra: Infra,
    work_dir: Path,
    *,
    keep_data: bool = False,
) -> Result:
    """The core: one chaos run against running infrastructure (``infra`` is what it breaks)."""
    token = uuid.uuid4().hex[:6]
    run = _Run(
        plan,
        bootstrap,
        database_url,
        infra,
        work_dir,
        prefix=f"chaos{token}.",
        suffix=f"_chaos{token}",
    )
    _make_dirs(work_dir / "logs")
    say(f"run {token}: topics {run.prefix}*, schemas *{run.suffix}, logs {work_dir / 'logs'}")
    await create_world(bootstrap, database_url, run.prefix, run.suffix)
    peers = await Peers.start()
    client = httpx.AsyncClient(timeout=2.0)
    try:
        observations = await _drive(run, peers, client)
    finally:
        run.stop.set()
        codes = await asyncio.gather(*(s.terminate() for s in run.services))
        say(f"services stopped with SIGTERM, exit codes {list(codes)}")
        await client.aclose()
        await peers.stop()
        if not keep_data:
            await drop_world(bootstrap, database_url, run.prefix, run.suffix)
    rows = report.rows(observations)
    title = (
        f"Chaos run {token} (seed {plan.seed}, {plan.count} inputs at {plan.rate:g}/s, "
        f"{'quick' if not plan.periodic_kills else 'full'})"
    )
    kills = ", ".join(f"{name} {n}" for name, n in sorted(run.kills.items()))
    restarts = sorted(run.restart_s)
    faults = [
        *run.faults_done,
        f"SIGKILLs: {kills or 'none'}; restart to ready: "
        + (
            f"median {restarts[len(restarts) // 2]:.1f}s, worst {restarts[-1]:.1f}s"
            if restarts
            else "-"
        ),
    ]
    return Result(rows, report.render(rows, title), observations, faults)


def _make_dirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def _drive(run: _Run, peers: Peers, client: httpx.AsyncClient) -> report.Observations:
    plan = run.plan
    extra = peers.env()
    envs = {
        name: service_env(
            name,
            run.bootstrap,
            run.database_url,
            run.prefix,
            run.suffix,
            {**extra[name], **TUNING[name]},
        )
        for name in COMMANDS
    }
    primary = launch(envs, run.work_dir / "logs")
    run.services.extend(primary.values())
    await wait_ready(primary, client, plan.ready_timeout_s)
    say("services ready: " + ", ".join(f"{s.label} pid {s.pid}" for s in primary.values()))
    prepared = prepare_inputs(plan)
    faults = one_off_faults(plan)
    say(
        f"{len(prepared)} inputs over {plan.publish_s:.0f}s, faults over "
        f"{plan.fault_window_s:.0f}s: "
        + "; ".join(f.describe() for f in faults)
        + (f"; each service SIGKILLed every {plan.kill_every}s" if plan.periodic_kills else "")
    )
    run.t0 = time.monotonic()
    background = [
        asyncio.create_task(_supervise(run)),
        asyncio.create_task(_watch_capacity(run)),
    ]
    work = [asyncio.create_task(_publish(run, prepared))]
    work += [asyncio.create_task(_one_off(run, fault, primary, client)) for fault in faults]
    if plan.periodic_kills:
        work += [
            asyncio.create_task(_kill_periodically(run, service, client))
            for service in primary.values()
        ]
    try:
        await asyncio.gather(*work)
        faults_over = time.monotonic()
        say(f"faults over at t+{run.at():.0f}s; waiting for every service to be ready")
        for service in primary.values():
            if await service.wait_ready(client, plan.ready_timeout_s) is None:
                say(f"{service.label} still not ready after {plan.ready_timeout_s:.0f}s")
        quiescence = await _quiesce(run, faults_over)
        say(f"quiescence: {quiescence}")
        observations = await _observe(run, prepared, peers.smtp, peers.hooks, quiescence)
    finally:
        for task in work + background:
            task.cancel()
        await asyncio.gather(*work, *background, return_exceptions=True)
    await _watch_capacity_once(run)  # one last sample, after everything settled
    observations.overbooked = list(run.overbooked)
    observations.exits = list(run.exits)
    return observations


async def _supervise(run: _Run) -> None:
    """Restart (after 1 s) any service that ended although the script did not end it, and
    remember it: the table counts services that exited on their own."""
    while not run.stop.is_set():
        now = time.monotonic()
        for service in list(run.services):
            if service.lock.locked() or service.expected_exit or service.process is None:
                continue
            code = service.process.poll()
            if code is None:
                continue
            if service.restart_at is None:
                run.exits.append(report.Exit(service.label, code, run.at()))
                say(f"{service.label} (pid {service.pid}) EXITED ON ITS OWN with {code}")
                service.restart_at = now + 1.0
            elif now >= service.restart_at:
                service.start()
                say(f"{service.label} restarted by the supervisor (pid {service.pid})")
        await asyncio.sleep(0.2)


async def _sleep_until(run: _Run, at_s: float) -> None:
    delay = at_s - run.at()
    if delay > 0:
        await asyncio.sleep(delay)


async def _kill_and_restart(run: _Run, service: Service, client: httpx.AsyncClient) -> None:
    async with service.lock:
        pid = service.pid
        await service.kill()
        service.start()
    run.kills[service.label] = run.kills.get(service.label, 0) + 1
    run.note(f"SIGKILL {service.label} (pid {pid}), restarted as pid {service.pid}")
    took = await service.wait_ready(client, run.plan.ready_timeout_s)
    if took is None:
        say(f"{service.label} not ready {run.plan.ready_timeout_s:.0f}s after its restart")
    else:
        run.restart_s.append(took)


async def _kill_periodically(run: _Run, service: Service, client: httpx.AsyncClient) -> None:
    for interval in kill_intervals(run.plan, service.name):
        if run.at() + interval >= run.plan.fault_window_s:
            return
        await asyncio.sleep(interval)
        await _kill_and_restart(run, service, client)


async def _one_off(
    run: _Run, fault: Fault, primary: dict[str, Service], client: httpx.AsyncClient
) -> None:
    await _sleep_until(run, fault.at_s)
    if fault.kind == "kill":
        await _kill_and_restart(run, primary[fault.target], client)
    elif fault.kind == "broker_kill":
        run.note("SIGKILL of the Kafka broker")
        await run.infra.broker_kill()
        started = time.monotonic()
        await run.infra.broker_restart()
        run.note(f"Kafka restarted with infra.sh up ({time.monotonic() - started:.0f}s)")
    elif fault.kind == "pg_stop":
        run.note(f"PostgreSQL stopped (immediate) for {fault.duration_s:.0f}s")
        await run.infra.pg_stop()
        await asyncio.sleep(fault.duration_s)
        started = time.monotonic()
        await run.infra.pg_start()
        run.note(f"PostgreSQL started again ({time.monotonic() - started:.0f}s)")
    elif fault.kind == "sigstop":
        routing = primary["routing"]
        async with routing.lock:
            if routing.pid is not None and routing.running():
                run.note(f"SIGSTOP routing (pid {routing.pid}) for {fault.duration_s:.0f}s")
                os.kill(routing.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(fault.duration_s)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(routing.pid, signal.SIGCONT)
                run.note(f"SIGCONT routing (pid {routing.pid})")
    elif fault.kind == "second_routing":
        second = Service("routing", "routing#2", primary["routing"].env, primary["routing"].log_dir)
        second.start()
        run.services.append(second)
        run.note(f"second routing instance started (pid {second.pid}) for {fault.duration_s:.0f}s")
        await asyncio.sleep(fault.duration_s)
        code = await second.terminate()
        run.note(f"second routing instance stopped with SIGTERM (exit {code})")


# ------------------------------------------------------------------------------- publishing


async def _producer(bootstrap: str, deadline: float) -> Any:
    while True:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=15_000,
            client_id="aiguillage-chaos",
        )
        try:
            await producer.start()
        except KafkaError:
            with contextlib.suppress(Exception):
                await producer.stop()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
            continue
        return producer


async def _publish(run: _Run, prepared: list[Prepared]) -> None:
    """At a steady rate; a send that fails (broker down) is retried until acknowledged, with
    fresh signing headers: it may then sit twice on the topic, which the report tells apart."""
    topic = run.topic(topics.INTAKE)
    deadline = run.t0 + run.plan.fault_window_s + run.plan.cap_s
    producer = await _producer(run.bootstrap, deadline)
    try:
        for n, item in enumerate(prepared):
            await _sleep_until(run, n / run.plan.rate)
            attempts = 0
            while True:
                attempts += 1
                try:
                    await producer.send_and_wait(
                        topic, item.value, key=item.key, headers=item.headers()
                    )
                except KafkaError as error:
                    if time.monotonic() > deadline:
                        say(f"giving up on input {item.item.index}: {error!r}")
                        run.published[item.item.index] = False
                        break
                    if attempts == 1:
                        say(f"publishing held up ({type(error).__name__}); retrying")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), 10)
                    await asyncio.sleep(1.0)
                    producer = await _producer(run.bootstrap, deadline)
                    continue
                run.published[item.item.index] = True
                if attempts > 1:
                    run.resent += 1
                break
            if n % 500 == 0 and n:
                say(f"{n} inputs published")
    finally:
        run.last_input_at = run.at()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)
    say(f"all {len(prepared)} inputs published at t+{run.last_input_at:.0f}s")


# -------------------------------------------------------------------------------- watching


async def _connect(run: _Run) -> asyncpg.Connection:
    return await asyncpg.connect(run.database_url, timeout=5, command_timeout=30)


async def _watch_capacity_once(run: _Run) -> None:
    routing = run.schema("routing")
    try:
        connection = await _connect(run)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return
    try:
        found = await connection.fetch(
            f"SELECT s.site_id, s.service, s.places_total, s.places_held,"  # noqa: S608
            f" coalesce(h.n, 0) AS holds FROM {routing}.site_services s"
            f" LEFT JOIN (SELECT site_id, service, count(*) AS n FROM {routing}.holds"
            f"  GROUP BY site_id, service) h USING (site_id, service)"
            f" WHERE s.places_held > s.places_total OR coalesce(h.n, 0) > s.places_total"
        )
        for row in found:
            run.overbooked.append(
                report.Overbooked(
                    row["site_id"],
                    row["service"],
                    row["places_total"],
                    row["places_held"],
                    row["holds"],
                )
            )
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await connection.close(timeout=2)


async def _watch_capacity(run: _Run) -> None:
    """Capacity is sampled all along: a site overbooked for a while then released still counts."""
    while True:
        await _watch_capacity_once(run)
        await asyncio.sleep(2.0)


async def _lags(run: _Run) -> dict[str, int | None]:
    """Committed offsets of every consumer group of the run against the topics' end offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        counts = {run.topic(t): t.partitions for t in topics.ALL_TOPICS}
        groups = {f"{run.prefix}{g}": {run.topic(t)} for g, t in GROUP_TOPICS.items()}
        for listed in await admin.list_consumer_groups():
            if listed[0].startswith(run.prefix):
                groups.setdefault(listed[0], set())
        lags: dict[str, int | None] = {}
        for group, wanted in groups.items():
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except KafkaError:
                lags[group.removeprefix(run.prefix)] = None
                continue
            partitions = set(committed) | {
                TopicPartition(name, p) for name in wanted for p in range(counts[name])
            }
            ends = await consumer.end_offsets(list(partitions)) if partitions else {}
            lag = 0
            for tp in partitions:
                done = committed.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else 0
                lag += max(0, ends[tp] - position)
            lags[group.removeprefix(run.prefix)] = lag
        return lags
    finally:
        await consumer.stop()
        await admin.close()


async def _fingerprint(run: _Run) -> tuple[tuple[Any, ...], dict[str, int]]:
    """What changes while work goes on, and the work visibly pending (unpublished outbox rows,
    deliveries not yet done, consumer lag)."""
    intake, routing, notif = (run.schema(s) for s in MIGRATED)
    connection = await _connect(run)
    try:
        row = await connection.fetchrow(
            f"SELECT (SELECT count(*) FROM {intake}.referrals) AS a,"  # noqa: S608
            f" (SELECT count(*) FROM {intake}.processed_events) AS b,"
            f" (SELECT count(*) FROM {routing}.decisions) AS c,"
            f" (SELECT count(*) FROM {routing}.processed_events) AS d,"
            f" (SELECT count(*) FROM {notif}.notifications) AS e,"
            f" (SELECT count(*) FROM {notif}.delivery_attempts) AS f,"
            f" (SELECT count(*) FROM {notif}.deliveries WHERE state = 'delivered') AS g,"
            f" (SELECT count(*) FROM {intake}.outbox WHERE published_at IS NULL) AS intake,"
            f" (SELECT count(*) FROM {routing}.outbox WHERE published_at IS NULL) AS routing,"
            f" (SELECT count(*) FROM {notif}.outbox WHERE published_at IS NULL) AS notif,"
            f" (SELECT count(*) FROM {notif}.deliveries WHERE state = 'pending') AS pending"
        )
    finally:
        await connection.close(timeout=5)
    assert row is not None
    lags = await _lags(run)
    pending = {
        "unpublished outbox rows (intake)": int(row["intake"]),
        "unpublished outbox rows (routing)": int(row["routing"]),
        "unpublished outbox rows (notifications)": int(row["notif"]),
        "pending deliveries": int(row["pending"]),
        "consumer lag": sum(v for v in lags.values() if v is not None),
        "unreadable groups": sum(1 for v in lags.values() if v is None),
    }
    return (*tuple(row.values()), tuple(sorted(lags.items()))), pending


def _pending_text(pending: dict[str, int]) -> str:
    return ", ".join(f"{what} {n}" for what, n in pending.items() if n) or "nothing"


async def _quiesce(run: _Run, since: float) -> report.Quiescence:
    """Until nothing changes for ``quiet_s`` with nothing pending (or for ``stall_s`` with work
    still pending, or the overall cap). Times count from ``since`` (the end of the faults)."""
    plan = run.plan
    last: tuple[Any, ...] | None = None
    changed = since
    while True:
        now = time.monotonic()
        try:
            current, pending = await asyncio.wait_for(_fingerprint(run), 60)
        except (OSError, asyncpg.PostgresError, KafkaError, TimeoutError) as error:
            say(f"quiescence probe failed: {type(error).__name__}")
            current, pending = ("error", str(error)), {"probe failed": 1}
        if current != last:
            last, changed = current, now
        idle, waited = now - changed, now - since
        if idle >= plan.quiet_s and not any(pending.values()):
            return report.Quiescence(True, changed - since, "idle", waited)
        if idle >= plan.stall_s:
            text = _pending_text(pending)
            return report.Quiescence(False, changed - since, "stalled", waited, text)
        if waited >= plan.cap_s:
            text = _pending_text(pending)
            return report.Quiescence(False, changed - since, "cap", waited, text)
        await asyncio.sleep(1.0)


# ------------------------------------------------------------------------------- collection


async def _read_topic(run: _Run, topic: topics.Topic) -> list[Any]:
    """Every record on the run's copy of ``topic``, read without a consumer group."""
    name = run.topic(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=run.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)):
                return records
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for items in batch.values():
                records.extend(items)
        raise RuntimeError(f"could not read {name} to its end in time")
    finally:
        await consumer.stop()


def said(title: str, text: str) -> str:
    """A digest of what a message says, to tell one message told twice from two messages."""
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]


def _json(value: bytes | None) -> dict[str, Any]:
    try:
        document = json.loads(value or b"{}")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def _observe(
    run: _Run,
    prepared: list[Prepared],
    smtp: SmtpSink,
    hooks: WebhookReceiver,
    quiescence: report.Quiescence,
) -> report.Observations:
    obs = report.Observations(
        inputs=[],
        quiescence=quiescence,
        resent_inputs=run.resent,
    )
    for record in await _read_topic(run, topics.INTAKE):
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        index = headers.get(INPUT_HEADER)
        obs.intake_records.append(
            report.IntakeRecord(
                record.partition, record.offset, int(index) if index and index.isdigit() else None
            )
        )
    on_topic = {r.index for r in obs.intake_records}
    obs.inputs = [
        replace(
            p.item, published=run.published.get(p.item.index, False) or p.item.index in on_topic
        )
        for p in prepared
    ]
    for record in await _read_topic(run, topics.REJECTED):
        body = _json(record.value)
        data = body.get("data", {})
        obs.rejections.append(
            report.Rejection(
                body.get("event_id", ""),
                body.get("subject", ""),
                data.get("original_partition", -1),
                data.get("original_offset", -1),
                data.get("reason", "?"),
                data.get("prescriber_id"),
            )
        )
    for record in await _read_topic(run, topics.ACCEPTED):
        body = _json(record.value)
        if body.get("event_type") == "referral.accepted":
            obs.accepted.append(
                report.Accepted(body["event_id"], body["subject"], body["data"]["prescriber_id"])
            )
    for record in await _read_topic(run, topics.ROUTED):
        body = _json(record.value)
        data = body.get("data", {})
        site = data.get("site") or {}
        obs.routing_events.append(
            report.RoutingEvent(
                body.get("event_id", ""),
                body.get("event_type", ""),
                body.get("subject", ""),
                data.get("prescriber_id", ""),
                data.get("decision_id"),
                data.get("attempt"),
                site.get("centre_id"),
                site.get("site_id"),
            )
        )
    for record in await _read_topic(run, topics.NOTIFICATIONS_OUTBOUND):
        body = _json(record.value)
        data = body.get("data", {})
        obs.outbound.append(
            report.Outbound(
                body.get("event_id", ""),
                data.get("notification_id", ""),
                body.get("subject", ""),
                data.get("recipient_kind", ""),
                data.get("recipient_id", ""),
                data.get("topic", ""),
                data.get("site_id"),
                body.get("correlation_id", ""),
                said(data.get("title", ""), data.get("body", "")),
            )
        )
    for topic in DEAD_LETTER_TOPICS:
        for record in await _read_topic(run, topic):
            body = _json(record.value)
            reason = body.get("data", {}).get("reason") or body.get("event_type", "?")
            obs.dead_letters.append(
                report.DeadLetter(run.topic(topic), str(reason), body.get("subject", ""))
            )
    await _observe_database(run, obs)
    for call in hooks.calls:
        try:
            body = call.json()
        except ValueError:
            body = {}
        obs.webhooks.append(
            report.WebhookReceipt(
                call.idempotency_key,
                call.status,
                body.get("reference", ""),
                call.path,
                body.get("topic", ""),
                body.get("site_id"),
                body.get("correlation_id", ""),
                said(body.get("title", ""), body.get("text", "")),
            )
        )
    for mail in smtp.received:
        message = mail.message
        obs.mails.append(
            report.MailReceipt(
                str(message["Message-ID"]),
                str(message["X-Aiguillage-Reference"]),
                tuple(sorted(mail.rcpt_tos)),
                str(message["Subject"]),
                str(message["X-Correlation-Id"]),
                said(str(message["Subject"]), mail.text()),
            )
        )
    try:
        obs.lags = await _lags(run)
    except KafkaError as error:
        say(f"consumer lag unreadable: {error!r}")
    return obs


async def _observe_database(run: _Run, obs: report.Observations) -> None:
    intake, routing, notif = (run.schema(s) for s in MIGRATED)
    connection = await _connect(run)
    try:
        stored = await connection.fetch(f"SELECT referral_id FROM {intake}.referrals")  # noqa: S608
        obs.intake_stored = {r["referral_id"] for r in stored}
        obs.decisions = [
            report.Decision(
                r["referral_id"],
                str(r["decision_id"]),
                r["outcome"],
                str(r["caused_by_event_id"]),
                r["attempt"],
            )
            for r in await connection.fetch(
                f"SELECT referral_id, decision_id, outcome, caused_by_event_id, attempt"  # noqa: S608
                f" FROM {routing}.decisions"
            )
        ]
        obs.holds = [
            report.Hold(r["referral_id"], r["site_id"], r["service"], r["national"])
            for r in await connection.fetch(
                f"SELECT h.referral_id, h.site_id, h.service, s.national"  # noqa: S608
                f" FROM {routing}.holds h JOIN {routing}.sites s USING (site_id)"
            )
        ]
        obs.notifications = [
            report.NotificationRow(
                str(r["notification_id"]),
                r["referral_id"],
                r["recipient_kind"],
                r["recipient_id"],
                r["topic"],
                r["site_id"],
                str(r["caused_by_event_id"]),
                str(r["correlation_id"]),
                said(r["title"], r["body"]),
            )
            for r in await connection.fetch(
                f"SELECT notification_id, referral_id, recipient_kind, recipient_id, topic,"  # noqa: S608
                f" site_id, caused_by_event_id, correlation_id, title, body"
                f" FROM {notif}.notifications"
                # A digest is not a notice of its own: its e-mail is checked as each entry's.
                f" WHERE notification_id NOT IN (SELECT notification_id FROM {notif}.digests)"
            )
        ]
        obs.deliveries = [
            report.DeliveryRow(
                str(r["delivery_id"]),
                str(r["notification_id"]),
                r["channel"],
                r["state"],
                str(r["fallback_for"]) if r["fallback_for"] else None,
            )
            for r in await connection.fetch(
                f"SELECT delivery_id, notification_id, channel, state, fallback_for"  # noqa: S608
                f" FROM {notif}.deliveries"
                # A rejection's e-mail is its prescriber's digest's: checked as its own.
                f" UNION ALL SELECT d.delivery_id, i.notification_id, d.channel, d.state,"
                f" d.fallback_for FROM {notif}.digest_items i"
                f" JOIN {notif}.digests g ON g.notification_id = i.digest_id"
                f" JOIN {notif}.deliveries d ON d.delivery_id = g.delivery_id"
            )
        ]
    finally:
        await connection.close(timeout=5)


# -------------------------------------------------------------------------------------- CLI


async def _main(args: argparse.Namespace) -> int:
    if args.quick:
        plan = quick_plan(args.seed, args.count or 200)
    else:
        plan = Plan(count=args.count or 2000, seed=args.seed)
    if args.rate:
        plan = replace(plan, rate=args.rate)
    infra = private_infra(args, "chaos-infra.log", say)
    work_dir = infra.state_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    async with infra_up(infra, args.keep_infra):
        result = await run_chaos(
            plan, infra.bootstrap, infra.database_url, infra, work_dir, keep_data=args.keep_data
        )
    print("Faults injected:")
    for line in result.faults:
        print(f"  {line}")
    print()
    print(result.table)
    print(f"\nwall time {time.monotonic() - started:.0f}s, logs {work_dir / 'logs'}")
    return 1 if result.failed else 0


def run() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=0, help="inputs (default 2000; quick 200)")
    parser.add_argument("--seed", type=int, default=1, help="fault schedule and inputs")
    parser.add_argument("--rate", type=float, default=0.0, help="inputs/s (default 10; quick 4)")
    parser.add_argument("--quick", action="store_true", help="the CI variant (2-3 minutes)")
    parser.add_argument("--keep-data", action="store_true", help="keep the run's topics/schemas")
    add_infra_arguments(
        parser, REPO / ".local" / "chaos", {"kafka": 29092, "controller": 29093, "pg": 25432}
    )
    args = parser.parse_args()
    quiet_client_logs()
    if args.count and args.count < (1 if args.quick else 2000):
        parser.error("a full run publishes at least 2000 inputs (use --quick for fewer)")
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    run()
