"""``aiguillage-migrate``: the explicit step that creates or upgrades every service's tables."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import asyncpg

from aiguillage_common.logging import configure_logging, get_logger
from aiguillage_common.migrations.runner import MigrationError, migrate

# service name -> (python package holding migrations/, default schema). Only the services that
# run as processes: the tests start every name listed here.
SERVICES: dict[str, tuple[str, str]] = {
    "referral-intake": ("referral_intake", "intake"),
    "routing": ("routing", "routing"),
    "notifications": ("notifications", "notifications"),
}
# The portal: a process with its own outbox and inbox, kept apart from SERVICES because the tests,
# the demo and the benches run the three pipeline services by that list.
WEB: dict[str, tuple[str, str]] = {
    "portal": ("portal", "portal"),
}
# Schemas of operator tools (no process, no events of their own, so no outbox and inbox tables):
# aiguillage-dead-letters records who replayed or discarded which dead letter, and why.
TOOLS: dict[str, tuple[str, str]] = {
    "operations": ("aiguillage_operations", "operations"),
}
MIGRATED: dict[str, tuple[str, str]] = {**SERVICES, **WEB, **TOOLS}
DEFAULT_URL = "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage"


async def migrate_services(database_url: str, services: list[str], schema_suffix: str = "") -> None:
    """``services``: names of SERVICES or TOOLS."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        for service in services:
            package, schema = MIGRATED[service]
            await migrate(
                connection, schema + schema_suffix, package, platform=service not in TOOLS
            )
    finally:
        await connection.close()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(MIGRATED)} (default: all)")
    parser.add_argument(
        "--database-url", default=os.environ.get("AIGUILLAGE_DATABASE_URL", DEFAULT_URL)
    )
    parser.add_argument("--schema-suffix", default="", help="e.g. _t1 for an isolated test set")
    args = parser.parse_args()
    unknown = set(args.services) - set(MIGRATED)
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    configure_logging("migrate")
    try:
        asyncio.run(
            migrate_services(args.database_url, args.services or list(MIGRATED), args.schema_suffix)
        )
    except (MigrationError, OSError, asyncpg.PostgresError) as error:
        get_logger("aiguillage.migrations").error(
            "migration.failed", error_type=type(error).__name__, detail=str(error)
        )
        sys.exit(1)
    get_logger("aiguillage.migrations").info("migration.done")
