"""``aiguillage purge``: retention. Crypto-shreds referrals closed longer than the period.

Run it daily (cron, a Kubernetes CronJob) with the service's environment. A referral is *closed*
when its prescriber cancelled it (``status = 'cancelled'``, ``closed_at`` set). Its identity's
wrapped person key and ciphertext are deleted, so any copy of the sealed identity left elsewhere can
no longer be decrypted; the pseudonymous row stays, marked ``purged_at``, so a replay of the old
submission is recognised as a duplicate instead of re-admitting the person.

``aiguillage-intake-purge`` is the same command under its older name. It needs no secret: it reads
intake's database settings only (``AIGUILLAGE_INTAKE_*``, else ``AIGUILLAGE_DATABASE_URL``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from aiguillage_common.cli import (
    DatabaseUrl,
    Unreachable,
    overrides,
    run,
    settings_or_fail,
    typer_app,
    where,
    why,
)
from aiguillage_common.logging import configure_logging, get_logger
from aiguillage_common.runtime import open_pool
from referral_intake.adapters.postgres import purge_closed
from referral_intake.settings import IntakeStoreSettings

log = get_logger("aiguillage.intake.purge")
CONNECT_TIMEOUT_S = 5.0


def database_address(url: str) -> str:
    """host:port of a PostgreSQL URL, never its password."""
    return where(url)


async def purge_now(settings: IntakeStoreSettings, older_than_days: int) -> list[str]:
    try:
        pool = await open_pool(
            settings.model_copy(update={"db_command_timeout_s": CONNECT_TIMEOUT_S}),
            "aiguillage-intake-purge",
        )
    except (OSError, TimeoutError) as error:
        raise Unreachable(
            f"cannot reach PostgreSQL at {where(settings.database_url)} ({why(error)})"
        ) from None
    try:
        return await purge_closed(pool, older_than_days, datetime.now(UTC))
    finally:
        await pool.close()


def purge(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            help="Closed for longer than this. Default: AIGUILLAGE_INTAKE_RETENTION_DAYS (365).",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Crypto-shred the identities of referrals closed longer than the retention period."""
    settings = settings_or_fail(
        IntakeStoreSettings, "AIGUILLAGE_INTAKE_", **overrides(database_url)
    )
    days = settings.retention_days if older_than_days is None else older_than_days
    configure_logging("referral-intake-purge", settings.log_level)
    purged = run(purge_now(settings, days))
    # Referral ids are pseudonymous: safe to log, and operators need them for the audit trail.
    log.info("purge.done", purged=len(purged), referral_ids=purged, days=days)


app = typer_app("aiguillage-intake-purge", "Crypto-shred identities of long-closed referrals.")
app.command()(purge)


def run_command() -> None:
    app(prog_name="aiguillage-intake-purge")
