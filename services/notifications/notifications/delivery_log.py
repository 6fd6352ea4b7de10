"""``aiguillage deliveries <referral_id>``: every delivery attempt of one referral.

For operators answering "was the centre told?": one line per attempt, oldest first, with the
recipient, channel, outcome, latency and what the peer answered, then the deliveries still pending.
Reads PostgreSQL only; prints no message content (the reference is the only thing the operator
gives and gets back). ``aiguillage-notifications-log`` is the same command under its older name.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from aiguillage_common.cli import (
    EXIT_REFUSED,
    AsJson,
    DatabaseUrl,
    connect,
    fail,
    overrides,
    run,
    settings_or_fail,
    typer_app,
)
from notifications.adapters.postgres import DeliveryLog, read_delivery_log
from notifications.settings import NotificationsSettings

COLUMNS = (
    ("time (UTC)", 23),
    ("recipient", 30),
    ("topic", 20),
    ("channel", 16),
    ("try", 3),
    ("outcome", 9),
    ("ms", 6),
    ("peer", 8),
    ("error", 20),
    ("identity", 13),  # what intake answered when the delivery carries the person
    ("now", 9),
)


async def fetch(database_url: str, schema: str, referral_id: str) -> DeliveryLog:
    connection = await connect(database_url, schema)
    try:
        return await read_delivery_log(connection, referral_id)
    finally:
        await connection.close()


def lines(log: DeliveryLog) -> list[list[str]]:
    return [_attempt_line(row) for row in log.attempts] + [
        _pending_line(row) for row in log.pending
    ]


def _time(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] if moment is not None else "-"


def _pending_line(row: Any) -> list[str]:
    held = row["identity_waits"] > 0  # waiting for the identity: since when, how many tries
    return [
        _time(row["next_attempt_at"]),  # when it is tried next
        f"{row['recipient_kind']}:{row['recipient_id']}",
        row["topic"],
        row["channel"] + (" (fallback)" if row["fallback"] else ""),
        str(row["attempts"] + 1),
        "next",
        "-",
        "-",
        f"since {_time(row['identity_wait_since'])[5:19]}" if held else "-",
        f"held x{row['identity_waits']}" if held else "-",
        row["state"],
    ]


def _attempt_line(row: Any) -> list[str]:
    peer = row["http_status"] or row["smtp_code"]
    channel = row["channel"] + (" (fallback)" if row["fallback"] else "")
    return [
        _time(row["attempted_at"]),
        f"{row['recipient_kind']}:{row['recipient_id']}",
        row["topic"],
        channel,
        str(row["attempt"]),
        row["outcome"],
        str(row["latency_ms"]),
        str(peer) if peer else "-",
        row["error_class"] or "-",
        row["identity_release"] or "-",
        row["state"],
    ]


def render(found: list[list[str]]) -> str:
    header = " ".join(name.ljust(width) for name, width in COLUMNS)
    widths = [width for _, width in COLUMNS]
    body = [
        " ".join(value[:width].ljust(width) for value, width in zip(line, widths, strict=True))
        for line in found
    ]
    return "\n".join([header, "-" * len(header), *body])


def deliveries(
    referral_id: Annotated[str, typer.Argument(metavar="REFERRAL_ID")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema", help="Default: AIGUILLAGE_NOTIFICATIONS_DB_SCHEMA, else notifications."
        ),
    ] = None,
) -> None:
    """Every delivery attempt of one referral, oldest first, then what is still pending."""
    settings = settings_or_fail(
        NotificationsSettings, "AIGUILLAGE_NOTIFICATIONS_", **overrides(database_url)
    )
    found = lines(run(fetch(settings.database_url, schema or settings.db_schema, referral_id)))
    if not found:
        fail(f"no notification recorded for {referral_id}", EXIT_REFUSED)
    if as_json:
        for line in found:
            print(json.dumps(dict(zip((name for name, _ in COLUMNS), line, strict=True))))
        return
    print(render(found))


app = typer_app("aiguillage-notifications-log", "Every delivery attempt of one referral.")
app.command()(deliveries)


def run_command() -> None:
    app(prog_name="aiguillage-notifications-log")
