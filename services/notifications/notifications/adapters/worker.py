"""The delivery worker: a background task of the service, woken by NOTIFY, polling as a fallback.

Several instances may run: due rows are leased with SELECT ... FOR UPDATE SKIP LOCKED, so each
delivery is attempted by one worker at a time.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import httpx

from aiguillage_common.logging import get_logger
from notifications.domain.messages import Planner
from notifications.use_cases.deliver import Deliverer

log = get_logger("aiguillage.notifications.worker")


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        deliverer: Deliverer,
        planner: Planner,
        outbound_topic: str,
        schema: str,
        poll_interval_s: float,
        http_client: httpx.AsyncClient | None = None,
        grace_s: float = 15.0,
    ) -> None:
        self._pool = pool
        self._deliverer = deliverer
        self._planner = planner
        self._outbound_topic = outbound_topic
        self._channel = f"{schema}_deliveries"
        self._poll_interval_s = poll_interval_s
        self._http_client = http_client
        self._grace_s = grace_s
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None

    async def start(self) -> None:
        listener = await self._pool.acquire()
        await listener.add_listener(self._channel, self._on_notify)
        self._listener = listener
        self._task = asyncio.create_task(self._run(), name="notifications-delivery-worker")

    async def stop(self) -> None:
        """Let the attempts in flight finish and be recorded (SIGTERM), within the grace period;
        past it, cancelling only loses their lease: they are due again when it expires."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._grace_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(self._channel, self._on_notify)
            await self._pool.release(self._listener)
            self._listener = None
        if self._http_client is not None:
            await self._http_client.aclose()

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                await self._deliverer.fire_due_reminders(self._planner, self._outbound_topic)
                attempted = await self._deliverer.deliver_due()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # PostgreSQL unreachable, or a bug: nothing is lost (rows stay due), back off.
                failures += 1
                delay = min(30.0, 0.2 * 2**failures)
                log.error(
                    "delivery.worker_failed", error_type=type(error).__name__, retry_in_s=delay
                )
                await asyncio.sleep(delay)
                continue
            if attempted == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
