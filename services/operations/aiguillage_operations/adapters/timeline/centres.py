"""Centres' messages in the timeline: the records of ``centres.responses`` about the referral (who
answered or reported: centre, site, the ``actor`` the record names), with whether routing handled
them (its inbox) or refused them (a dead letter names them)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiguillage_operations.adapters.timeline import (
    Connection,
    Part,
    codes,
    data_of,
    event_of,
)
from aiguillage_operations.timeline import Entry, actor
from aiguillage_schemas import topics
from aiguillage_schemas.signing import KEY_ID_HEADER
from routing.use_cases.ports import CONSUMER as ROUTING_CONSUMER

CENTRES_CONSUMER = ROUTING_CONSUMER + ".centres"  # routing's inbox name for centre messages


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
    events = [(record, event_of(record.value)) for record in records]
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
        part.entries.append(centre_entry(record, event, event_id, handled, refused, broker_time))
    return part


def centre_entry(
    record: CentreRecord,
    event: Mapping[str, Any],
    event_id: str,
    handled: Mapping[str, datetime],
    refused: Mapping[str, str],
    broker_time: datetime,
) -> Entry:
    data = data_of(event)
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
        why = codes(data.get("decline_reason"))
    else:
        kind = "centre.path_report"
        what = f"centre {centre} reported {data.get('report')} at {site}"
        why = (*codes(data.get("report")), *codes(data.get("termination_reason")))
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
