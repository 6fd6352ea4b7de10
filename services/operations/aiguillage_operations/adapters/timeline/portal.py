"""The portal's records in the timeline: who was shown the person's identity, from the portal's
audit log (the centre user, their centre, and whether intake granted it).

Centre users' answers and path reports are told from ``centres.responses`` (``centres``), and the
operators' replays and discards from the operations schema (``dead_letters``); their audit rows
would say the same twice. Operators reading a timeline are not steps of the referral. Only codes
and pseudonymous ids are taken from the row: never the e-mail, the address nor the detail as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiguillage_operations.adapters.timeline import Connection, Part, codes, parse_json
from aiguillage_operations.timeline import Entry, actor

_TOLD = ("identity_viewed",)


async def portal_part(connection: Connection, referral_id: str) -> Part:
    part = Part()
    if not await connection.fetchval("SELECT to_regclass('audit_log') IS NOT NULL"):
        part.notes.append("no portal schema: identity views on the portal are not shown")
        return part
    rows = await connection.fetch(
        "SELECT id, at, user_id, action, outcome, detail FROM audit_log"
        " WHERE referral_id = $1 AND action = ANY($2::text[]) ORDER BY id",
        referral_id,
        list(_TOLD),
    )
    for row in rows:
        detail: Mapping[str, Any] = parse_json(row["detail"]) or {}
        granted = row["outcome"] == "granted"
        centre = detail.get("centre_id")
        part.entries.append(
            Entry(
                at=row["at"],
                service="portal",
                kind="portal.identity_shown" if granted else "portal.identity_refused",
                what=(
                    "identity shown on the offer page"
                    if granted
                    else "identity not shown on the offer page"
                ),
                actors=(
                    *actor("centre_user", f"u:{row['user_id']}" if row["user_id"] else None),
                    *actor("centre", centre if isinstance(centre, str) else None),
                ),
                why=tuple(dict.fromkeys((row["outcome"], *codes(detail.get("reason"))))),
                record="portal.audit_log",
                key=str(row["id"]),
                seq=int(row["id"]),
            )
        )
    return part
