"""Forward-only, numbered SQL migrations, applied per service schema under an advisory lock.

Each service owns one PostgreSQL schema. Its migrations are the shared platform files (outbox and
inbox) followed by the service's own ``<package>/migrations/NNN_name.sql``. An applied file is
recorded with its checksum; editing it afterwards is refused, because forward-only means a change is
a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from aiguillage_common.logging import get_logger

log = get_logger("aiguillage.migrations")
_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # e.g. "platform/001" or "service/002"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


class MigrationError(RuntimeError):
    pass


def _read_folder(folder: Traversable, label: str) -> list[Migration]:
    found = sorted(
        (entry for entry in folder.iterdir() if _FILE.match(entry.name)), key=lambda e: e.name
    )
    numbers = [entry.name[:3] for entry in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two {label} migrations share a number: {numbers}")
    return [Migration(f"{label}/{entry.name[:-4]}", entry.read_text("utf-8")) for entry in found]


def migrations_for(package: str, *, platform: bool = True) -> list[Migration]:
    """``platform=False`` for a schema that neither consumes nor publishes events (an operator
    tool's), which has no use for the outbox and inbox tables."""
    own = _read_folder(resources.files(package).joinpath("migrations"), "service")
    if not platform:
        return own
    shared = resources.files("aiguillage_common.migrations").joinpath("platform")
    return _read_folder(shared, "platform") + own


async def migrate(
    connection: asyncpg.Connection, schema: str, package: str, *, platform: bool = True
) -> list[str]:
    """Apply what is missing; returns the versions applied now. Safe to run concurrently."""
    if not _SCHEMA.match(schema):
        raise MigrationError(f"not a plain schema name: {schema!r}")
    wanted = migrations_for(package, platform=platform)
    applied_now: list[str] = []
    await connection.execute("SELECT pg_advisory_lock(hashtext('migrate:' || $1))", schema)
    try:
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.execute(f"SET search_path TO {schema}")
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            row["version"]: row["checksum"]
            for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in wanted:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: {migration.version} changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info("migration.applied", schema=schema, version=migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtext('migrate:' || $1))", schema)
        await connection.execute("RESET search_path")
    return applied_now
