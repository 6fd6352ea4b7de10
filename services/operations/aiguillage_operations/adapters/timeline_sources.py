"""Where ``aiguillage timeline`` reads one referral's story: each service's own records.

- intake (its schema): the referral row, the events it published (outbox), identity releases
  (outcome only) and who may receive the identity;
- routing (its schema): decisions, the events it published (placed, path reported, waiting
  positions, withdrawn), current holds, waiting entry and state;
- notifications (its schema): every delivery attempt and what is still pending (the same query as
  ``aiguillage deliveries``);
- centres' messages on ``centres.responses`` (the key's partition): who answered the offer or
  reported the path (centre, site, the ``actor`` when the sender named one), and whether routing
  handled it (routing's inbox) or refused it (a dead letter names it);
- dead letters about the referral (the dead-letter topics) and what operators did with them
  (the operations schema).

Each reader picks fields by name and turns them into codes and ids: no record is passed through,
so identity, clinical content and free text (a decline's text, an operator's discard reason,
routing's explanations) never reach the output.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from aiguillage_operations.domain import DEAD_LETTER_TOPICS, Action, DeadLetter, unique
from aiguillage_operations.timeline import Entry, actor
from aiguillage_schemas import topics
from aiguillage_schemas.signing import KEY_ID_HEADER
from notifications.adapters.postgres import read_delivery_log
from routing.adapters.postgres import read_decisions
from routing.use_cases.ports import CONSUMER as ROUTING_CONSUMER
from routing.use_cases.ports import derived_id

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# Fields of intake's accepted referral an operator may see: codes, never identity or places.
_ACCEPTED_CODES = ("judicial_frame", "needed_services", "urgency", "prescriber_kind")
CENTRES_CONSUMER = ROUTING_CONSUMER + ".centres"  # routing's inbox name for centre messages


@dataclass
class Part:
    """What one source found: entries, where things stand now, and what it could not read."""

    entries: list[Entry] = field(default_factory=list)
    now: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8")
    return json.loads(value) if isinstance(value, str) else value


def _text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _event(payload: Any) -> dict[str, Any] | None:
    try:
        event = _json(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def _code(value: Any) -> tuple[str, ...]:
    return (str(value),) if value not in (None, "") else ()


def _site(data: Mapping[str, Any]) -> Mapping[str, Any]:
    site = data.get("site")
    return site if isinstance(site, Mapping) else {}


# intake


async def intake_part(connection: Connection, referral_id: str) -> Part:
    part = Part()
    row = await connection.fetchrow(
        "SELECT prescriber_id, accepted, received_at, status, closed_at, outside_jurisdiction,"
        " purged_at FROM referrals WHERE referral_id = $1",
        referral_id,
    )
    prescriber = row["prescriber_id"] if row else None
    if row is not None:
        accepted = _json(row["accepted"]) or {}
        details = tuple(
            (name, _text(accepted[name])) for name in _ACCEPTED_CODES if name in accepted
        )
        codes = " ".join(f"{name}={value.replace(', ', ',')}" for name, value in details)
        part.entries.append(
            Entry(
                at=row["received_at"],
                service="intake",
                kind="referral.admitted",
                what=f"referral admitted: {codes}" if codes else "referral admitted",
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
        state = row["status"] + (f" since {_time(row['closed_at'])}" if row["closed_at"] else "")
        part.now.append(("intake", state + (", purged" if row["purged_at"] else "")))
    first_accepted = True
    for out in await connection.fetch(
        "SELECT id, event_id, payload, created_at FROM outbox WHERE key = $1 ORDER BY id",
        referral_id,
    ):
        event = _event(out["payload"]) or {}
        kind = str(event.get("event_type", "unreadable"))
        data = _data(event)
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
                why=_code(data.get("reason")),
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


# routing


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
        why = _code(decision["reason"])
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
        entry = _routing_event(out)
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
        "SELECT status, site_id, attempt, tried, answer_by FROM referrals WHERE referral_id = $1",
        referral_id,
    )
    if state is not None:
        said = f"{state['status']}" + (f" at {state['site_id']}" if state["site_id"] else "")
        said += f", attempt {state['attempt']}, tried {_text(state['tried']) or '-'}"
        if state["answer_by"] is not None:
            said += f", answer by {_time(state['answer_by'])}"
        part.now.append(("routing", said))
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


def _routing_event(out: asyncpg.Record) -> Entry | None:
    event = _event(out["payload"]) or {}
    kind = str(event.get("event_type", "unreadable"))
    if kind in ("referral.routed", "referral.unroutable", "referral.escalated"):
        return None  # the decision rows tell these, with more
    data = _data(event)
    site = _site(data)
    site_id, centre_id = site.get("site_id"), site.get("centre_id")
    what, why = f"published {kind}", _code(data.get("reason"))
    actors: tuple[str, ...] = ("service:routing",)
    if kind == "referral.placed":
        what = f"placed at {site_id}"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
    elif kind == "referral.path_reported":
        what = f"path reported at {site_id}: {data.get('report')}"
        actors = (*actor("centre", centre_id), *actor("site", site_id))
        why = (
            *_code(data.get("report")),
            *_code(data.get("termination_reason")),
            *(("justified",) if data.get("justified") is True else ()),
            *(("unjustified",) if data.get("justified") is False else ()),
            *_code(data.get("module")),
        )
    elif kind == "referral.waitlisted":
        what = (
            f"waiting position {data.get('position')} at {site_id} "
            f"for {data.get('service')} told to the prescriber"
        )
    elif kind == "referral.withdrawn":
        what = "withdrawn" + (f" from {site_id}" if site_id else "")
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


# notifications


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
                    *_code(row["error_class"]),
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
                f"{_time(row['next_attempt_at'])}{held}",
            )
        )
    return part


# centres' messages (Kafka) and routing's inbox


@dataclass(frozen=True, slots=True)
class CentreRecord:
    """A record of ``centres.responses``, as the Kafka adapter read it."""

    location: str  # topic:partition:offset, as dead letters name their source
    offset: int
    timestamp_ms: int
    value: bytes | None
    headers: Mapping[str, str]


async def centre_part(
    records: Sequence[CentreRecord] | None,
    routing: Connection,
    refused: Mapping[str, str],
) -> Part:
    """``refused``: event id or coordinates of a refused record -> the dead letter's reason."""
    part = Part()
    if records is None:
        part.notes.append(f"topic {topics.CENTRE_RESPONSES.name} does not exist")
        return part
    events = [(record, _event(record.value)) for record in records]
    ids = [str(e["event_id"]) for _, e in events if e and _uuid(e.get("event_id"))]
    handled = {
        str(row["event_id"]): row["processed_at"]
        for row in await routing.fetch(
            "SELECT event_id, processed_at FROM processed_events"
            " WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            CENTRES_CONSUMER,
            ids,
        )
    }
    for record, event in events:
        broker_time = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        if event is None:
            part.entries.append(
                Entry(
                    at=broker_time,
                    service="centre",
                    kind="centre.unreadable",
                    what="unreadable record on centres.responses",
                    record="kafka:centres.responses",
                    key=str(record.offset),
                )
            )
            continue
        event_id = str(event.get("event_id"))
        part.entries.append(_centre_entry(record, event, event_id, handled, refused, broker_time))
    return part


