"""routing's records in the timeline: decisions, the events routing published (placed, path
reported, waiting positions, withdrawn), current holds, waiting entry and state."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from aiguillage_operations.adapters.timeline import (
    Connection,
    Part,
    as_text,
    codes,
    data_of,
    event_of,
    site_of,
    utc_text,
)
from aiguillage_operations.timeline import Entry, actor
from routing.adapters.postgres import read_decisions
from routing.use_cases.ports import derived_id

_DECISION_TEXT = {
    "routed": "offered to {site} (attempt {attempt}, {km} km)",
    "waitlisted": "put on the waiting list of {site} (attempt {attempt})",
    "unroutable": "unroutable (attempt {attempt})",
    "escalated": "escalated to a coordinator (attempt {attempt})",
}


async def routing_part(connection: Connection, referral_id: str) -> Part:
    part = Part()
    for decision in await read_decisions(connection, referral_id):
        attempt = int(decision["attempt"])
        why = codes(decision["reason"])
        if decision["caused_by_event_id"] == str(
            derived_id("offer-timeout", referral_id, attempt - 1)
        ):
            why = (*why, "offer_expired")  # the timer's cause id: no answer in time
        km = decision["distance_km"]
        part.entries.append(
            Entry(
                at=datetime.fromisoformat(decision["decided_at"]),
                service="routing",
                kind=f"decision.{decision['outcome']}",
                what=_DECISION_TEXT.get(decision["outcome"], "decided {outcome}").format(
                    site=decision["site_id"] or "-",
                    attempt=attempt,
                    km="?" if km is None else f"{km:.1f}",
                    outcome=decision["outcome"],
                ),
                actors=("service:routing",),
                why=why,
                record="routing.decisions",
                key=decision["decision_id"],
                event_id=decision["decision_id"],
                cause=decision["caused_by_event_id"],
                seq=attempt,
                details=tuple(
                    (name, str(decision[name]))
                    for name in ("site_id", "centre_id", "policy_version")
                    if decision[name]
                ),
            )
        )
    for out in await connection.fetch(
        "SELECT id, event_id, payload, created_at FROM outbox WHERE key = $1 ORDER BY id",
        referral_id,
    ):
        entry = routing_event(out)
        if entry is not None:
            part.entries.append(entry)
    for hold in await connection.fetch(
        "SELECT site_id, service, held_at FROM holds WHERE referral_id = $1 ORDER BY held_at",
        referral_id,
    ):
        part.entries.append(
            Entry(
                at=hold["held_at"],
                service="routing",
                kind="place.held",
                what=f"place held at {hold['site_id']} for {hold['service']} (still held)",
                actors=("service:routing",),
                record="routing.holds",
                key=f"{hold['site_id']}/{hold['service']}",
            )
        )
    state = await connection.fetchrow(
        "SELECT status, site_id, attempt, tried, answer_by, housing_site_id, housing_status"
        " FROM referrals WHERE referral_id = $1",
        referral_id,
    )
    if state is not None:
        said = f"{state['status']}" + (f" at {state['site_id']}" if state["site_id"] else "")
        said += f", attempt {state['attempt']}, tried {as_text(state['tried']) or '-'}"
        if state["answer_by"] is not None:
            said += f", answer by {utc_text(state['answer_by'])}"
        part.now.append(("routing", said))
        if state["housing_status"] is not None:  # a split: the housing leg at the platform
            part.now.append(
                ("routing", f"housing {state['housing_status']} at {state['housing_site_id']}")
            )
    waiting = await connection.fetchrow(
        "SELECT site_id, service, told_position FROM waitlist WHERE referral_id = $1", referral_id
    )
    if waiting is not None:
        part.now.append(
            (
                "routing",
                f"waiting at {waiting['site_id']} for {waiting['service']}, "
                f"position told {waiting['told_position'] or '-'}",
            )
        )
    return part


def routing_event(out: asyncpg.Record) -> Entry | None:
    event = event_of(out["payload"]) or {}
    kind = str(event.get("event_type", "unreadable"))
    if kind in ("referral.routed", "referral.unroutable", "referral.escalated"):
        return None  # the decision rows tell these, with more
    data = data_of(event)
    site = site_of(data)
    site_id, centre_id = site.get("site_id"), site.get("centre_id")
    what, why = f"published {kind}", codes(data.get("reason"))
    actors: tuple[str, ...] = ("service:routing",)
    if kind == "referral.placed":
        what = f"placed at {site_id}"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
    elif kind == "referral.path_reported":
        what = f"path reported at {site_id}: {data.get('report')}"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
        why = (
            *codes(data.get("report")),
            *codes(data.get("termination_reason")),
            *(("justified",) if data.get("justified") is True else ()),
            *(("unjustified",) if data.get("justified") is False else ()),
            *codes(data.get("module")),
        )
    elif kind == "referral.waitlisted":
        what = (
            f"waiting position {data.get('position')} at {site_id} "
            f"for {data.get('service')} told to the prescriber"
        )
    elif kind == "referral.withdrawn":
        what = "withdrawn" + (f" from {site_id}" if site_id else "")
    elif kind == "referral.housing_offered":
        care = site_of({"site": data.get("care_site")}).get("site_id")
        what = f"housing offered to {site_id}, care at {care} (split)"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
    elif kind == "referral.housing_updated":
        what = f"housing at {site_id}: {data.get('outcome')}"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
        why = (*codes(data.get("outcome")), *(("escalated",) if data.get("escalated") else ()))
    return Entry(
        at=out["created_at"],
        service="routing",
        kind=kind,
        what=what,
        actors=actors,
        why=why,
        record="routing.outbox",
        key=str(out["id"]),
        event_id=str(out["event_id"]),
        seq=out["id"],
    )
