"""One referral's story across the services, in time order. Pure: no I/O.

Each source (intake's tables, routing's, notifications', the dead-letter topics, the centres'
messages; the portal's actions later) turns its own records into ``Entry`` values; ``merge`` puts
them in one order and ``link_causes`` says why a step happened when its cause is another entry
(a re-route after a centre's decline). A new source is one more adapter producing entries: nothing
here changes.

What an entry may hold: times, pseudonymous ids (referral, prescriber, centre, site, portal user),
codes (reason, judicial frame, needs, outcome). Never identity nor free text: the sources choose
fields from their records by name, never pass a record through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

# Order of services at the same instant: upstream first (a referral is admitted, then routed,
# then notified; an operator acts on a dead letter after it exists). Unknown sources go last.
STAGES: dict[str, int] = {
    "intake": 0,
    "centre": 1,
    "routing": 2,
    "notifications": 3,
    "portal": 4,
    "operations": 5,
}


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime  # aware
    service: str  # whose record this is: intake, routing, notifications, operations, portal…
    kind: str  # stable code, e.g. "decision.routed", "centre.declined", "delivery.attempt"
    what: str  # one short line for people
    actors: tuple[str, ...] = ()  # "kind:id": prescriber:…, centre:…, site:…, centre_user:…
    why: tuple[str, ...] = ()  # reason codes
    record: str = ""  # where it was read: "routing.decisions", "kafka:centres.responses"…
    key: str = ""  # unique within ``record`` (row id, event id): duplicates are dropped
    event_id: str | None = None  # the event this entry is, if any (others may name it as cause)
    aka: tuple[str, ...] = ()  # other names of that event (its topic:partition:offset)
    cause: str | None = None  # the event that caused this entry, if known
    seq: int = 0  # position in its source, for entries at the same instant
    details: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # codes and ids only

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.astimezone(UTC).isoformat(),
            "service": self.service,
            "kind": self.kind,
            "what": self.what,
            "actors": list(self.actors),
            "why": list(self.why),
            "record": self.record,
            "event_id": self.event_id,
            "cause": self.cause,
            **({"details": dict(self.details)} if self.details else {}),
        }


def actor(kind: str, ident: object | None) -> tuple[str, ...]:
    """``("kind:id",)``, or nothing when the id is unknown."""
    return (f"{kind}:{ident}",) if ident not in (None, "") else ()


def sort_key(entry: Entry) -> tuple[datetime, int, int, str, str]:
    return (entry.at, STAGES.get(entry.service, len(STAGES)), entry.seq, entry.record, entry.key)


def merge(sources: Iterable[Iterable[Entry]]) -> list[Entry]:
    """Every entry once (by record and key), oldest first; at the same instant upstream services
    first, then each source's own order."""
    seen: dict[tuple[str, str], Entry] = {}
    for source in sources:
        for entry in source:
            seen.setdefault((entry.record, entry.key or repr(entry)), entry)
    return sorted(seen.values(), key=sort_key)


def link_causes(entries: Sequence[Entry]) -> list[Entry]:
    """An entry caused by another one (by event id) gets that entry's kind and reasons in its
    ``why``: a decision caused by a centre's decline reads "why: centre.declined no_capacity"."""
    by_event = {name: e for e in entries for name in (e.event_id, *e.aka) if name}
    linked: list[Entry] = []
    for entry in entries:
        cause = by_event.get(entry.cause) if entry.cause else None
        if cause is not None and cause is not entry:
            added = tuple(w for w in (cause.kind, *cause.why) if w not in entry.why)
            entry = replace(entry, why=(*entry.why, *added))
        linked.append(entry)
    return linked


@dataclass(frozen=True, slots=True)
class Timeline:
    referral_id: str
    entries: list[Entry]
    # Where things stand now, per service (status, site, holds, waiting list): one line each.
    now: list[tuple[str, str]] = field(default_factory=list)
    # What could not be read, or may be missing (topic retention…): said, never hidden.
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.entries and not self.now


def build(
    referral_id: str,
    sources: Iterable[Iterable[Entry]],
    now: Iterable[tuple[str, str]] = (),
    notes: Iterable[str] = (),
) -> Timeline:
    return Timeline(referral_id, link_causes(merge(sources)), list(now), list(notes))
