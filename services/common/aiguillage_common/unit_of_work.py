"""One PostgreSQL transaction per handled batch: dedupe, state changes and outgoing events.

This is what makes every effect happen once: the inbox row (consumer, event id) is inserted in the
same transaction as the state change and the outbox rows, so a redelivered event finds its inbox row
and does nothing, and an event published later by the relay cannot be lost by a crash in between.

A consumer runs a whole batch of records in one ``shared_transaction``: each use case still opens
"its" unit of work, which then joins the batch's transaction instead of beginning its own, so a
batch costs one BEGIN/COMMIT (and one fsync) rather than one per record, and the use cases do not
change. Outside a batch (background workers, CLIs) a unit of work is its own transaction.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

import asyncpg

from aiguillage_common.codec import encode_event
from aiguillage_common.kafka import event_headers
from aiguillage_schemas.envelope import Envelope


class UnitOfWork(Protocol):
    """What use cases see; services extend it with their repositories. Entering opens the
    transaction; leaving commits it, or rolls it back when an exception escapes."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        """True the first time ``consumer`` handles ``event_id``, False for a duplicate."""
        ...

    async def emit(self, topic: str, event: Envelope) -> None:
        """Queue ``event`` for ``topic``; it is published only if the transaction commits."""
        ...


@dataclass
class SharedTransaction:
    connection: asyncpg.pool.PoolConnectionProxy
    # How many units of work joined so far: a record that failed before joining one wrote
    # nothing, so the batch need not be rolled back for it.
    joins: int = 0


_shared: ContextVar[SharedTransaction | None] = ContextVar(
    "aiguillage_shared_transaction", default=None
)


@asynccontextmanager
async def shared_transaction(pool: asyncpg.Pool) -> AsyncIterator[SharedTransaction]:
    """One transaction that the units of work opened inside it join (see the module doc).
    Committed when the block ends; rolled back when an exception leaves it."""
    async with pool.acquire() as connection, connection.transaction():
        shared = SharedTransaction(connection)
        token = _shared.set(shared)
        try:
            yield shared
        finally:
            _shared.reset(token)


class PostgresUnitOfWork:
    """Base for each service's unit of work: holds one connection inside one transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._connection: asyncpg.pool.PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None
        self._joined = False

    @property
    def connection(self) -> asyncpg.pool.PoolConnectionProxy:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open")
        return self._connection

    async def __aenter__(self) -> Self:
        shared = _shared.get()
        if shared is not None:
            # Inside a batch: its transaction commits or rolls back for everything in it.
            shared.joins += 1
            self._connection, self._joined = shared.connection, True
            return self
        self._connection = await self._pool.acquire()
        self._transaction = self._connection.transaction()
        await self._transaction.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._joined:
            self._connection, self._joined = None, False
            return
        if self._transaction is None or self._connection is None:
            raise RuntimeError("the unit of work is not open")
        try:
            if exc_type is None:
                await self._transaction.commit()
            else:
                await self._transaction.rollback()
        finally:
            await self._pool.release(self._connection)
            self._connection = None
            self._transaction = None

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        inserted = await self.connection.fetchval(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true",
            consumer,
            event_id,
        )
        return bool(inserted)

    async def emit(self, topic: str, event: Envelope) -> None:
        # Deterministic event ids make re-emission after a redelivery a no-op.
        await self.connection.execute(
            "INSERT INTO outbox (event_id, topic, key, headers, payload) "
            "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (event_id) DO NOTHING",
            event.event_id,
            topic,
            event.subject,
            json.dumps(event_headers(event)),
            encode_event(event),
        )
