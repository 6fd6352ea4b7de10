"""Dead letters as an operator sees them: what they are, their status, and how to replay one. Pure.

A dead letter is a record on a dead-letter topic (``routing.dead-letter``, ``intake.dead-letter``,
``notifications.dead-letter``) or one of intake's rejections (``referrals.rejected``). It carries
the *coordinates* and the SHA-256 of the record that failed, never the record itself (a poison
message could hold anything, identity included). Replaying one means reading the original at
those coordinates, checking its hash, and publishing it again with its key, value and headers.

Everything here is free of I/O so that ids, filters, status and the replay plan are unit-tested;
the adapters read Kafka and PostgreSQL, the use cases put the two together.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from aiguillage_common.codec import InvalidMessage, decode_event, sha256_hex
from aiguillage_common.replay_headers import (
    REPLAY_HEADERS,
    REPLAY_OF_HEADER,
    REPLAY_SIGNATURE_HEADER,
    REPLAY_TIMESTAMP_HEADER,
    original_timestamp_ms,
    replay_headers,
)
from aiguillage_schemas import topics
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.notifications import NotificationDeliveryFailed
from aiguillage_schemas.events.referral_lifecycle import MessageDeadLettered, ReferralRejected
from aiguillage_schemas.signing import KEY_ID_HEADER, TIMESTAMP_HEADER
from aiguillage_schemas.vocabulary import RejectionReason

# Where dead letters live, in the order they are listed.
DEAD_LETTER_TOPICS: tuple[str, ...] = (
    topics.REJECTED.name,
    topics.INTAKE_DEAD_LETTER.name,
    topics.ROUTING_DEAD_LETTER.name,
    topics.NOTIFICATIONS_DEAD_LETTER.name,
)
_DEAD_LETTER_EVENTS: tuple[type[Envelope], ...] = (
    ReferralRejected,
    MessageDeadLettered,
    NotificationDeliveryFailed,
)
# Ids of records on a dead-letter topic that are not a dead letter we can read (they have no
# event id to go by, so theirs is derived from where they are).
_UNREADABLE_IDS = uuid.UUID("3c2b8f0e-6d1a-4e7b-9a55-0f4e2d7c1b93")
SHORT_ID_LENGTH = 10
MIN_PREFIX_LENGTH = 4
UNREADABLE = "unreadable_dead_letter"

Status = Literal["open", "replayed", "discarded"]
StatusFilter = Literal["open", "replayed", "discarded", "all"]
ActionKind = Literal["replayed", "discarded"]


class Kind(StrEnum):
    REJECTION = "referral.rejected"  # intake refused an input (prescriber-facing)
    DEAD_LETTER = "message.dead_lettered"  # an internal consumer gave up on a record
    DELIVERY_FAILED = "notification.delivery_failed"  # a notification missed one channel
    UNREADABLE = "unreadable"  # not a dead letter this tool understands


@dataclass(frozen=True, slots=True, order=True)
class Coordinates:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What an operator may see of a dead letter: no payload and no human message, which could
    quote input; the reason code and the field path say what went wrong and where."""

    uid: uuid.UUID  # the dead letter's event id: stable, and the same if it was published twice
    topic: str  # the dead-letter topic, without the deployment's prefix
    location: Coordinates  # where the dead letter itself is
    kind: Kind
    reason: str
    field_path: str | None
    at: datetime  # when it was dead-lettered
    subject: str  # the record's key: a referral id, or "unknown" when it was not one
    source: Coordinates | None  # the record that failed; None for a failed delivery
    sha256: str | None  # of the failed record's value
    consumer: str | None  # who gave up on it
    original_event_id: uuid.UUID | None = None
    prescriber_id: str | None = None  # an institution, named only once it was authenticated
    correlation_id: uuid.UUID | None = None
    # Failed deliveries: channel, error class, attempts (codes and counts only).
    delivery: Mapping[str, str] = field(default_factory=dict)
    # The dead-letter record's own headers (event type, ids, source): metadata only.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return short_id(self.uid)

    @property
    def replayable(self) -> bool:
        return self.source is not None and self.sha256 is not None


def short_id(uid: uuid.UUID) -> str:
    """The first hex digits of the event id: short enough to type, stable across runs (the event
    id is itself derived from the failed record's coordinates)."""
    return uid.hex[:SHORT_ID_LENGTH]


