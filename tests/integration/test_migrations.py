"""Migrations: explicit, forward-only, safe to run twice or concurrently, and tamper-evident."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from aiguillage_common.migrations.runner import MigrationError, migrate, migrations_for
from tests.support.infra import Endpoints


async def test_concurrent_runs_apply_each_file_once_and_reruns_do_nothing(
    endpoints: Endpoints,
) -> None:
    schema = f"routing_m{uuid.uuid4().hex[:8]}"
    connections = [await asyncpg.connect(endpoints.database_url) for _ in range(3)]
    try:
        wanted = [m.version for m in migrations_for("routing")]
        applied = await asyncio.gather(*(migrate(c, schema, "routing") for c in connections))
        assert sorted(len(a) for a in applied) == [0, 0, len(wanted)]  # one runner did the work
        assert await migrate(connections[0], schema, "routing") == []
        versions = await connections[0].fetch(
            f"SELECT version FROM {schema}.schema_migrations ORDER BY version"
        )
        assert [r["version"] for r in versions] == wanted
        assert wanted[:2] == ["platform/001_outbox_and_inbox", "service/001_decisions"]
    finally:
        await connections[0].execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for connection in connections:
            await connection.close()


async def test_an_applied_file_that_changed_is_refused(endpoints: Endpoints) -> None:
    schema = f"routing_m{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(endpoints.database_url)
    try:
        await migrate(connection, schema, "routing")
        await connection.execute(
            f"UPDATE {schema}.schema_migrations SET checksum = 'edited' "
            "WHERE version = 'service/001_decisions'"
        )
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(connection, schema, "routing")
    finally:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()
