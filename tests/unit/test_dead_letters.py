"""The pure parts of aiguillage-dead-letters: reading dead letters, ids, status, filters, replay
plans; and the replay use case with in-memory ports (publish once, record, then skip)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from aiguillage_common.codec import Problem, encode_event, sha256_hex
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.dead_letter import dead_letter_event
from aiguillage_common.replay_headers import (
    REPLAY_OF_HEADER,
    REPLAY_SIGNATURE_HEADER,
    REPLAY_TIMESTAMP_HEADER,
    original_timestamp_ms,
    replay_headers,
)
from aiguillage_operations.domain import (
    HIDDEN,
    UNREADABLE,
    Action,
    ActionKind,
    AlreadyActed,
    Coordinates,
    DeadLetter,
    Filter,
    FilterProblem,
    IdProblem,
    Kind,
    Refusal,
    ReplayPlan,
    Selection,
    SourceRecord,
    check_replayable,
    dead_letter_topic,
    open_status,
    parse_since,
    plan_replay,
    read_dead_letter,
    replay_hint,
    resolve,
    select,
    status_of,
    unique,
)
from aiguillage_operations.use_cases import Scan, replay
from aiguillage_schemas.events.notifications import (
    NotificationDeliveryFailed,
    NotificationDeliveryFailedData,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralRejected
from aiguillage_schemas.vocabulary import RejectionReason

SECRET = b"operations-test-secret"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CANARY = "Zelphine Quorvath"  # a made-up name: must never reach a dead letter's view
VALUE = ('{"event_type": "referral.submitted", "last_name": "' + CANARY + '"}').encode()
SOURCE = InboundRecord(
    "referrals.intake",
    3,
    41,
    b"ref-0001",
    VALUE,
    {"event_type": "referral.submitted", "x-aiguillage-key-id": "parquet-tj-lille-2027"},
    broker_timestamp_ms=1_790_000_000_000,
)


def _rejection(
    record: InboundRecord = SOURCE,
    reason: RejectionReason = RejectionReason.UNKNOWN_PRESCRIBER,
    path: str | None = "headers.x-aiguillage-key-id",
) -> ReferralRejected:
    # The message quotes the canary on purpose: the tool must not show messages at all.
    problem = Problem(reason, f"refused ({CANARY})", path)
    return ReferralRejected(
        event_id=record.derived_id("rejected"),
        source="referral-intake",
        correlation_id=record.correlation_id(),
        subject="ref-0001",
        data=record.rejection(problem),
    )


def _read(event: ReferralRejected | NotificationDeliveryFailed, offset: int = 0) -> DeadLetter:
    topic = "referrals.rejected" if isinstance(event, ReferralRejected) else "x"
    return read_dead_letter(
        topic,
        Coordinates(f"t1.{topic}", 0, offset),
        1_790_000_001_000,
        encode_event(event),
        {"event_type": event.event_type, "secret-ish": CANARY},
    )


def _failed_delivery() -> NotificationDeliveryFailed:
    return NotificationDeliveryFailed(
        source="notifications",
        correlation_id=uuid.uuid4(),
        subject="ref-0001",
        data=NotificationDeliveryFailedData(
            delivery_id=uuid.uuid4(),
            notification_id=uuid.uuid4(),
            recipient_kind="centre",
            recipient_id="ARA-LYON",
            channel="webhook",
            reason="permanent_failure",
            attempts=1,
            error_class="http_404",
        ),
    )


def _source(record: InboundRecord = SOURCE) -> SourceRecord:
    return SourceRecord(
        Coordinates(record.topic, record.partition, record.offset),
        record.broker_timestamp_ms or 0,
        record.key,
        record.value,
        tuple((k, v.encode()) for k, v in record.headers.items()),
    )


def _action(kind: ActionKind, minutes: int, reason: str | None = None) -> Action:
    return Action(uuid.uuid4(), kind, "alice", NOW + timedelta(minutes=minutes), reason)


# reading


def test_a_rejection_is_read_as_metadata_without_its_message_or_payload() -> None:
    dead_letter = _read(_rejection())
    assert dead_letter.kind == Kind.REJECTION
    assert (dead_letter.reason, dead_letter.field_path) == (
        "unknown_prescriber",
        "headers.x-aiguillage-key-id",
    )
    assert dead_letter.source == Coordinates("referrals.intake", 3, 41)
    assert dead_letter.sha256 == sha256_hex(VALUE)
    assert dead_letter.subject == "ref-0001"
    assert dead_letter.consumer == "referral-intake"
    assert dead_letter.headers == {"event_type": "referral.rejected", "secret-ish": HIDDEN}
    assert CANARY not in repr(dead_letter)
    assert replay_hint(dead_letter) == "after fix"


def test_an_internal_consumers_dead_letter_names_its_consumer() -> None:
    event = dead_letter_event(SOURCE, Problem(RejectionReason.RETRIES_EXHAUSTED, "x"), "routing")
    dead_letter = read_dead_letter(
        "routing.dead-letter", Coordinates("routing.dead-letter", 1, 7), 0, encode_event(event), {}
    )
    assert (dead_letter.kind, dead_letter.consumer, dead_letter.reason) == (
        Kind.DEAD_LETTER,
        "routing",
        "retries_exhausted",
    )
    assert replay_hint(dead_letter) == "yes"
    assert dead_letter.short_id == event.event_id.hex[:10]


def test_a_failed_delivery_has_no_source_and_is_not_replayable() -> None:
    dead_letter = _read(_failed_delivery())
    assert dead_letter.kind == Kind.DELIVERY_FAILED
    assert dead_letter.source is None
    assert not dead_letter.replayable
    assert dead_letter.delivery["error_class"] == "http_404"
    assert replay_hint(dead_letter) == "n/a"
    with pytest.raises(Refusal, match="no source record"):
        check_replayable(dead_letter, open_status(), again=True)


def test_an_unreadable_record_gets_an_id_from_where_it_is() -> None:
    first = read_dead_letter("routing.dead-letter", Coordinates("r", 0, 5), 0, b"<x/>", {})
    again = read_dead_letter("routing.dead-letter", Coordinates("r", 0, 5), 0, b"<x/>", {})
    other = read_dead_letter("routing.dead-letter", Coordinates("r", 0, 6), 0, b"<x/>", {})
    assert (first.kind, first.reason, first.field_path) == (Kind.UNREADABLE, UNREADABLE, "not_json")
    assert first.uid == again.uid != other.uid
    assert not first.replayable


def test_the_same_dead_letter_published_twice_is_listed_once() -> None:
    event = _rejection()
    assert len(unique([_read(event, 0), _read(event, 1), _read(_failed_delivery())])) == 2


def test_not_json_is_not_worth_replaying_by_nature() -> None:
    dead_letter = _read(_rejection(reason=RejectionReason.NOT_JSON, path=None))
    assert replay_hint(dead_letter) == "no"


# ids


def test_ids_resolve_by_prefix_and_refuse_ambiguity() -> None:
    a = _read(_rejection())
    b = _read(_failed_delivery())
    assert resolve([a, b], a.short_id) is a
    assert resolve([a, b], str(b.uid)) is b  # the full event id works too
    twin = dataclasses.replace(b, uid=uuid.UUID(a.uid.hex[:6] + b.uid.hex[6:]))
    with pytest.raises(IdProblem, match="several"):
        resolve([a, twin], a.short_id[:6])
    with pytest.raises(IdProblem, match="no dead letter"):
        resolve([a, b], "ffffffffff" if not a.uid.hex.startswith("ff") else "0000000000")
    with pytest.raises(IdProblem, match="not a dead-letter id"):
        resolve([a, b], "ab")


# status and filters


def test_the_latest_action_gives_the_status() -> None:
    assert status_of([]).describe() == "open"
    replayed = status_of([_action("replayed", 1), _action("replayed", 5)])
    assert (replayed.state, replayed.replays) == ("replayed", 2)
    assert replayed.describe() == "replayed at 2026-11-30 12:05:00Z by alice, 2 replays"
    discarded = status_of([_action("discarded", 9, "sender resends"), _action("replayed", 1)])
    assert discarded.state == "discarded"
    assert discarded.describe() == "discarded at 2026-11-30 12:09:00Z by alice: sender resends"


def test_filters() -> None:
    dead_letter = _read(_rejection())
    opened, done = open_status(), status_of([_action("discarded", 0, "why")])
    assert Filter().matches(dead_letter, done)
    assert Filter(status="open").matches(dead_letter, opened)
    assert not Filter(status="open").matches(dead_letter, done)
    assert Filter(topic="referrals.rejected", reason="unknown_prescriber").matches(
        dead_letter, opened
    )
    assert not Filter(topic="routing.dead-letter").matches(dead_letter, opened)
    assert not Filter(reason="not_json").matches(dead_letter, opened)
    assert Filter(since=dead_letter.at - timedelta(seconds=1)).matches(dead_letter, opened)
    assert not Filter(since=dead_letter.at + timedelta(seconds=1)).matches(dead_letter, opened)


def test_topic_and_since_arguments() -> None:
    assert dead_letter_topic("routing") == "routing.dead-letter"
    assert dead_letter_topic("rejected") == "referrals.rejected"
    assert dead_letter_topic("notifications.dead-letter") == "notifications.dead-letter"
    with pytest.raises(FilterProblem):
        dead_letter_topic("referrals.accepted")
    assert parse_since("2026-11-30") == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-30T13:00+01:00") == datetime(2026, 11, 30, 12, tzinfo=UTC)
    with pytest.raises(FilterProblem):
        parse_since("yesterday")


def test_a_reason_selects_open_dead_letters_only_and_an_id_any() -> None:
    first = _read(_rejection())
    other = InboundRecord("referrals.intake", 0, 9, b"ref-0002", b"{}")
    second = _read(_rejection(other))
    statuses = {first.uid: status_of([_action("replayed", 0)]), second.uid: open_status()}
    by_reason = Selection(reason="unknown_prescriber")
    assert select([first, second], statuses, by_reason) == [second]
    assert select([first, second], statuses, Selection(first.short_id)) == [first]
    with pytest.raises(FilterProblem):
        Selection()
    with pytest.raises(FilterProblem):
        Selection(first.short_id, topic="referrals.rejected")


# replay plans


def test_a_replay_puts_back_key_value_headers_and_partition_with_signed_headers() -> None:
    dead_letter = _read(_rejection())
    check_replayable(dead_letter, open_status(), again=False)
    raw_header = ("x-trace", b"\xff\xfe")  # not UTF-8: kept byte for byte
    source = _source()
    source = SourceRecord(
        source.location, source.timestamp_ms, None, source.value, (*source.headers, raw_header)
    )
    plan = plan_replay(dead_letter, source, SECRET, 1_790_000_100)
    assert (plan.topic, plan.partition, plan.key, plan.value) == (
        "referrals.intake",
        3,
        None,
        VALUE,
    )
    assert plan.headers[: len(source.headers)] == source.headers
    added = {k: v.decode() for k, v in plan.headers[len(source.headers) :]}
    assert added[REPLAY_OF_HEADER] == "referrals.intake:3:41"
    assert added[REPLAY_TIMESTAMP_HEADER] == "1790000000000"
    assert original_timestamp_ms(added, VALUE, SECRET, 1_790_000_100) == 1_790_000_000_000
    assert plan.signed


def test_without_a_secret_the_copy_only_says_what_it_is_a_copy_of() -> None:
    plan = plan_replay(_read(_rejection()), _source(), None, 1_790_000_100)
    added = dict(plan.headers[len(_source().headers) :])
    assert added == {REPLAY_OF_HEADER: b"referrals.intake:3:41"}
    assert not plan.signed


def test_a_record_that_is_not_the_one_that_failed_is_not_replayed() -> None:
    dead_letter = _read(_rejection())
    changed = SourceRecord(dead_letter.source or Coordinates("", 0, 0), 0, b"ref-0001", b"{}", ())
    with pytest.raises(Refusal, match="SHA-256"):
        plan_replay(dead_letter, changed, SECRET, 0)


def test_replaying_a_replay_carries_the_first_original_forward() -> None:
    first_copy_headers = {
        **SOURCE.headers,
        **replay_headers(SECRET, "referrals.intake:3:41", 1_790_000_000_000, VALUE, 1_790_000_050),
    }
    copy = InboundRecord(
        "referrals.intake", 3, 97, b"ref-0001", VALUE, first_copy_headers, 1_790_003_600_000
    )
    plan = plan_replay(_read(_rejection(copy)), _source(copy), SECRET, 1_790_007_200)
    headers = [(k, v.decode()) for k, v in plan.headers]
    replay_names = [k for k, _ in headers if k.startswith("x-aiguillage-replay")]
    assert sorted(replay_names) == sorted(
        [REPLAY_OF_HEADER, REPLAY_TIMESTAMP_HEADER, REPLAY_SIGNATURE_HEADER]
    )  # replaced, not duplicated
    text = dict(headers)
    assert text[REPLAY_OF_HEADER] == "referrals.intake:3:41"
    assert original_timestamp_ms(text, VALUE, SECRET, 1_790_007_200) == 1_790_000_000_000


def test_forged_replay_headers_are_not_carried_forward() -> None:
    forged = {
        **SOURCE.headers,
        **replay_headers(b"not-our-secret", "elsewhere:0:0", 1, VALUE, 1_790_000_050),
    }
    copy = InboundRecord("referrals.intake", 3, 97, b"ref-0001", VALUE, forged, 1_790_003_600_000)
    plan = plan_replay(_read(_rejection(copy)), _source(copy), SECRET, 1_790_007_200)
    text = {k: v.decode() for k, v in plan.headers}
    assert text[REPLAY_OF_HEADER] == "referrals.intake:3:97"
    assert text[REPLAY_TIMESTAMP_HEADER] == "1790003600000"


def test_a_replayed_dead_letter_is_replayed_again_only_when_asked() -> None:
    dead_letter = _read(_rejection())
    done = status_of([_action("replayed", 0)])
    with pytest.raises(AlreadyActed, match="--again"):
        check_replayable(dead_letter, done, again=False)
    check_replayable(dead_letter, done, again=True)


# the replay use case, with in-memory ports


class FakeKafka:
    def __init__(self, dead_letters: list[DeadLetter], sources: dict[Coordinates, SourceRecord]):
        self.dead_letters = dead_letters
        self.sources = sources
        self.published: list[tuple[str, int, bytes | None]] = []

    async def scan(self, names: Sequence[str]) -> Scan:
        return Scan([d for d in self.dead_letters if d.topic in names])

    async def fetch(self, location: Coordinates) -> SourceRecord:
        return self.sources[location]

    async def publish(self, plan: ReplayPlan) -> Coordinates:
        self.published.append((plan.topic, plan.partition, plan.value))
        return Coordinates(plan.topic, plan.partition, 100 + len(self.published))


class FakeStore:
    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.events: list[str] = []  # the store's clock read, publications

    async def history(self, uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Action]]:
        return {u: [a for a in self.actions if a.dead_letter == u] for u in uids}

    @asynccontextmanager
    async def exclusive(self, uid: uuid.UUID) -> AsyncIterator[FakeClaim]:
        yield FakeClaim(self, uid)


class FakeClaim:
    def __init__(self, store: FakeStore, uid: uuid.UUID) -> None:
        self.store = store
        self.uid = uid

    async def actions(self) -> list[Action]:
        return [a for a in self.store.actions if a.dead_letter == self.uid]

    async def now(self) -> datetime:
        self.store.events.append("now")
        return NOW + timedelta(minutes=len(self.store.events))

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
        at = at or NOW + timedelta(seconds=len(self.store.actions))
        action = Action(self.uid, kind, operator, at, reason, replayed_to, signed)
        self.store.actions.append(action)
        return action


async def test_replay_publishes_once_records_it_and_skips_the_second_time() -> None:
    dead_letter = _read(_rejection())
    kafka = FakeKafka([dead_letter], {Coordinates("referrals.intake", 3, 41): _source()})
    store = FakeStore()

    async def run(again: bool = False) -> str:
        (outcome,) = await replay(
            kafka,
            store,
            Selection(dead_letter.short_id),
            operator="alice",
            secret=SECRET,
            again=again,
        )
        return outcome.result

    assert await run() == "replayed"
    assert kafka.published == [("referrals.intake", 3, VALUE)]
    assert [(a.kind, a.replayed_to, a.signed) for a in store.actions] == [
        ("replayed", "referrals.intake:3:101", True)
    ]
    assert await run() == "skipped"
    assert len(kafka.published) == 1
    assert await run(again=True) == "replayed"
    assert len(kafka.published) == len(store.actions) == 2


async def test_a_replay_is_dated_when_published_before_what_it_causes() -> None:
    # What the replayed record causes (intake's admission) is recorded once it is published, by
    # the database's clock: the replay is dated and signed by that clock, read before
    # publishing, so a timeline reads in order and the signature's time is the server's.
    dead_letter = _read(_rejection())
    kafka = FakeKafka([dead_letter], {Coordinates("referrals.intake", 3, 41): _source()})
    store = FakeStore()
    publish = kafka.publish

    signatures: list[bytes] = []

    async def publishing(plan: ReplayPlan) -> Coordinates:
        store.events.append(f"publish, {len(store.actions)} recorded")
        signatures.extend(v for k, v in plan.headers if k == REPLAY_SIGNATURE_HEADER)
        return await publish(plan)

    kafka.publish = publishing  # type: ignore[method-assign]
    await replay(
        kafka,
        store,
        Selection(dead_letter.short_id),
        operator="alice",
        secret=SECRET,
    )
    (action,) = store.actions
    assert store.events == ["now", "publish, 0 recorded"]
    assert action.at == NOW + timedelta(minutes=1)  # the store's time read before publishing
    # The signature is dated by that time too (intake checks it against the broker's).
    (signature,) = signatures
    assert signature.startswith(f"t={int(action.at.timestamp())},".encode())


async def test_bulk_replay_of_a_reason_leaves_other_reasons_alone() -> None:
    outage = InboundRecord("referrals.accepted", 1, 5, b"ref-0003", b'{"a": 1}')
    event = dead_letter_event(outage, Problem(RejectionReason.RETRIES_EXHAUSTED, "x"), "routing")
    exhausted = read_dead_letter(
        "routing.dead-letter", Coordinates("routing.dead-letter", 0, 0), 0, encode_event(event), {}
    )
    refused = _read(_rejection())
    kafka = FakeKafka(
        [exhausted, refused],
        {Coordinates("referrals.accepted", 1, 5): _source(outage)},
    )
    outcomes = await replay(
        kafka,
        FakeStore(),
        Selection(reason="retries_exhausted"),
        operator="alice",
        secret=None,
    )
    assert [(o.dead_letter.uid, o.result, o.signed) for o in outcomes] == [
        (exhausted.uid, "replayed", False)
    ]
    assert kafka.published == [("referrals.accepted", 1, b'{"a": 1}')]