def read_dead_letter(
    topic: str,
    location: Coordinates,
    timestamp_ms: int,
    value: bytes | None,
    headers: Mapping[str, str],
) -> DeadLetter:
    """Turn a record of a dead-letter topic into a ``DeadLetter``; never raises."""
    try:
        event = decode_event(value, _DEAD_LETTER_EVENTS)
    except InvalidMessage as invalid:
        return _unreadable(topic, location, timestamp_ms, str(invalid.problem.reason))
    common = {
        "uid": event.event_id,
        "topic": topic,
        "location": location,
        "at": event.occurred_at.astimezone(UTC),
        "subject": event.subject,
        "correlation_id": event.correlation_id,
        "headers": safe_headers(headers),
    }
    if isinstance(event, NotificationDeliveryFailed):
        data = event.data
        return DeadLetter(
            kind=Kind.DELIVERY_FAILED,
            reason=data.reason,
            field_path=None,
            source=None,
            sha256=None,
            consumer=event.source,
            delivery={
                "delivery_id": str(data.delivery_id),
                "recipient": f"{data.recipient_kind}:{data.recipient_id}",
                "channel": data.channel,
                "error_class": data.error_class,
                "attempts": str(data.attempts),
            },
            **common,  # type: ignore[arg-type]
        )
    assert isinstance(event, ReferralRejected | MessageDeadLettered)
    rejection = event.data
    return DeadLetter(
        kind=Kind.DEAD_LETTER if isinstance(event, MessageDeadLettered) else Kind.REJECTION,
        reason=str(rejection.reason),
        field_path=rejection.field_path,
        source=Coordinates(
            rejection.original_topic, rejection.original_partition, rejection.original_offset
        ),
        sha256=rejection.original_sha256,
        consumer=event.data.consumer if isinstance(event, MessageDeadLettered) else event.source,
        original_event_id=rejection.original_event_id,
        prescriber_id=rejection.prescriber_id,
        **common,  # type: ignore[arg-type]
    )


def _unreadable(topic: str, location: Coordinates, timestamp_ms: int, why: str) -> DeadLetter:
    return DeadLetter(
        uid=uuid.uuid5(_UNREADABLE_IDS, str(location)),
        topic=topic,
        location=location,
        kind=Kind.UNREADABLE,
        reason=UNREADABLE,
        field_path=why,
        at=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        subject="unknown",
        source=None,
        sha256=None,
        consumer=None,
    )


