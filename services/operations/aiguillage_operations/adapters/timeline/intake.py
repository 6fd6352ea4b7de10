"""intake's records in the timeline: the referral row, the events intake published (outbox),
identity releases (outcome only, never the identity) and who may receive the identity."""

from __future__ import annotations

from aiguillage_operations.adapters.timeline import (
    Connection,
    Part,
    as_text,
    codes,
    data_of,
    event_of,
    parse_json,
    utc_text,
)
from aiguillage_operations.timeline import Entry, actor

# Fields of intake's accepted referral an operator may see: codes, never identity or places.
_ACCEPTED_CODES = ("judicial_frame", "needed_services", "urgency", "prescriber_kind")


async def intake_part(connection: Connection, referral_id: str) -> Part:
    part = Part()
    row = await connection.fetchrow(
        "SELECT prescriber_id, accepted, received_at, status, closed_at, outside_jurisdiction,"
        " purged_at FROM referrals WHERE referral_id = $1",
        referral_id,
    )
    prescriber = row["prescriber_id"] if row else None
    if row is not None:
        accepted = parse_json(row["accepted"]) or {}
        details = tuple(
            (name, as_text(accepted[name])) for name in _ACCEPTED_CODES if name in accepted
        )
        shown = " ".join(f"{name}={value.replace(', ', ',')}" for name, value in details)
        part.entries.append(
            Entry(
                at=row["received_at"],
                service="intake",
                kind="referral.admitted",
                what=f"referral admitted: {shown}" if shown else "referral admitted",
                actors=actor("prescriber", prescriber),
                why=("outside_jurisdiction",) if row["outside_jurisdiction"] else (),
                record="intake.referrals",
                key="admitted",
                details=details,
            )
        )
        if row["purged_at"] is not None:
            part.entries.append(
                Entry(
                    at=row["purged_at"],
                    service="intake",
                    kind="identity.purged",
                    what="identity crypto-shredded (retention)",
                    actors=("service:intake-purge",),
                    why=("retention",),
                    record="intake.referrals",
                    key="purged",
                )
            )
        state = row["status"] + (f" since {utc_text(row['closed_at'])}" if row["closed_at"] else "")
        part.now.append(("intake", state + (", purged" if row["purged_at"] else "")))
    first_accepted = True
    for out in await connection.fetch(
        "SELECT id, event_id, payload, created_at FROM outbox WHERE key = $1 ORDER BY id",
        referral_id,
    ):
        event = event_of(out["payload"]) or {}
        kind = str(event.get("event_type", "unreadable"))
        data = data_of(event)
        if kind == "referral.accepted" and first_accepted:
            first_accepted = False  # the admission itself, told above from the referral row
            continue
        what = {
            "referral.accepted": "amended referral accepted",
            "referral.cancelled": "cancellation accepted, forwarded to routing",
        }.get(kind, f"published {kind}")
        part.entries.append(
            Entry(
                at=out["created_at"],
                service="intake",
                kind=kind,
                what=what,
                actors=actor("prescriber", data.get("prescriber_id") or prescriber),
                why=codes(data.get("reason")),
                record="intake.outbox",
                key=str(out["id"]),
                event_id=str(out["event_id"]),
                seq=out["id"],
            )
        )
    for release in await connection.fetch(
        "SELECT id, centre_id, outcome, requested_at FROM identity_releases"
        " WHERE referral_id = $1 ORDER BY id",
        referral_id,
    ):
        granted = release["outcome"] == "granted"
        part.entries.append(
            Entry(
                at=release["requested_at"],
                service="intake",
                kind="identity.released" if granted else "identity.refused",
                what=f"identity {'released' if granted else 'refused'} to centre "
                f"{release['centre_id']} (for notifications' offer)",
                actors=actor("centre", release["centre_id"]),
                why=(release["outcome"],),
                record="intake.identity_releases",
                key=str(release["id"]),
                seq=release["id"],
            )
        )
    holder = await connection.fetchrow(
        "SELECT centre_id, state FROM identity_holders WHERE referral_id = $1", referral_id
    )
    if holder is not None:
        part.now.append(
            (
                "intake",
                f"identity may go to centre {holder['centre_id']} ({holder['state']})"
                if holder["centre_id"]
                else "identity may go to no centre",
            )
        )
    return part
