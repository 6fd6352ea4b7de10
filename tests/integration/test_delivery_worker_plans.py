"""The delivery worker's connection keeps generic plans that look deliveries up by key.

In a burst the delivery tables grow from empty faster than autovacuum analyzes them, and a
plan chosen while they were small was kept as they grew (seq scans, a walk of every pending
delivery): each round of the worker became linear in the backlog. The worker's connection
allows only key lookups and ordered index walks, and the round's "pending" checks are written
so the partial index of pending deliveries is never chosen for them. PostgreSQL's planner
decides that; this test reads its generic plans, on tables it has never analyzed.
"""

from __future__ import annotations

import uuid

from notifications.adapters.postgres import _LEASE_DUE, _SETTLE, WORKER_PLANNER_SETTINGS
from tests.conftest import Isolated

SETTLE_TYPES = (
    "bigint[], uuid[], text[], int[], text[], int[], int[], text[], text[], timestamptz[],"
    " text[], timestamptz[], bool[], uuid[], int[], float8, uuid"
)


async def _generic_plan(isolated: Isolated, statement: str, types: str, nulls: int) -> str:
    async with (
        isolated.schema_pool(isolated.schema("notifications")) as pool,
        pool.acquire() as connection,
    ):
        await connection.execute(WORKER_PLANNER_SETTINGS)
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        name = f"plan_{uuid.uuid4().hex[:8]}"
        await connection.execute(f"PREPARE {name}({types}) AS {statement}")
        arguments = ", ".join(["NULL"] * nulls)
        rows = await connection.fetch(f"EXPLAIN EXECUTE {name}({arguments})")
        return "\n".join(row[0] for row in rows)


async def test_a_round_finds_each_delivery_and_attempt_by_key(isolated: Isolated) -> None:
    plan = await _generic_plan(isolated, _SETTLE, SETTLE_TYPES, 17)
    assert "Seq Scan" not in plan
    assert "Hash Join" not in plan
    assert "deliveries_due" not in plan  # never a walk of every pending delivery
    assert "Index Scan using deliveries_pkey" in plan
    assert "Index Scan using delivery_attempts_pkey" in plan


async def test_a_lease_walks_the_due_deliveries_in_order_up_to_its_batch(
    isolated: Isolated,
) -> None:
    plan = await _generic_plan(isolated, _LEASE_DUE, "int, float8, uuid", 3)
    assert "Seq Scan" not in plan
    assert "Sort" not in plan  # not gathered whole and sorted
    assert "Index Scan using deliveries_due" in plan
