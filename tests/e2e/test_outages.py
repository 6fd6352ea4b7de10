"""Outages of PostgreSQL and Kafka: the services wait them out; nothing is lost, doubled or refused.

These tests inject real faults: PostgreSQL is stopped immediately (as by a power cut) on the
cluster the suite runs on, and Kafka/PostgreSQL are made unreachable at a service's start by
pointing it at a local TCP relay that does not listen yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from aiguillage_demo.samples import DEMO_CASES, make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.vocabulary import ServiceCode
from tests.conftest import Isolated, wait_started
from tests.support.infra import INFRA
from tests.support.services import free_port
from tests.support.waiting import eventually

OUTAGE_S = 20.0  # the fault's length (what the never-lose issue measured), not a wait for state


def _infra(command: str) -> None:
    # Same environment as the suite's own `infra.sh up`: same ports, same state directory.
    subprocess.run(["bash", str(INFRA), command], check=True, timeout=180, env=os.environ)


def _routable_referrals(isolated: Isolated, count: int, tag: str) -> list:  # type: ignore[type-arg]
    # Cases placed at once, so every referral ends with exactly three notifications (received and
    # routed to the prescriber, offered to the centre): no eviction housing (6 places), no Dijon.
    routable = [
        i
        for i, case in enumerate(DEMO_CASES)
        if case.commune_insee != "21231" and ServiceCode.EVICTION_HOUSING not in case.needs
    ]
    return [
        make_referral(
            routable[i % len(routable)], referral_id=f"ref-{tag}{isolated.suffix}-{i:03d}"
        )
        for i in range(count)
    ]


async def _count_when_up(isolated: Isolated, sql: str) -> int:
    """A count, or -1 while the database is still recovering (the test's own pool sees it too)."""
    try:
        return await isolated.count(sql)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return -1


async def test_postgresql_stopped_20_s_mid_batch_every_referral_is_routed_once_and_notified(
    isolated: Isolated,
) -> None:
    services = await isolated.start_all()
    referrals = _routable_referrals(isolated, 60, "pgdown")
    intake_topic = isolated.topic(topics.INTAKE)
    routing, notif = isolated.schema("routing"), isolated.schema("notifications")

    for referral in referrals[:20]:
        await isolated.kafka.send_event(intake_topic, referral)
    # Mid-batch: some referrals are decided, the rest are still on their way.
    await eventually(
        lambda: isolated.count(f"SELECT count(*) FROM {routing}.decisions"),
        lambda n: n >= 3,
        timeout_s=90,
        what="routing to start on the batch",
    )

    _infra("pg-crash")
    outage_started = time.monotonic()
    try:
        # Prescribers keep publishing during the outage: Kafka holds their referrals.
        for referral in referrals[20:]:
            await isolated.kafka.send_event(intake_topic, referral)
        # The fault is real: nobody can reach the database now.
        try:
            connection = await asyncpg.connect(isolated.endpoints.database_url, timeout=5)
        except (OSError, asyncpg.PostgresError):
            pass
        else:
            await connection.close()
            raise AssertionError("PostgreSQL still answers after pg-crash")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
    finally:
        _infra("pg-start")

    expected = 3 * len(referrals)
    await eventually(
        lambda: _count_when_up(isolated, f"SELECT count(*) FROM {notif}.notifications"),
        lambda n: n >= expected,
        timeout_s=240,
        what="every referral notified after the outage",
    )

    decisions = await isolated.db.fetch(f"SELECT referral_id FROM {routing}.decisions")
    assert sorted(r["referral_id"] for r in decisions) == sorted(r.subject for r in referrals)
    rows = await isolated.db.fetch(f"SELECT referral_id, topic FROM {notif}.notifications")
    assert len(rows) == expected
    assert set(Counter((r["referral_id"], r["topic"]) for r in rows).values()) == {1}

    # Nothing was refused or dead-lettered because of the outage, and no service exited.
    for topic in (
        topics.REJECTED,
        topics.INTAKE_DEAD_LETTER,
        topics.ROUTING_DEAD_LETTER,
        topics.NOTIFICATIONS_DEAD_LETTER,
    ):
        assert await isolated.kafka.read_all(isolated.topic(topic)) == [], topic.name
    for service in services:
        assert service.alive(), service.name
        assert service.starts == 1, service.name
        assert '"message.dead_lettered"' not in service.logs()
    # The outage was seen and reported as a wait, once per state change, not per attempt.
    logs = "".join(service.logs() for service in services)
    assert '"consumer.waiting"' in logs or '"outbox.relay_failed"' in logs


class Relay:
    """A TCP relay on a local port to a real server, switched on when the test says so: until
    then the port refuses connections, exactly as a server that is down."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))


@contextlib.asynccontextmanager
async def relays(*targets: str) -> AsyncIterator[list[Relay]]:
    opened = [Relay(target) for target in targets]
    try:
        yield opened
    finally:
        for relay in opened:
            await relay.close()


async def test_a_service_started_while_kafka_and_postgresql_are_down_waits_then_serves(
    isolated: Isolated,
) -> None:
    kafka_target = isolated.endpoints.kafka_bootstrap_servers.split(",")[0]
    db = urlsplit(isolated.endpoints.database_url)
    async with relays(kafka_target, f"{db.hostname}:{db.port}") as (kafka, postgres):
        database_url = urlunsplit(
            db._replace(netloc=f"{db.username}:{db.password}@127.0.0.1:{postgres.port}")
        )
        intake = isolated.service(
            "referral-intake",
            AIGUILLAGE_INTAKE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka.port}",
            AIGUILLAGE_INTAKE_DATABASE_URL=database_url,
        )
        intake.start()
        # Not ready, and says why: first the database (it is waited for first).
        _, body = await eventually(
            intake.readiness,
            lambda answer: answer[0] == 503,
            timeout_s=60,
            what="intake to report not ready",
        )
        assert "database" in body["missing"], body

        referral = _routable_referrals(isolated, 1, "late")[0]
        await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)

        await postgres.open()
        _, body = await eventually(
            intake.readiness,
            lambda answer: answer[0] == 503 and answer[1].get("missing") == ["kafka"],
            timeout_s=60,
            what="intake to wait for Kafka only",
        )
        assert intake.alive()

        await kafka.open()
        await wait_started(intake)
        accepted = await eventually(
            lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
            lambda records: len(records) == 1,
            timeout_s=60,
            what="the referral published while intake waited to be accepted",
        )
        assert accepted[0].key == referral.subject
        assert intake.starts == 1
        assert intake.alive()
        assert '"service.waiting"' in intake.logs()
