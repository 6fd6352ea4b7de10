"""Dead letters about the referral (the dead-letter topics) and what operators did with them (the
operations schema) in the timeline."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from aiguillage_operations.adapters.timeline import (
    Part,
    codes,
)
from aiguillage_operations.domain import DEAD_LETTER_TOPICS, Action, DeadLetter, unique
from aiguillage_operations.timeline import Entry, actor
from aiguillage_schemas import topics

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
                why=(d.reason, *codes(d.field_path)),
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
