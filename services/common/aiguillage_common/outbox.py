"""Relays committed outbox rows to Kafka, in order, and marks them sent.

One relay at a time per schema: the relay publishing holds a session-level advisory lock on the
connection it listens on, so that two instances of a service never publish the same rows
concurrently or out of order; PostgreSQL releases it when that connection goes (a crash, a
restart of either side), and another instance's relay takes it at its next wake-up. Holding it
for the connection's life rather than per pass makes a pass two statements (read the unsent
rows, mark them sent) instead of five (BEGIN, lock, read, mark, COMMIT). The relay wakes on
NOTIFY from the outbox trigger for low latency and polls as a fallback. A crash between the Kafka
acknowledgement and the UPDATE re-publishes the same event ids, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg

from aiguillage_common.failures import is_transient
from aiguillage_common.kafka import OutgoingRecord
from aiguillage_common.logging import get_logger

log = get_logger("aiguillage.outbox")


class BatchPublisher(Protocol):
    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> None: ...


# Applied to each record right before it is published: a service whose records are signed
# (the portal on the centre topics) signs here, at send time, so that a record held in the
# outbox through a broker outage never reaches its consumer with a stale signature.
RecordSigner = Callable[[OutgoingRecord], OutgoingRecord]


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: BatchPublisher,
        schema: str,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        sign: RecordSigner | None = None,
        on_published: Callable[[Sequence[OutgoingRecord]], None] | None = None,
    ) -> None:
        self._sign = sign
        self._on_published = on_published  # metrics: records produced per topic
        self._pool = pool
        self._publisher = publisher
        self._schema = schema
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None
        self._holding = False  # the relay lock, held by the listener connection's session

    @property
    def channel(self) -> str:
        return f"{self._schema}_outbox"

    async def start(self) -> None:
        await self._ensure_listener()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain what is committed, never cutting a batch between Kafka's ack and the UPDATE
        (that would re-publish it on the next start); cancel only past the timeout."""
        if self._task is not None:
            self._stopping.set()
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(self.channel, self._on_notify)
            # Released to the pool, the connection is reset: its session lock goes with it.
            await self._pool.release(self._listener)
            self._listener = None
            self._holding = False

    async def _ensure_listener(self) -> None:
        """(Re)open the LISTEN connection: after a PostgreSQL restart the old one is gone, and
        without it the relay would only poll, adding up to a poll interval to every event."""
        if listener_alive(self._listener):
            return
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(self._listener)
            self._listener = None
        self._holding = False  # a new session holds no lock
        listener = await self._pool.acquire()
        await listener.add_listener(self.channel, self._on_notify)
        self._listener = listener

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self._ensure_listener()
                relayed = await self.relay_once()
                if failures:
                    log.warning("outbox.relay_resumed", failed_attempts=failures)
                failures = 0
            except Exception as error:
                # Kafka or PostgreSQL unreachable (or a bug): the rows stay unsent and are
                # retried with backoff; when stopping they wait in the outbox for the next start.
                failures += 1
                if self._stopping.is_set():
                    return
                # Capped low: once the outage ends, the backlog must go out within seconds.
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                if failures == 1 or not is_transient(error):
                    (log.warning if is_transient(error) else log.error)(
                        "outbox.relay_failed", error_type=type(error).__name__, retry_in_s=delay
                    )
                await asyncio.sleep(delay)
                continue
            if self._stopping.is_set() and relayed == 0:
                return
            if relayed < self._batch_size and not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were published (0 when another
        instance's relay holds the lock)."""
        connection = self._listener
        if connection is None:
            raise asyncpg.InterfaceError("the outbox relay is not connected")
        if not self._holding:
            self._holding = bool(
                await connection.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext('outbox:' || current_schema()))"
                )
            )
            if not self._holding:
                return 0
        rows = await connection.fetch(
            "SELECT id, topic, key, headers, payload FROM outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return 0
        records = [
            OutgoingRecord(
                topic=row["topic"],
                key=row["key"],
                value=bytes(row["payload"]),
                headers=json.loads(row["headers"]),
            )
            for row in rows
        ]
        if self._sign is not None:
            records = [self._sign(record) for record in records]
        await self._publisher.publish_batch(records)
        await connection.execute(
            "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
            [row["id"] for row in rows],
        )
        if self._on_published is not None:
            self._on_published(records)
        log.debug("outbox.relayed", count=len(rows))
        return len(rows)


def listener_alive(listener: asyncpg.pool.PoolConnectionProxy | None) -> bool:
    """Whether a held LISTEN connection still works. When its server went away, asyncpg detaches
    the proxy from its connection, and asking it anything raises InterfaceError."""
    if listener is None:
        return False
    try:
        return not listener.is_closed()
    except asyncpg.InterfaceError:
        return False
