"""The services' pool skips asyncpg's reset round trip only for transaction-scoped uses.

The outbox relay and the delivery worker hold session state (an advisory lock, LISTEN, planner
settings) on connections they take from the same pool: when they give one back, the next user
must find none of it. A unit of work or a batch transaction leaves nothing past its transaction,
and its connection goes back without the reset query (one round trip and four statements less
per use).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from aiguillage_common.pool import create_pool, transaction_scoped
from tests.support import infra

LOCK = 0x5E551011


@pytest.fixture
async def pool(endpoints: infra.Endpoints) -> AsyncIterator[asyncpg.Pool]:
    # One connection: every acquire gets the one the previous user gave back.
    pool = await create_pool(endpoints.database_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def _state(pool: asyncpg.Pool) -> tuple[bool, str]:
    """Whether the pool's connection holds our advisory lock, and its work_mem."""
    async with pool.acquire() as connection:
        held = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND objid = $1::bigint)",
            LOCK,
        )
        work_mem = await connection.fetchval("SHOW work_mem")
        return bool(held), str(work_mem)


async def test_a_connection_given_back_with_session_state_is_reset(pool: asyncpg.Pool) -> None:
    before = await _state(pool)
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK)
        await connection.execute("SET work_mem = '7MB'")
    assert await _state(pool) == (False, before[1])


async def test_a_transaction_scoped_use_skips_the_reset(pool: asyncpg.Pool) -> None:
    before = await _state(pool)
    async with transaction_scoped(pool) as connection, connection.transaction():
        await connection.execute("SET work_mem = '7MB'")  # what a scoped use must never do
    # Nothing cleared the session: the proof that no reset query ran.
    assert (await _state(pool))[1] == "7MB" != before[1]


async def test_the_mark_lasts_one_use(pool: asyncpg.Pool) -> None:
    async with transaction_scoped(pool) as connection:
        await connection.fetchval("SELECT 1")
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK)
    assert (await _state(pool))[0] is False


async def test_a_transaction_left_open_is_rolled_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute("CREATE TEMP TABLE probe (n int)")
    async with transaction_scoped(pool) as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("INSERT INTO probe VALUES (1)")
        # Given back without commit or rollback (a bug, or a cancellation at a bad time).
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM probe") == 0
