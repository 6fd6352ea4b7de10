"""notifications' records in the timeline: notifications with no channel, every delivery attempt
(the query of ``aiguillage deliveries``) and what is still pending."""

from __future__ import annotations

from aiguillage_operations.adapters.timeline import (
    Connection,
    Part,
    codes,
    utc_text,
)
from aiguillage_operations.timeline import Entry
from notifications.adapters.postgres import read_delivery_log


async def notifications_part(connection: Connection, referral_id: str) -> Part:
    part = Part()
    for index, row in enumerate(
        await connection.fetch(
            "SELECT n.notification_id, n.recipient_kind, n.recipient_id, n.topic, n.created_at,"
            " (SELECT count(*) FROM deliveries d WHERE d.notification_id = n.notification_id)"
            " AS channels FROM notifications n WHERE n.referral_id = $1"
            " ORDER BY n.created_at, n.notification_id",
            referral_id,
        )
    ):
        if row["channels"]:
            continue  # its delivery attempts tell it (recorded in the same transaction)
        recipient = f"{row['recipient_kind']}:{row['recipient_id']}"
        part.entries.append(
            Entry(
                at=row["created_at"],
                service="notifications",
                kind="notification.decided",
                what=f"{row['topic']} for {recipient}: no channel configured, not sent",
                actors=(recipient,),
                why=("no_channel",),
                record="notifications.notifications",
                key=str(row["notification_id"]),
                seq=index,
            )
        )
    log = await read_delivery_log(connection, referral_id)
    for index, row in enumerate(log.attempts):
        recipient = f"{row['recipient_kind']}:{row['recipient_id']}"
        channel = row["channel"] + (" (fallback)" if row["fallback"] else "")
        peer = row["http_status"] or row["smtp_code"]
        part.entries.append(
            Entry(
                at=row["attempted_at"],
                service="notifications",
                kind=f"delivery.{row['outcome']}",
                what=f"{row['topic']} to {recipient} by {channel}, try {row['attempt']}: "
                f"{row['outcome']}" + (f" ({peer})" if peer else ""),
                actors=(recipient,),
                why=(
                    *codes(row["error_class"]),
                    *((f"identity_{row['identity_release']}",) if row["identity_release"] else ()),
                ),
                record="notifications.delivery_attempts",
                key=f"{row['delivery_id']}/{row['attempt']}/{index}",
                seq=index,
            )
        )
    for row in log.pending:
        recipient = f"{row['recipient_kind']}:{row['recipient_id']}"
        held = f", held x{row['identity_waits']} for the identity" if row["identity_waits"] else ""
        part.now.append(
            (
                "notifications",
                f"pending: {row['topic']} to {recipient} by {row['channel']}, next try "
                f"{utc_text(row['next_attempt_at'])}{held}",
            )
        )
    return part
