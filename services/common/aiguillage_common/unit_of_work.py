"""One PostgreSQL transaction per handled batch: dedupe, state changes and outgoing events.

This is what makes every effect happen once: the inbox row (consumer, event id) is inserted in the
same transaction as the state change and the outbox rows, so a redelivered event finds its inbox row
and does nothing, and an event published later by the relay cannot be lost by a crash in between.

A consumer runs a whole batch of records in one ``shared_transaction``: each use case still opens
"its" unit of work, which then joins the batch's transaction instead of beginning its own, so a
batch costs one BEGIN/COMMIT (and one fsync) rather than one per record, and the use cases do not
change. Outside a batch (background workers, CLIs) a unit of work is its own transaction.

Inside a batch, the writes nothing in the batch reads back are deferred to its end and written in
one statement each, right before the commit (the transaction makes the deferral invisible to
anyone else): the outbox rows, in the order they were emitted, and the inbox claims. A deferred
claim answers "new" at once unless the batch claimed the same event already; the one INSERT at the
end says which events were in fact handled before (a redelivery after a crash between the commit
and the offset commit, or a second instance during a rebalance): then ``DuplicateClaims`` rolls
the batch back and the consumer runs it again knowing them (see ``consumer.ReliableConsumer``), so
a duplicate still has no effect. A batch costs two statements for its claims and events instead of
one or more per record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from uuid import UUID

import asyncpg

from aiguillage_common.codec import encode_event
from aiguillage_common.kafka import event_headers
from aiguillage_common.pool import mark_transaction_scoped, transaction_scoped
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


Claim = tuple[str, UUID]  # (consumer, event id): one row of the inbox


class DuplicateClaims(Exception):
    """Events the batch claimed as new were handled before: roll back, run again knowing them."""

    def __init__(self, claims: Collection[Claim]) -> None:
        super().__init__(f"{len(claims)} event(s) of the batch were handled before")
        self.claims = frozenset(claims)


_FLUSH_CLAIMS = (
    "INSERT INTO processed_events (consumer, event_id)"
    " SELECT * FROM unnest($1::text[], $2::uuid[])"
    " ON CONFLICT DO NOTHING RETURNING consumer, event_id"
)
_ALREADY_HANDLED = (
    "SELECT p.consumer, p.event_id FROM processed_events p"
    " JOIN unnest($1::text[], $2::uuid[]) AS c(consumer, event_id)"
    " ON p.consumer = c.consumer AND p.event_id = c.event_id"
)
# Ordered by emission: the relay publishes by id, and per-referral order is emission order.
_FLUSH_OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, headers, payload)"
    " SELECT o.event_id, o.topic, o.key, o.headers::jsonb, o.payload"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])"
    " WITH ORDINALITY AS o(event_id, topic, key, headers, payload, n)"
    " ORDER BY o.n ON CONFLICT (event_id) DO NOTHING"
)

Flush = Callable[[asyncpg.pool.PoolConnectionProxy], Awaitable[None]]


class Deferred(Protocol):
    """Work a batch does once, right before its commit (see ``PostgresUnitOfWork.deferred``)."""

    async def run(self) -> None: ...


D = TypeVar("D", bound=Deferred)


@dataclass
class SharedTransaction:
    connection: asyncpg.pool.PoolConnectionProxy
    # How many units of work joined so far: a record that failed before joining one wrote
    # nothing, so the batch need not be rolled back for it.
    joins: int = 0
    # False: every write goes at once, as outside a batch (a run that must tell which record a
    # failing write belongs to).
    deferring: bool = True
    # Claims found handled before, by an earlier run of this batch: answered "duplicate".
    known_duplicates: frozenset[Claim] = frozenset()
    # How many claims were answered "duplicate" (metrics: records that changed nothing).
    duplicates: int = 0
    # Claims answered "new", in order, written at the end (dict: ordered, no repeats).
    claims: dict[Claim, None] = field(default_factory=dict)
    outbox: list[tuple[UUID, str, str, str, bytes]] = field(default_factory=list)
    # Services' own deferred writes (key -> flush), written after the claims, before the outbox.
    flushes: dict[object, Flush] = field(default_factory=dict)
    # Services' batch-wide state (key -> anything), e.g. the rows their flush writes.
    extensions: dict[object, Any] = field(default_factory=dict)

    @property
    def claims_made(self) -> int:
        return len(self.claims)

    def claims_since(self, mark: int) -> list[Claim]:
        return list(self.claims)[mark:]

    def know_duplicates(self, claims: Collection[Claim]) -> None:
        self.known_duplicates = frozenset(claims)

    def write_at_once(self) -> None:
        self.deferring = False

    def claim(self, consumer: str, event_id: UUID) -> bool:
        key = (consumer, event_id)
        if key in self.known_duplicates or key in self.claims:
            self.duplicates += 1
            return False
        self.claims[key] = None
        return True

    async def already_handled(self, claims: Collection[Claim]) -> frozenset[Claim]:
        """Which of ``claims`` are in the inbox (committed by someone else), read now."""
        if not claims:
            return frozenset()
        consumers, event_ids = zip(*claims, strict=True)
        rows = await self.connection.fetch(_ALREADY_HANDLED, list(consumers), list(event_ids))
        return frozenset((row["consumer"], row["event_id"]) for row in rows)

    async def flush(self) -> None:
        """Write what was deferred, before the commit; raises ``DuplicateClaims``."""
        if self.claims:
            consumers, event_ids = zip(*self.claims, strict=True)
            rows = await self.connection.fetch(_FLUSH_CLAIMS, list(consumers), list(event_ids))
            if len(rows) != len(self.claims):
                written = {(row["consumer"], row["event_id"]) for row in rows}
                raise DuplicateClaims(set(self.claims).difference(written))
        done: set[object] = set()
        while len(done) < len(self.flushes):  # a flush may add another (run in its turn)
            key = next(key for key in self.flushes if key not in done)
            done.add(key)
            await self.flushes[key](self.connection)
        if self.outbox:
            columns = (list(column) for column in zip(*self.outbox, strict=True))
            await self.connection.execute(_FLUSH_OUTBOX, *columns)


_shared: ContextVar[SharedTransaction | None] = ContextVar(
    "aiguillage_shared_transaction", default=None
)


def current_shared() -> SharedTransaction | None:
    """The batch transaction the caller runs in, if any."""
    return _shared.get()


@asynccontextmanager
async def shared_transaction(pool: asyncpg.Pool) -> AsyncIterator[SharedTransaction]:
    """One transaction that the units of work opened inside it join (see the module doc).
    Its deferred writes are written when the block ends, then it commits; rolled back when an
    exception leaves it (``DuplicateClaims`` included)."""
    async with transaction_scoped(pool) as connection, connection.transaction():
        shared = SharedTransaction(connection)
        token = _shared.set(shared)
        try:
            yield shared
            await shared.flush()
        finally:
            _shared.reset(token)


class PostgresUnitOfWork:
    """Base for each service's unit of work: holds one connection inside one transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._connection: asyncpg.pool.PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None
        self._joined = False
        self._batch: SharedTransaction | None = None  # the batch joined, if it defers writes

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
            self._connection = shared.connection
            self._batch = shared if shared.deferring else None
            self._joined = True
            return self
        self._connection = await self._pool.acquire()
        mark_transaction_scoped(self._connection)
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
            self._connection, self._batch, self._joined = None, None, False
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

    def deferred(self, key: object, make: Callable[[], D]) -> D | None:
        """The batch-wide ``D`` kept under ``key``, made on first use and run once right before
        the batch commits (after the claims are written, before the outbox rows), in a unit of
        work that joins the batch; None outside a consumer's batch (then do the work now)."""
        batch = self._batch
        if batch is None:
            return None
        found: D | None = batch.extensions.get(key)
        if found is None:
            found = batch.extensions[key] = make()
            batch.flushes[key] = _run_deferred(found)
        return found

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        if self._batch is not None:
            return self._batch.claim(consumer, event_id)  # checked when the batch ends
        inserted = await self.connection.fetchval(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true",
            consumer,
            event_id,
        )
        return bool(inserted)

    async def emit(self, topic: str, event: Envelope) -> None:
        # Deterministic event ids make re-emission after a redelivery a no-op.
        if self._batch is not None:
            self._batch.outbox.append(
                (
                    event.event_id,
                    topic,
                    event.subject,
                    json.dumps(event_headers(event)),
                    encode_event(event),
                )
            )
            return
        await self.connection.execute(
            "INSERT INTO outbox (event_id, topic, key, headers, payload) "
            "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (event_id) DO NOTHING",
            event.event_id,
            topic,
            event.subject,
            json.dumps(event_headers(event)),
            encode_event(event),
        )


def _run_deferred(deferred: Deferred) -> Flush:
    async def run(_connection: asyncpg.pool.PoolConnectionProxy) -> None:
        await deferred.run()

    return run