def _centre_entry(
    record: CentreRecord,
    event: Mapping[str, Any],
    event_id: str,
    handled: Mapping[str, datetime],
    refused: Mapping[str, str],
    broker_time: datetime,
) -> Entry:
    data = _data(event)
    centre, site = data.get("centre_id"), data.get("site_id")
    who = data.get("actor")
    acting = (
        actor(str(who.get("kind")), who.get("id")) if isinstance(who, Mapping) else ()
    )  # the portal user or operator, when the sender named one
    key_id = record.headers.get(KEY_ID_HEADER)
    if event.get("event_type") == "centre.offer_answered":
        answer = str(data.get("answer"))
        kind = f"centre.{answer}"
        what = f"centre {centre} {answer} the offer at {site}"
        why = _code(data.get("decline_reason"))
    else:
        kind = "centre.path_report"
        what = f"centre {centre} reported {data.get('report')} at {site}"
        why = (*_code(data.get("report")), *_code(data.get("termination_reason")))
    at = broker_time
    refusal = refused.get(event_id) or refused.get(record.location)
    if event_id in handled:
        at = handled[event_id]  # when routing took it, on the database's clock like its effects
    elif refusal:
        what += f" - REFUSED by routing ({refusal})"
        why = (*why, refusal)
    else:
        what += " - not handled by routing (yet)"
    return Entry(
        at=at,
        service="centre",
        kind=kind,
        what=what,
        actors=(*actor("centre", centre), *actor("site", site), *acting),
        why=why,
        record="kafka:centres.responses",
        key=f"{record.offset}",
        event_id=event_id,
        aka=(record.location,),
        seq=record.offset,
        details=(("sender_key", key_id),) if key_id else (),
    )


