"""One PostgreSQL transaction per handled message: dedupe, state change and outgoing events.

This is what makes every effect happen once: the inbox row (consumer, event id) is inserted in the
same transaction as the state change and the outbox rows, so a redelivered event finds its inbox row
and does nothing, and an event published later by the relay cannot be lost by a crash in between.
"""

from __future__ import annotations

import json
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


class PostgresUnitOfWork:
    """Base for each service's unit of work: holds one connection inside one transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._connection: asyncpg.pool.PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None

    @property
    def connection(self) -> asyncpg.pool.PoolConnectionProxy:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open")
        return self._connection

    async def __aenter__(self) -> Self:
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
