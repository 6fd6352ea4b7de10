"""Use cases of ``aiguillage-dead-letters``: list, show, replay, discard.

The dead letters are read from Kafka every time (the topics are the source of truth; nothing is
copied); what operators did with them is in PostgreSQL. A replay holds a per-dead-letter lock in
PostgreSQL from the status check until its record is written, so two operators replaying the same
dead letter at once publish one copy, and the second is told it was already replayed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from aiguillage_common.codec import sha256_hex
from aiguillage_operations.domain import (
    DEAD_LETTER_TOPICS,
    Action,
    ActionKind,
    AlreadyActed,
    Coordinates,
    DeadLetter,
    DeadLetterStatus,
    Filter,
    Refusal,
    ReplayPlan,
    Selection,
    SourceRecord,
    Status,
    check_replayable,
    plan_replay,
    resolve,
    safe_headers,
    select,
    short_id,
    status_of,
    unique,
)


class SourceUnavailable(Exception):
    """The failed record cannot be read back (retention removed it, topic gone...)."""


@dataclass(frozen=True, slots=True)
class Scan:
    dead_letters: list[DeadLetter]
    missing_topics: list[str] = field(default_factory=list)


class DeadLetterTopics(Protocol):
    async def scan(self, names: Sequence[str]) -> Scan:
        """Every record of the named dead-letter topics (names without the prefix)."""
        ...

    async def fetch(self, location: Coordinates) -> SourceRecord:
        """The record at ``location``; raises ``SourceUnavailable``."""
        ...

    async def publish(self, plan: ReplayPlan) -> Coordinates: ...


class Claim(Protocol):
    """One dead letter, locked for the duration of a decision about it."""

    async def actions(self) -> list[Action]: ...

    async def now(self) -> datetime:
        """The store's clock (PostgreSQL's), the one every recorded action is dated by."""
        ...

    async def record(
        self,
        topic: str,
        kind: ActionKind,
        operator: str,
        reason: str | None = None,
        replayed_to: str | None = None,
        signed: bool | None = None,
        at: datetime | None = None,
    ) -> Action:
        """Record ``kind`` by ``operator``, done ``at`` (default: now)."""
        ...


class ActionStore(Protocol):
    async def history(self, uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Action]]: ...

    def exclusive(self, uid: uuid.UUID) -> AbstractAsyncContextManager[Claim]: ...


async def _statuses(
    store: ActionStore, dead_letters: Sequence[DeadLetter]
) -> dict[uuid.UUID, DeadLetterStatus]:
    history = await store.history([d.uid for d in dead_letters])
    return {d.uid: status_of(history.get(d.uid, ())) for d in dead_letters}


# list


@dataclass(frozen=True, slots=True)
class Listing:
    rows: list[tuple[DeadLetter, DeadLetterStatus]]
    totals: Mapping[Status, int]  # over every dead letter read, before the filter
    missing_topics: list[str]
    # Dead letters whose failed record is itself one of our replays -> the short id of the dead
    # letter that was replayed: replaying those again the same way would fail the same way.
    copy_of: Mapping[uuid.UUID, str] = field(default_factory=dict)


async def list_dead_letters(kafka: DeadLetterTopics, store: ActionStore, wanted: Filter) -> Listing:
    scan = await kafka.scan([wanted.topic] if wanted.topic else DEAD_LETTER_TOPICS)
    dead_letters = unique(scan.dead_letters)
    history = await store.history([d.uid for d in dead_letters])
    statuses = {d.uid: status_of(history.get(d.uid, ())) for d in dead_letters}
    rows = [(d, statuses[d.uid]) for d in dead_letters if wanted.matches(d, statuses[d.uid])]
    rows.sort(key=lambda row: (row[0].at, row[0].location))
    totals = Counter(status.state for status in statuses.values())
    copies = {
        action.replayed_to: short_id(action.dead_letter)
        for actions in history.values()
        for action in actions
        if action.replayed_to
    }
    copy_of = {
        d.uid: copies[str(d.source)] for d in dead_letters if d.source and str(d.source) in copies
    }
    return Listing(rows, dict(totals), scan.missing_topics, copy_of)


# show


@dataclass(frozen=True, slots=True)
class SourceCheck:
    """Whether the failed record can still be replayed; its header names and metadata values."""

    available: bool
    problem: str | None = None
    hash_matches: bool | None = None
    broker_time: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Detail:
    dead_letter: DeadLetter
    status: DeadLetterStatus
    history: list[Action]
    source: SourceCheck | None  # None when there is no source record (failed delivery)


async def show_dead_letter(kafka: DeadLetterTopics, store: ActionStore, given: str) -> Detail:
    scan = await kafka.scan(DEAD_LETTER_TOPICS)
    dead_letter = resolve(unique(scan.dead_letters), given)
    history = (await store.history([dead_letter.uid])).get(dead_letter.uid, [])
    source = None
    if dead_letter.source is not None:
        source = await _check_source(kafka, dead_letter, dead_letter.source)
    return Detail(dead_letter, status_of(history), history, source)


async def _check_source(
    kafka: DeadLetterTopics, dead_letter: DeadLetter, location: Coordinates
) -> SourceCheck:
    try:
        record = await kafka.fetch(location)
    except SourceUnavailable as gone:
        return SourceCheck(False, str(gone))
    text = {name: value.decode("utf-8", errors="replace") for name, value in record.headers}
    return SourceCheck(
        True,
        hash_matches=sha256_hex(record.value) == dead_letter.sha256,
        broker_time=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
        headers=safe_headers(text),
    )


# replay

ReplayResult = Literal["replayed", "planned", "skipped", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    dead_letter: DeadLetter
    result: ReplayResult
    detail: str
    copy: Coordinates | None = None
    signed: bool = False

    @property
    def ok(self) -> bool:
        return self.result in ("replayed", "planned", "skipped")


async def replay(
    kafka: DeadLetterTopics,
    store: ActionStore,
    selection: Selection,
    *,
    operator: str,
    secret: bytes | None,
    again: bool = False,
    dry_run: bool = False,
) -> list[ReplayOutcome]:
    """Put the selected dead letters' original records back on their topics, once each.

    Publishing comes before recording: a crash in between leaves the dead letter open and a
    second replay publishes another copy, which the consumers deduplicate by event id; the
    reverse order could record a replay that never happened.
    """
    names = [selection.topic] if selection.topic else DEAD_LETTER_TOPICS
    dead_letters = unique((await kafka.scan(names)).dead_letters)
    statuses = await _statuses(store, dead_letters)
    outcomes: list[ReplayOutcome] = []
    for dead_letter in select(dead_letters, statuses, selection):
        async with store.exclusive(dead_letter.uid) as claim:
            outcomes.append(
                await _replay_one(kafka, claim, dead_letter, operator, secret, again, dry_run)
            )
    return outcomes


async def _replay_one(
    kafka: DeadLetterTopics,
    claim: Claim,
    dead_letter: DeadLetter,
    operator: str,
    secret: bytes | None,
    again: bool,
    dry_run: bool,
) -> ReplayOutcome:
    # Read again under the lock: another operator may have acted since the listing.
    status = status_of(await claim.actions())
    try:
        check_replayable(dead_letter, status, again)
    except AlreadyActed as done:
        return ReplayOutcome(dead_letter, "skipped", str(done))
    except Refusal as refusal:
        return ReplayOutcome(dead_letter, "refused", str(refusal))
    assert dead_letter.source is not None
    try:
        source = await kafka.fetch(dead_letter.source)
    except SourceUnavailable as gone:
        return ReplayOutcome(dead_letter, "failed", str(gone))
    # One time for the replay, the store's (PostgreSQL's), read before publishing: its signature
    # is checked against the broker's append time, and what the replayed record causes (an
    # admission, a decision) is recorded after it by the database's clock, so a timeline reads in
    # order; an operator's own clock (a laptop) may be off.
    published_at = await claim.now()
    try:
        plan = plan_replay(dead_letter, source, secret, int(published_at.timestamp()))
    except Refusal as refusal:
        return ReplayOutcome(dead_letter, "refused", str(refusal))
    if dry_run:
        return ReplayOutcome(
            dead_letter, "planned", f"would publish to {plan.topic}:{plan.partition}"
        )
    copy = await kafka.publish(plan)
    await claim.record(
        dead_letter.topic,
        "replayed",
        operator,
        replayed_to=str(copy),
        signed=plan.signed,
        at=published_at,
    )
    return ReplayOutcome(dead_letter, "replayed", f"copy at {copy}", copy, plan.signed)


# discard


@dataclass(frozen=True, slots=True)
class DiscardOutcome:
    dead_letter: DeadLetter
    discarded: bool  # False: it already was, nothing recorded
    status: DeadLetterStatus


async def discard(
    kafka: DeadLetterTopics, store: ActionStore, given: str, reason: str, operator: str
) -> DiscardOutcome:
    if not reason.strip():
        raise Refusal("a discard needs a reason")
    scan = await kafka.scan(DEAD_LETTER_TOPICS)
    dead_letter = resolve(unique(scan.dead_letters), given)
    async with store.exclusive(dead_letter.uid) as claim:
        status = status_of(await claim.actions())
        if status.state == "discarded":
            return DiscardOutcome(dead_letter, False, status)
        await claim.record(dead_letter.topic, "discarded", operator, reason=reason.strip())
        return DiscardOutcome(dead_letter, True, status_of(await claim.actions()))
