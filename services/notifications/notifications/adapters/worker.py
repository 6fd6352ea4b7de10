"""The delivery worker: a background task of the service, woken by NOTIFY, polling as a fallback.

Several instances may run: due rows are leased with SELECT ... FOR UPDATE SKIP LOCKED, so each
delivery is attempted by one worker at a time. Each worker holds, on the connection it listens on,
a session-level advisory lock keyed by its id for as long as it runs: PostgreSQL drops it with the
connection, kill -9 included, which is how a starting worker tells the leases of a dead worker
(reclaimed at once) from those of a live one (left to their lease). The same connection carries
the worker's leases and rounds (``WorkerConnection``): no pool round trip per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import asyncpg

from aiguillage_common.consumer import where
from aiguillage_common.failures import is_transient
from aiguillage_common.logging import get_logger
from aiguillage_common.outbox import listener_alive
from notifications.adapters.postgres import (
    PRESENCE_LOCK_CLASS,
    WORKER_PLANNER_SETTINGS,
    WorkerConnection,
    presence_key,
)
from notifications.domain.messages import Planner
from notifications.use_cases.deliver import Deliverer

log = get_logger("aiguillage.notifications.worker")


class Closeable(Protocol):
    async def aclose(self) -> None: ...


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        deliverer: Deliverer,
        planner: Planner,
        outbound_topic: str,
        schema: str,
        poll_interval_s: float,
        http_client: Closeable | None = None,
        grace_s: float = 15.0,
        own: WorkerConnection | None = None,
        closing: Sequence[Closeable] = (),
    ) -> None:
        self._pool = pool
        self._deliverer = deliverer
        self._planner = planner
        self._outbound_topic = outbound_topic
        self._channel = f"{schema}_deliveries"
        self._poll_interval_s = poll_interval_s
        # Clients closed at stop (HTTP client, SMTP sessions).
        self._closing = [*([http_client] if http_client is not None else []), *closing]
        self._own = own or WorkerConnection()
        self._grace_s = grace_s
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None

    async def start(self) -> None:
        await self._take_presence()
        self._task = asyncio.create_task(self._run(), name="notifications-delivery-worker")

    async def _take_presence(self) -> None:
        """Listen for new deliveries and hold this worker's presence lock, on one connection."""
        listener = await self._pool.acquire()
        try:
            # 32 random bits per worker: a clash with a live worker is unlikely, and harmless
            # (a new id is drawn) rather than a wait.
            while not await listener.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)",
                PRESENCE_LOCK_CLASS,
                presence_key(self._deliverer.worker_id),
            ):
                self._deliverer.worker_id = uuid.uuid4()
            await listener.add_listener(self._channel, self._on_notify)
            # Plans on this connection must not rest on statistics that lag the tables: in a
            # burst the pending deliveries grow from none to thousands before autovacuum's next
            # ANALYZE. Generic plans made while the tables were small (hash joins over seq
            # scans, an unordered walk of every pending row) were kept as they grew: a round
            # cost 3.5 ms and a lease 18 ms, linear in the backlog. Every statement here looks
            # rows up by key or walks an index in order up to a limit, which is the right plan
            # at any size: the other plan shapes are switched off for this connection, so the
            # cached generic plans stay right and nothing is planned again per round.
            await listener.execute(WORKER_PLANNER_SETTINGS)
        except BaseException:
            await self._pool.release(listener)
            raise
        self._listener = listener
        self._own.connection = listener

    async def _keep_presence(self) -> None:
        # A lost connection (PostgreSQL restarted) lost the lock too: without it, a worker
        # starting now would take this one's leases for a dead worker's, so nothing is leased
        # until it is held again.
        if listener_alive(self._listener):
            return
        self._own.connection = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(self._listener)
            self._listener = None
        await self._take_presence()

    async def stop(self) -> None:
        """Let the sends in flight finish and be recorded (SIGTERM), within the grace period, and
        start no other; past it, a cancelled send stays 'started'. Either way the presence lock
        is released, so the next worker to start reclaims what is left at once."""
        self._stopping = True
        self._deliverer.drain()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._grace_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._own.connection = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(self._channel, self._on_notify)
                await self._listener.execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    PRESENCE_LOCK_CLASS,
                    presence_key(self._deliverer.worker_id),
                )
            await self._pool.release(self._listener)
            self._listener = None
        for resource in self._closing:
            with contextlib.suppress(Exception):
                await resource.aclose()

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()
        self._deliverer.due_now()

    async def _run(self) -> None:
        failures = 0
        reclaimed = False
        # Reminders are due to the minute (a day before a deadline): looked for once per poll
        # interval, not once per batch of deliveries.
        reminders_checked = -math.inf
        while not self._stopping:
            self._wake.clear()
            try:
                await self._keep_presence()
                if not reclaimed:
                    # What a killed worker left in flight is due now, not when its lease ends.
                    await self._deliverer.reclaim()
                    reclaimed = True
                if time.monotonic() - reminders_checked >= self._poll_interval_s:
                    await self._deliverer.fire_due_reminders(self._planner, self._outbound_topic)
                    reminders_checked = time.monotonic()
                attempted = await self._deliverer.deliver_due()
                if failures:
                    log.warning("delivery.worker_resumed", failed_attempts=failures)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # PostgreSQL unreachable, or a bug: nothing is lost (rows stay due), back off.
                # An outage is logged when it starts (and its end below), a bug every time.
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                if not is_transient(error):
                    log.error(
                        "delivery.worker_failed", error_type=type(error).__name__, at=where(error)
                    )
                elif failures == 1:
                    log.warning(
                        "delivery.worker_waiting", error_type=type(error).__name__, retry_in_s=delay
                    )
                await asyncio.sleep(delay)
                continue
            if attempted == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