def unique(dead_letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One entry per dead letter: a consumer that crashed after publishing a dead letter but
    before committing publishes the same one again (same event id) on redelivery."""
    seen: dict[uuid.UUID, DeadLetter] = {}
    for dead_letter in dead_letters:
        seen.setdefault(dead_letter.uid, dead_letter)
    return list(seen.values())


# Headers whose values say nothing about a person: shown as they are; others by name only.
_SHOWN_HEADERS = frozenset(
    {
        "content-type",
        "event_id",
        "event_type",
        "schema_version",
        "correlation_id",
        "source",
        KEY_ID_HEADER,
        TIMESTAMP_HEADER,
        REPLAY_OF_HEADER,
        REPLAY_TIMESTAMP_HEADER,
    }
)
HIDDEN = "(not shown)"


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Every header name; the value only for known metadata headers, at most 100 characters."""
    return {
        name: (value[:100] if name in _SHOWN_HEADERS else HIDDEN) for name, value in headers.items()
    }


# Ids


class IdProblem(Exception):
    """An id given on the command line matches no dead letter, or more than one."""


def resolve(dead_letters: Sequence[DeadLetter], given: str) -> DeadLetter:
    """The dead letter whose short id (or full event id) starts with ``given``."""
    text = given.strip().lower().replace("-", "")
    if len(text) < MIN_PREFIX_LENGTH or not re.fullmatch(r"[0-9a-f]+", text):
        raise IdProblem(f"{given!r} is not a dead-letter id (hex, at least {MIN_PREFIX_LENGTH})")
    found = [d for d in dead_letters if d.uid.hex.startswith(text)]
    if not found:
        raise IdProblem(f"no dead letter has the id {given}")
    if len(found) > 1:
        ids = ", ".join(sorted(d.uid.hex[: max(len(text) + 2, SHORT_ID_LENGTH)] for d in found))
        raise IdProblem(f"{given} matches several dead letters ({ids}); give more digits")
    return found[0]


# Status


@dataclass(frozen=True, slots=True)
class Action:
    """What an operator did with a dead letter, as recorded in PostgreSQL."""

    dead_letter: uuid.UUID
    kind: ActionKind
    operator: str
    at: datetime
    reason: str | None = None  # the operator's words, for a discard
    replayed_to: str | None = None  # "topic:partition:offset" of the copy
    signed: bool | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterStatus:
    state: Status
    last: Action | None
    replays: int

    def describe(self) -> str:
        last = self.last
        if last is None:
            return "open"
        when = last.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if last.kind == "replayed":
            again = f", {self.replays} replays" if self.replays > 1 else ""
            return f"replayed at {when} by {last.operator}{again}"
        return f"discarded at {when} by {last.operator}: {last.reason}"


def status_of(actions: Iterable[Action]) -> DeadLetterStatus:
    """The latest action decides: a dead letter discarded after a replay is discarded."""
    ordered = sorted(actions, key=lambda action: action.at)
    if not ordered:
        return DeadLetterStatus("open", None, 0)
    last = ordered[-1]
    replays = sum(1 for action in ordered if action.kind == "replayed")
    return DeadLetterStatus(last.kind, last, replays)


# Filters


class FilterProblem(Exception):
    """A filter given on the command line cannot match anything (unknown topic, bad time)."""


def dead_letter_topic(given: str | None) -> str | None:
    """Accept a dead-letter topic name, or its first word (``routing`` for routing.dead-letter,
    ``referrals`` or ``rejected`` for referrals.rejected)."""
    if given is None:
        return None
    name = given.strip()
    if name in DEAD_LETTER_TOPICS:
        return name
    matches = [t for t in DEAD_LETTER_TOPICS if name in t.replace("-", ".").split(".")]
    if len(matches) == 1:
        return matches[0]
    raise FilterProblem(
        f"{given!r} is not a dead-letter topic (one of {', '.join(DEAD_LETTER_TOPICS)})"
    )


def parse_since(given: str | None) -> datetime | None:
    """An ISO date or date-time; without a zone it is UTC (what the listing shows)."""
    if given is None:
        return None
    try:
        parsed = datetime.fromisoformat(given.strip())
    except ValueError:
        raise FilterProblem(f"--since {given!r} is not an ISO date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filter:
    topic: str | None = None
    reason: str | None = None
    since: datetime | None = None
    status: StatusFilter = "all"

    def matches(self, dead_letter: DeadLetter, status: DeadLetterStatus) -> bool:
        return (
            (self.topic is None or dead_letter.topic == self.topic)
            and (self.reason is None or dead_letter.reason == self.reason)
            and (self.since is None or dead_letter.at >= self.since)
            and (self.status == "all" or status.state == self.status)
        )


# Would a replay help?

# Not the sender's fault: the same record may well pass now.
_TRANSIENT = frozenset({RejectionReason.RETRIES_EXHAUSTED, RejectionReason.PROCESSING_ERROR})
# The record may pass once something else changed: the registry (a new prescriber or key, a wider
# jurisdiction; on the centres' topics, a key's secret provisioned in routing), reference data, a
# newer consumer version, a larger size limit, or ordering (a cancellation that overtook its
# referral).
_AFTER_A_FIX = frozenset(
    {
        RejectionReason.UNKNOWN_PRESCRIBER,
        RejectionReason.UNKNOWN_SIGNING_KEY,
        RejectionReason.OUTSIDE_JURISDICTION,
        RejectionReason.UNKNOWN_COMMUNE,
        RejectionReason.UNKNOWN_POSTAL_CODE,
        RejectionReason.UNKNOWN_EVENT_TYPE,
        RejectionReason.UNKNOWN_SCHEMA_VERSION,
        RejectionReason.UNKNOWN_ENUM_VALUE,
        RejectionReason.MESSAGE_TOO_LARGE,
        RejectionReason.UNKNOWN_REFERRAL,
        RejectionReason.UNKNOWN_SITE,
        RejectionReason.NOT_OFFERED_TO_SENDER,
    }
)


def replay_hint(dead_letter: DeadLetter) -> str:
    """A word for the listing; replaying stays the operator's call whatever it says."""
    if not dead_letter.replayable:
        return "n/a"
    if dead_letter.reason in _TRANSIENT:
        return "yes"
    if dead_letter.reason in _AFTER_A_FIX:
        return "after fix"
    # The bytes themselves are wrong (not JSON, bad signature, invalid value...): the same
    # record fails the same way; the sender has to send a corrected one.
    return "no"


# Replay


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The failed record as read back from its topic."""

    location: Coordinates
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What to publish: the original key, value and headers, plus the replay headers, on the
    original topic and partition (so the copy stays ordered with the key's other records)."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    replay_of: str
    signed: bool


class Refusal(Exception):
    """A replay that must not happen; the message says why, without echoing the record."""


class AlreadyActed(Refusal):
    """Replayed or discarded before: not an error, replaying is idempotent by default."""


def check_replayable(dead_letter: DeadLetter, status: DeadLetterStatus, again: bool) -> None:
    """Raises ``Refusal`` before anything is read from the source topic."""
    if not dead_letter.replayable:
        if dead_letter.kind == Kind.DELIVERY_FAILED:
            raise Refusal(
                "a failed delivery has no source record to replay; notifications retries and "
                "falls back by itself (see aiguillage-notifications-log)"
            )
        raise Refusal("this record on the dead-letter topic is not a dead letter this tool reads")
    if status.state != "open" and not again:
        raise AlreadyActed(f"already {status.describe()} (--again to replay it anyway)")


def plan_replay(
    dead_letter: DeadLetter, source: SourceRecord, secret: bytes | None, now_s: int
) -> ReplayPlan:
    """Check that ``source`` is the record that failed, and say how to put it back."""
    assert dead_letter.source is not None
    if source.location != dead_letter.source:
        raise Refusal(f"read {source.location}, not {dead_letter.source}")
    if sha256_hex(source.value) != dead_letter.sha256:
        raise Refusal(
            f"the record at {dead_letter.source} does not have the dead letter's SHA-256; "
            "it is not the record that failed (topic recreated?)"
        )
    replay_of, original_ms = _origin(source, secret)
    kept = tuple((name, value) for name, value in source.headers if name not in REPLAY_HEADERS)
    if secret:
        added = replay_headers(secret, replay_of, original_ms, source.value, now_s)
    else:
        # Unsigned, this header only tells readers it is a copy; intake cannot trust an unsigned
        # original time, so it measures its replay window against the copy's arrival.
        added = {REPLAY_OF_HEADER: replay_of}
    return ReplayPlan(
        topic=source.location.topic,
        partition=source.location.partition,
        key=source.key,
        value=source.value,
        headers=kept + tuple((name, text.encode("utf-8")) for name, text in added.items()),
        replay_of=replay_of,
        signed=bool(secret),
    )


def _origin(source: SourceRecord, secret: bytes | None) -> tuple[str, int]:
    """Coordinates and broker time of the *first* record: when the failed record is itself a
    verified replay, its original is carried forward, or a second replay would be measured
    against the first replay's time."""
    own = (str(source.location), source.timestamp_ms)
    if not secret:
        return own
    headers = _text_headers(source.headers)
    signed_at = _signature_time(headers.get(REPLAY_SIGNATURE_HEADER))
    replay_of = headers.get(REPLAY_OF_HEADER)
    if signed_at is None or replay_of is None:
        return own
    # Verified as of its own signing time: the window protects consumers from stale copies,
    # whereas this only asks whether our secret signed these coordinates and this time.
    original = original_timestamp_ms(headers, source.value, secret, float(signed_at))
    return own if original is None else (replay_of, original)


def _text_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    text: dict[str, str] = {}
    for name, value in headers:
        try:
            text[name] = (value or b"").decode("utf-8")
        except UnicodeDecodeError:
            continue
    return text


def _signature_time(header: str | None) -> int | None:
    match = re.match(r"^t=(\d{1,12}),", header or "")
    return int(match.group(1)) if match else None


# Bulk selection


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters ``replay`` acts on: one id, or every open one of a reason."""

    dead_letter_id: str | None = None
    reason: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if (self.dead_letter_id is None) == (self.reason is None):
            raise FilterProblem("give either a dead-letter id or a reason")
        if self.dead_letter_id is not None and self.topic is not None:
            raise FilterProblem("--topic narrows a --reason selection, not an id")


def select(
    dead_letters: Sequence[DeadLetter],
    statuses: Mapping[uuid.UUID, DeadLetterStatus],
    selection: Selection,
) -> list[DeadLetter]:
    """An id selects its dead letter whatever its status (the replay then says if it was done);
    a reason selects only the open dead letters of that reason, so a bulk replay run twice
    replays nothing the second time."""
    if selection.dead_letter_id is not None:
        return [resolve(dead_letters, selection.dead_letter_id)]
    wanted = Filter(topic=selection.topic, reason=selection.reason, status="open")
    return [d for d in dead_letters if wanted.matches(d, statuses[d.uid])]


def open_status() -> DeadLetterStatus:
    return DeadLetterStatus("open", None, 0)
