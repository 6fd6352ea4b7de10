"""``aiguillage-notifications-log <referral_id>``: every delivery attempt of one referral.

For operators answering "was the centre told?": one line per attempt, oldest first, with the
recipient, channel, outcome, latency and what the peer answered. Reads PostgreSQL only; prints no
message content (the reference is the only thing the operator gives and gets back).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import asyncpg

QUERY = """
SELECT a.attempted_at, n.recipient_kind, n.recipient_id, n.topic, d.channel, d.delivery_id,
       d.fallback_for IS NOT NULL AS fallback, a.attempt, a.outcome, a.latency_ms,
       a.error_class, a.http_status, a.smtp_code, a.identity_release, d.state
FROM notifications n
JOIN deliveries d ON d.notification_id = n.notification_id
JOIN delivery_attempts a ON a.delivery_id = d.delivery_id
WHERE n.referral_id = $1
ORDER BY a.attempted_at, a.id
"""
# Every delivery still pending, with when it is tried next: not attempted yet, retrying, or held
# for the identity (how many tries, since when).
PENDING = """
SELECT n.recipient_kind, n.recipient_id, n.topic, d.channel, d.state, d.next_attempt_at,
       d.fallback_for IS NOT NULL AS fallback, d.attempts, d.identity_waits,
       d.identity_wait_since
FROM notifications n JOIN deliveries d ON d.notification_id = n.notification_id
WHERE n.referral_id = $1 AND d.state = 'pending'
ORDER BY d.next_attempt_at, d.created_at
"""
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


async def fetch(database_url: str, schema: str, referral_id: str) -> list[list[str]]:
    connection = await asyncpg.connect(
        database_url, timeout=10, server_settings={"search_path": schema}
    )
    try:
        rows = await connection.fetch(QUERY, referral_id)
        waiting = await connection.fetch(PENDING, referral_id)
    finally:
        await connection.close()
    lines = [_attempt_line(row) for row in rows]
    lines += [_pending_line(row) for row in waiting]
    return lines


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


def render(lines: list[list[str]]) -> str:
    header = " ".join(name.ljust(width) for name, width in COLUMNS)
    widths = [width for _, width in COLUMNS]
    body = [
        " ".join(value[:width].ljust(width) for value, width in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join([header, "-" * len(header), *body])


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("referral_id")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "AIGUILLAGE_NOTIFICATIONS_DATABASE_URL",
            os.environ.get(
                "AIGUILLAGE_DATABASE_URL",
                "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage",
            ),
        ),
    )
    parser.add_argument(
        "--schema", default=os.environ.get("AIGUILLAGE_NOTIFICATIONS_DB_SCHEMA", "notifications")
    )
    args = parser.parse_args()
    try:
        lines = asyncio.run(fetch(args.database_url, args.schema, args.referral_id))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        # One line, no traceback; host and port only (the URL holds a password).
        where = urlsplit(args.database_url)
        sys.exit(
            f"cannot use PostgreSQL at {where.hostname}:{where.port or 5432} "
            f"(schema {args.schema}): {type(error).__name__}: {error}"
        )
    if not lines:
        print(f"no notification recorded for {args.referral_id}")
        sys.exit(1)
    print(render(lines))
