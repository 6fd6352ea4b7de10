"""PostgreSQL side of the dead-letter tool: who replayed or discarded which dead letter, and why.

The table lives in the tool's own schema (``operations``), created by ``aiguillage-migrate
operations``. One connection is enough for a command-line tool; a decision about one dead letter
runs in a transaction holding an advisory lock on that dead letter.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from aiguillage_operations.domain import Action, ActionKind

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = "dead_letter_id, action, operator, acted_at, reason, replayed_to, signed"


class SchemaMissing(RuntimeError):
    """The operations schema was never migrated."""


def _action(row: Any) -> Action:
    return Action(
        dead_letter=row["dead_letter_id"],
        kind=row["action"],
        operator=row["operator"],
        at=row["acted_at"],
        reason=row["reason"],
        replayed_to=row["replayed_to"],
        signed=row["signed"],
    )


class PostgresActions:
    def __init__(self, connection: asyncpg.Connection, schema: str) -> None:
        self._connection = connection
        self._table = f"{schema}.dead_letter_actions"

    @classmethod
    async def connect(
        cls, database_url: str, schema: str, timeout_s: float = 10.0
    ) -> PostgresActions:
        if not _SCHEMA.match(schema):
            raise ValueError(f"not a plain schema name: {schema!r}")
        connection = await asyncpg.connect(
            database_url, timeout=timeout_s, command_timeout=timeout_s
        )
        try:
            found = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{schema}.dead_letter_actions"
            )
        except BaseException:
            await connection.close()
            raise
        if not found:
            await connection.close()
            raise SchemaMissing(
                f"schema {schema} has no dead_letter_actions table: run "
                f"`aiguillage-migrate operations` (with --schema-suffix for a suffixed schema)"
            )
        return cls(connection, schema)

    async def close(self) -> None:
        await self._connection.close()

    async def history(self, uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Action]]:
        rows = await self._connection.fetch(
            f"SELECT {_COLUMNS} FROM {self._table} "  # noqa: S608 - schema name checked above
            "WHERE dead_letter_id = ANY($1::uuid[]) ORDER BY id",
            list(uids),
        )
        found: dict[uuid.UUID, list[Action]] = {}
        for row in rows:
            found.setdefault(row["dead_letter_id"], []).append(_action(row))
        return found

    @asynccontextmanager
    async def exclusive(self, uid: uuid.UUID) -> AsyncIterator[_Claim]:
        async with self._connection.transaction():
            # Serialises decisions about one dead letter across operators; released at commit.
            await self._connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"dead-letter:{uid}"
            )
            yield _Claim(self._connection, self._table, uid)


class _Claim:
    def __init__(self, connection: asyncpg.Connection, table: str, uid: uuid.UUID) -> None:
        self._connection = connection
        self._table = table
        self._uid = uid

    async def actions(self) -> list[Action]:
        rows = await self._connection.fetch(
            f"SELECT {_COLUMNS} FROM {self._table} WHERE dead_letter_id = $1 ORDER BY id",  # noqa: S608
            self._uid,
        )
        return [_action(row) for row in rows]

    async def now(self) -> datetime:
        stamp: datetime = await self._connection.fetchval("SELECT clock_timestamp()")
        return stamp

    async def record(
        self,
        topic: str,
        kind: ActionKind,
        operator: str,
        reason: str | None = None,
        replayed_to: str | None = None,
        signed: bool | None = None,
        at: datetime | None = None,
    ) -> Action:
        row = await self._connection.fetchrow(
            f"INSERT INTO {self._table} "  # noqa: S608
            "(dead_letter_id, dead_letter_topic, action, operator, reason, replayed_to, signed,"
            " acted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, clock_timestamp()))"
            f" RETURNING {_COLUMNS}",
            self._uid,
            topic,
            kind,
            operator,
            reason,
            replayed_to,
            signed,
            at,
        )
        return _action(row)
