"""``aiguillage-intake-purge``: retention. Crypto-shreds referrals closed longer than the period.

Run it daily (cron, a Kubernetes CronJob) with the service's environment. A referral is *closed*
when its prescriber cancelled it (``status = 'cancelled'``, ``closed_at`` set). Its identity's
wrapped person key and ciphertext are deleted, so any copy of the sealed identity left elsewhere can
no longer be decrypted; the pseudonymous row stays, marked ``purged_at``, so a replay of the old
submission is recognised as a duplicate instead of re-admitting the person.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
from pydantic import ValidationError

from aiguillage_common.logging import configure_logging, get_logger
from aiguillage_common.runtime import open_pool
from referral_intake.adapters.postgres import purge_closed
from referral_intake.settings import IntakeSettings

log = get_logger("aiguillage.intake.purge")


def database_address(url: str) -> str:
    """host:port of a PostgreSQL URL, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 5432}"


async def purge(settings: IntakeSettings, older_than_days: int) -> list[str]:
    pool = await open_pool(settings, "aiguillage-intake-purge")
    try:
        return await purge_closed(pool, older_than_days, datetime.now(UTC))
    finally:
        await pool.close()


def run() -> None:
    try:
        settings = IntakeSettings()
    except ValidationError as error:
        names = ", ".join(
            "AIGUILLAGE_INTAKE_" + ".".join(map(str, e["loc"])).upper() for e in error.errors()
        )
        sys.exit(
            f"aiguillage-intake-purge: missing or invalid setting {names} (run it with the "
            "service's environment)"
        )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--older-than-days",
        type=int,
        default=settings.retention_days,
        help=f"closed for longer than this (default: AIGUILLAGE_INTAKE_RETENTION_DAYS, "
        f"now {settings.retention_days})",
    )
    args = parser.parse_args()
    configure_logging("referral-intake-purge", settings.log_level)
    try:
        purged = asyncio.run(purge(settings, args.older_than_days))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        # One line, no traceback; the address without the password in the URL.
        log.error(
            "purge.failed",
            error_type=type(error).__name__,
            database=database_address(settings.database_url),
        )
        sys.exit(1)
    # Referral ids are pseudonymous: safe to log, and operators need them for the audit trail.
    log.info("purge.done", purged=len(purged), referral_ids=purged, days=args.older_than_days)