def _uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# dead letters and operators' actions


_DEAD_LETTER_SERVICE = {
    topics.REJECTED.name: "intake",
    topics.INTAKE_DEAD_LETTER.name: "intake",
    topics.ROUTING_DEAD_LETTER.name: "routing",
    topics.NOTIFICATIONS_DEAD_LETTER.name: "notifications",
}
assert set(_DEAD_LETTER_SERVICE) == set(DEAD_LETTER_TOPICS)


def about(dead_letters: Sequence[DeadLetter], referral_id: str) -> list[DeadLetter]:
    return [d for d in unique(dead_letters) if d.subject == referral_id]


def refused_events(dead_letters: Sequence[DeadLetter]) -> dict[str, str]:
    """Event id and coordinates of each record a dead letter is about -> its reason (a record
    sent without an event id header is known by its coordinates only)."""
    refused = {str(d.source): d.reason for d in dead_letters if d.source}
    refused |= {str(d.original_event_id): d.reason for d in dead_letters if d.original_event_id}
    return refused


def dead_letter_part(
    dead_letters: Sequence[DeadLetter], history: Mapping[uuid.UUID, list[Action]]
) -> Part:
    part = Part()
    for d in dead_letters:
        what = (
            f"dead letter {d.short_id} on {d.topic}: {d.reason}"
            if d.kind != "referral.rejected"
            else f"input refused ({d.short_id} on {d.topic}): {d.reason}"
        )
        part.entries.append(
            Entry(
                at=d.at,
                service=_DEAD_LETTER_SERVICE.get(d.topic, "operations"),
                kind=str(d.kind),
                what=what,
                actors=(*actor("service", d.consumer), *actor("prescriber", d.prescriber_id)),
                why=(d.reason, *_code(d.field_path)),
                record=f"kafka:{d.topic}",
                key=str(d.uid),
                event_id=str(d.uid),
                cause=str(d.original_event_id or d.source or "") or None,
                details=(("source", str(d.source)),) if d.source else (),
            )
        )
        for index, action in enumerate(history.get(d.uid, [])):
            done = (
                f"replayed dead letter {d.short_id} to {action.replayed_to}"
                if action.kind == "replayed"
                else f"discarded dead letter {d.short_id}"  # the operator's words stay out
            )
            part.entries.append(
                Entry(
                    at=action.at,
                    service="operations",
                    kind=f"dead_letter.{action.kind}",
                    what=done,
                    actors=actor("operator", action.operator),
                    why=(d.reason,),
                    record="operations.dead_letter_actions",
                    key=f"{d.uid}/{index}",
                    seq=index,
                )
            )
    return part


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"
