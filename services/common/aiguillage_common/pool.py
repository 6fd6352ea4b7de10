"""The services' connection pool, without a reset round trip for transaction-scoped uses.

asyncpg resets every connection it takes back: ``CLOSE ALL; UNLISTEN *; RESET ALL; SELECT
pg_advisory_unlock_all()``, one more round trip and four statements per use. A unit of work or a
batch transaction needs none of it: whatever it did ended with its transaction (asyncpg still
rolls back a transaction left open). Measured on the burst of ``./run bench e2e``, 5.5 resets per
referral cost PostgreSQL about 0.3 ms of CPU per referral.

So a use that marks its connection ``transaction_scoped`` skips the reset query. Anything else
(the outbox relay's LISTEN connection and advisory lock, the delivery worker's planner settings
and presence lock, migrations) is reset as before: a mark is what allows the skip, never its
absence, and the mark is cleared at each release.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


class TrackedConnection(asyncpg.Connection):
    """An asyncpg connection that knows whether its current use left any session state."""

    __slots__ = ("_transaction_scoped",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transaction_scoped = False

    def mark_transaction_scoped(self) -> None:
        """This use runs statements whose effects end with their transaction: no session
        setting, no LISTEN, no session-level advisory lock, no cursor held past the commit."""
        self._transaction_scoped = True

    def get_reset_query(self) -> str:
        # asyncpg's hook for what the pool runs when it takes the connection back (after
        # rolling back an open transaction): nothing after a marked use, and the mark is spent.
        scoped, self._transaction_scoped = self._transaction_scoped, False
        return "" if scoped else super().get_reset_query()


def mark_transaction_scoped(connection: Any) -> None:
    """Mark a pooled connection (or its proxy) whose use leaves no session state. A connection
    of a pool made elsewhere (a plain asyncpg connection) is left as is: it is reset."""
    mark = getattr(connection, "mark_transaction_scoped", None)
    if mark is not None:
        mark()


@asynccontextmanager
async def transaction_scoped(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A connection for statements whose effects end with their transaction (see above)."""
    async with pool.acquire() as connection:
        mark_transaction_scoped(connection)
        yield connection


async def create_pool(dsn: str, **kwargs: Any) -> asyncpg.Pool:
    """``asyncpg.create_pool`` with connections that can skip the reset (see the module doc)."""
    pool = await asyncpg.create_pool(dsn, connection_class=TrackedConnection, **kwargs)
    assert pool is not None
    return pool
