"""A crash repeats only the sends in flight, and two workers never send one delivery twice.

The delivery worker runs in the test's process on the real PostgreSQL (a migrated private schema),
against the real webhook receiver and SMTP sink. A killed worker is played by a lease holder that
has no presence lock, as after ``kill -9``: it leased, recorded its attempts as started and sent
them, and never recorded the outcomes. ``tests/integration/test_notification_delivery.py`` kills a
real notifications process mid-send as well.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from notifications.adapters.directory import load_recipients, load_templates, webhook_secret
from notifications.adapters.email import EmailSender
from notifications.adapters.http import HttpClient
from notifications.adapters.postgres import (
    PRESENCE_LOCK_CLASS,
    PostgresNotificationsUnitOfWork,
    presence_key,
)
from notifications.adapters.webhook import WebhookSender
from notifications.adapters.worker import DeliveryWorker
from notifications.domain.delivery import BackoffPolicy
from notifications.domain.messages import Planner
from notifications.settings import NotificationsSettings
from notifications.use_cases.deliver import Deliverer, Sender
from notifications.use_cases.notify import notify
from tests.conftest import WEBHOOK_SECRET, Isolated
from tests.integration.test_notification_delivery import LYON_HOOK, routed
from tests.support.waiting import eventually

LEASE_S = 600.0  # far longer than any test: only reclaiming can make a delivery due again


class World:
    def __init__(
        self, isolated: Isolated, pool: asyncpg.Pool, hooks: WebhookReceiver, smtp: SmtpSink
    ) -> None:
        self.isolated, self.pool, self.hooks, self.smtp = isolated, pool, hooks, smtp
        self.schema = isolated.schema("notifications")
        self.settings = NotificationsSettings(
            webhook_url_template=hooks.base_url + "/hooks/{kind}/{id}",
            webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            db_schema=self.schema,
        )
        self.planner = Planner(
            load_recipients(self.settings), load_templates(), timedelta(hours=24)
        )
        self.client = HttpClient()
        self.workers: list[DeliveryWorker] = []

    def uow(self) -> PostgresNotificationsUnitOfWork:
        return PostgresNotificationsUnitOfWork(self.pool)

    def senders(self) -> dict[str, Sender]:
        s = self.settings
        return {
            "webhook": WebhookSender(
                self.client, lambda kind, rid: webhook_secret(s, kind, rid), 5.0
            ),
            "email": EmailSender("127.0.0.1", self.smtp.port, s.mail_from, "test.invalid", 5.0),
        }

    def deliverer(self, worker_id: uuid.UUID | None = None) -> Deliverer:
        return Deliverer(
            self.uow,
            self.senders(),
            BackoffPolicy(5, 0.2, 1.0),
            "dead-letter",
            LEASE_S,
            20,
            lambda: datetime.now(UTC),
            worker_id=worker_id,
        )

    async def start_worker(self, deliverer: Deliverer) -> DeliveryWorker:
        worker = DeliveryWorker(
            self.pool, deliverer, self.planner, "outbound", self.schema, 0.1, grace_s=10
        )
        await worker.start()
        self.workers.append(worker)
        return worker

    async def offer(self, label: str) -> str:
        referral_id = f"ref-{label}{self.isolated.suffix}-{uuid.uuid4().hex[:6]}"
        await notify(routed(referral_id), self.uow, "outbound", self.planner, datetime.now(UTC))
        return referral_id

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(sql, *args)]

    async def network_deliveries(self, referral_id: str) -> list[dict[str, Any]]:
        return await self.rows(
            "SELECT d.delivery_id, d.channel, d.state, d.attempts, d.next_attempt_at, d.leased_by"
            " FROM deliveries d JOIN notifications n USING (notification_id)"
            " WHERE n.referral_id = $1 AND d.channel <> 'kafka' ORDER BY d.channel, d.target",
            referral_id,
        )

    async def outcomes(self, delivery_id: uuid.UUID) -> list[str]:
        rows = await self.rows(
            "SELECT outcome FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
            delivery_id,
        )
        return [r["outcome"] for r in rows]


@pytest.fixture
async def world(isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink) -> AsyncIterator[World]:
    async with isolated.schema_pool(isolated.schema("notifications"), max_size=8) as pool:
        found = World(isolated, pool, hooks, smtp)
        try:
            yield found
        finally:
            for worker in found.workers:
                await worker.stop()
            await found.client.aclose()


async def crash_mid_send(world: World, referral_id: str, *, send: int) -> uuid.UUID:
    """A worker leases the referral's deliveries, starts and sends ``send`` of them, then dies
    before recording any outcome. Returns its id; it never held a presence lock."""
    dead = world.deliverer()
    senders = world.senders()
    async with world.uow() as uow:
        jobs = [
            j
            for j in await uow.lease_due(20, LEASE_S, dead.worker_id)
            if j.referral_id == referral_id
        ]
    assert len(jobs) == 3  # the centre's webhook and e-mail copy, the prescriber's e-mail
    for job in jobs[:send]:
        async with world.uow() as uow:
            assert await uow.start_attempt(job, dead.worker_id, LEASE_S) is not None
        # The receiver gets it; the answer is lost with the process.
        assert (await senders[job.channel].send(job)).outcome == "delivered"
    return dead.worker_id


async def test_a_worker_starting_after_a_crash_resends_what_was_in_flight_exactly_once(
    world: World,
) -> None:
    referral_id = await world.offer("crash")
    await crash_mid_send(world, referral_id, send=2)
    before = await world.network_deliveries(referral_id)
    assert all(r["state"] == "pending" for r in before)
    assert all(r["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=5) for r in before)

    await world.start_worker(world.deliverer())
    rows = await eventually(
        lambda: world.network_deliveries(referral_id),
        lambda rows: all(r["state"] == "delivered" for r in rows),
        timeout_s=60,
        what="every delivery of the crashed worker delivered, long before its lease expires",
    )
    logs = {r["delivery_id"]: await world.outcomes(r["delivery_id"]) for r in rows}
    assert sorted(logs.values()) == [
        ["delivered"],  # leased, never started: sent once
        ["interrupted", "delivered"],
        ["interrupted", "delivered"],
    ]
    assert all(r["attempts"] == 1 for r in rows)  # an interruption spends no attempt
    # Each receiver saw each message once, plus the one in flight at the crash: once more, with
    # the same idempotency key or Message-ID.
    sent = Counter([c.idempotency_key for c in world.hooks.calls if c.path == LYON_HOOK])
    sent.update(mail.message_id for mail in world.smtp.received)
    interrupted = {str(k) for k, v in logs.items() if v[0] == "interrupted"}
    assert {key for key, n in sent.items() if n == 2} == {
        k if k in sent else f"<{k}@test.invalid>" for k in interrupted
    }
    assert sum(sent.values()) == 5  # 3 deliveries + the 2 in flight at the crash


async def test_a_live_workers_sends_in_flight_are_left_to_it(world: World) -> None:
    live_id = uuid.uuid4()
    presence = await asyncpg.connect(world.isolated.endpoints.database_url)
    try:
        await presence.execute(
            "SELECT pg_advisory_lock($1, $2)", PRESENCE_LOCK_CLASS, presence_key(live_id)
        )
        busy = await world.offer("busy")
        async with world.uow() as uow:
            (job, *_) = await uow.lease_due(20, LEASE_S, live_id)
        async with world.uow() as uow:
            assert await uow.start_attempt(job, live_id, LEASE_S) is not None
        dead = await world.offer("dead")
        await crash_mid_send(world, dead, send=1)

        # A worker starting now takes back the dead worker's three, not the live one's.
        fresh = world.deliverer()
        assert await fresh.reclaim() == 3
        assert await world.outcomes(job.delivery_id) == ["started"]
        rows = await world.network_deliveries(busy)
        assert {r["leased_by"] for r in rows} == {live_id}
        assert all(r["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=5) for r in rows)
    finally:
        # The live worker dies now: its lock goes with its connection.
        await presence.close()
    await eventually(
        lambda: world.deliverer().reclaim(),
        lambda n: n == 3,
        timeout_s=30,
        what="the dead worker's leases reclaimed once its session is gone",
    )
    assert await world.outcomes(job.delivery_id) == ["interrupted"]


async def test_two_workers_deliver_every_delivery_once(world: World) -> None:
    referrals = [await world.offer(f"pair{i}") for i in range(12)]
    first, second = world.deliverer(), world.deliverer()
    await world.start_worker(first)
    await world.start_worker(second)

    async def undelivered() -> int:
        value = await world.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE state <> 'delivered'"
        )
        return int(value)

    await eventually(undelivered, lambda n: n == 0, timeout_s=90, what="all delivered")
    attempts = await world.rows(
        "SELECT delivery_id, count(*) AS n, min(outcome) AS outcome FROM delivery_attempts"
        " GROUP BY delivery_id"
    )
    assert len(attempts) == 12 * 4
    assert {(r["n"], r["outcome"]) for r in attempts} <= {(1, "delivered"), (1, "queued")}
    webhook_keys = Counter(c.idempotency_key for c in world.hooks.calls)
    assert len(webhook_keys) == 12
    assert set(webhook_keys.values()) == {1}
    message_ids = Counter(mail.message_id for mail in world.smtp.received)
    assert len(message_ids) == 24
    assert set(message_ids.values()) == {1}
    assert len(await world.network_deliveries(referrals[0])) == 3
