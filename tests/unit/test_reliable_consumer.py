"""The consumer's outcome for each kind of failure: retried, dead-lettered, or surfaced."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection

import asyncpg
import pytest
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber import usecase as faststream_usecase
from prometheus_client import REGISTRY

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.consumer import (
    HoldBack,
    InboundRecord,
    ReliableConsumer,
    RetryPolicy,
    subscribe,
)
from aiguillage_common.failures import is_transient
from aiguillage_common.metrics import ServiceMetrics
from aiguillage_common.unit_of_work import Claim, DuplicateClaims
from aiguillage_schemas.vocabulary import RejectionReason

RECORD = InboundRecord("t", 2, 41, b"ref-abcdef", b"{}", {"correlation_id": "nope"})
FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.002, hold_s=60.0)


class DeadLetters:
    def __init__(self, fail: bool = False) -> None:
        self.got: list[tuple[InboundRecord, Problem]] = []
        self.fail = fail

    async def __call__(self, record: InboundRecord, problem: Problem) -> None:
        if self.fail:
            raise ConnectionError("dead-letter topic unreachable")
        self.got.append((record, problem))


def _failing(*errors: BaseException) -> tuple[list[int], object]:
    calls: list[int] = []
    queue = list(errors)

    async def process(_record: InboundRecord) -> None:
        calls.append(1)
        if queue:
            raise queue.pop(0)

    return calls, process


async def test_transient_errors_are_retried_until_success() -> None:
    calls, process = _failing(asyncpg.CannotConnectNowError(), TimeoutError())
    dead = DeadLetters()
    await ReliableConsumer("c", process, dead, FAST, 1.0).handle(RECORD)  # type: ignore[arg-type]
    assert len(calls) == 3
    assert dead.got == []


async def test_an_outage_is_waited_out_however_many_attempts_it_takes() -> None:
    # Forty failures in a row (a long PostgreSQL restart): never dead-lettered, never rejected.
    calls, process = _failing(*(asyncpg.CannotConnectNowError() for _ in range(40)))
    dead = DeadLetters()
    await ReliableConsumer("c", process, dead, FAST, 1.0).handle(RECORD)  # type: ignore[arg-type]
    assert len(calls) == 41
    assert dead.got == []


async def test_a_long_outage_hands_the_record_back_uncommitted_and_tells_who_waits() -> None:
    # Past the hold time the record goes back to the poll loop (seek back, no commit), so the
    # consumer keeps its group membership; the wait is reported once, and its end once.
    now = [0.0]
    waits: list[tuple[str, object]] = []

    async def down(_record: InboundRecord) -> None:
        now[0] += 30.0
        raise ConnectionRefusedError()

    consumer = ReliableConsumer(
        "c",
        down,
        DeadLetters(),
        FAST,
        1.0,
        on_wait=lambda name, dep: waits.append((name, dep)),
        clock=lambda: now[0],
    )
    with pytest.raises(HoldBack):
        await consumer.handle(RECORD)
    assert consumer.waiting_for == "network"
    assert waits == [("c", "network")]

    async def back(_record: InboundRecord) -> None:
        return None

    consumer._process = back
    await consumer.handle(RECORD)
    assert consumer.waiting_for is None
    assert waits == [("c", "network"), ("c", None)]


async def test_invalid_input_is_dead_lettered_at_once() -> None:
    problem = Problem(RejectionReason.NOT_JSON, "not JSON")
    calls, process = _failing(InvalidMessage(problem))
    dead = DeadLetters()
    await ReliableConsumer("c", process, dead, FAST, 1.0).handle(RECORD)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert dead.got == [(RECORD, problem)]


async def test_a_bug_is_dead_lettered_without_its_message() -> None:
    _, process = _failing(KeyError("Canaryname"))
    dead = DeadLetters()
    await ReliableConsumer("c", process, dead, FAST, 1.0).handle(RECORD)  # type: ignore[arg-type]
    ((_, problem),) = dead.got
    assert problem.reason == RejectionReason.PROCESSING_ERROR
    assert "Canaryname" not in problem.message


async def test_an_unreachable_dead_letter_topic_holds_the_record_back_uncommitted() -> None:
    _, process = _failing(InvalidMessage(Problem(RejectionReason.NOT_JSON, "x")))
    short_hold = RetryPolicy(base_delay_s=0.001, max_delay_s=0.002, hold_s=0.01)
    consumer = ReliableConsumer("c", process, DeadLetters(fail=True), short_hold, 1.0)  # type: ignore[arg-type]
    with pytest.raises(HoldBack):
        await consumer.handle(RECORD)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    assert 0.05 <= policy.delay(1) <= 0.1
    assert 0.5 <= policy.delay(8) <= 1.0
    assert 0.5 <= policy.delay(10_000) <= 1.0  # an outage of hours never overflows the backoff


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (asyncpg.CannotConnectNowError(), True),
        (asyncpg.AdminShutdownError(), True),
        (asyncpg.ConnectionDoesNotExistError(), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (asyncpg.SerializationError(), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.UniqueViolationError(), False),
        (asyncpg.DataError("bad value"), False),
        (KeyError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_one_classification_of_failures(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_derived_ids_are_stable_per_record() -> None:
    same = InboundRecord("t", 2, 41, None, None)
    assert RECORD.derived_id("x") == same.derived_id("x") != RECORD.derived_id("y")
    assert RECORD.correlation_id() == same.correlation_id()


class Transactions:
    """A fake batch transaction that records what was committed and rolls back on an exception;
    like ``unit_of_work.SharedTransaction`` it defers the inbox claims to its end, where claims
    of events already in ``inbox`` raise ``DuplicateClaims``, and it can fail its deferred
    writes (``fail_deferred``) unless told to write at once."""

    def __init__(self, inbox: set[Claim] | None = None) -> None:
        self.pending: list[int] = []
        self.committed: list[int] = []
        self.rollbacks = 0
        self.joins = 0
        self.inbox: set[Claim] = inbox or set()
        self.claims: dict[Claim, None] = {}
        self.known: frozenset[Claim] = frozenset()
        self.duplicates = 0  # claims answered "duplicate" in this run
        self.deferring = True
        self.fail_deferred: Exception | None = None
        self.at_once_failure: tuple[int, Exception] | None = None

    def write(self, offset: int) -> None:
        self.joins += 1  # as a unit of work joining the batch's transaction does
        self.pending.append(offset)
        if not self.deferring and self.at_once_failure and self.at_once_failure[0] == offset:
            raise self.at_once_failure[1]

    def claim(self, event: str) -> bool:
        self.joins += 1
        key = ("c", uuid.uuid5(uuid.NAMESPACE_URL, event))
        if not self.deferring:
            if key in self.inbox or key in self.claims:
                self.duplicates += 1
                return False
            self.claims[key] = None
            return True
        if key in self.known or key in self.claims:
            self.duplicates += 1
            return False
        self.claims[key] = None
        return True

    @property
    def claims_made(self) -> int:
        return len(self.claims)

    def claims_since(self, mark: int) -> list[Claim]:
        return list(self.claims)[mark:]

    def know_duplicates(self, claims: Collection[Claim]) -> None:
        self.known = frozenset(claims)

    def write_at_once(self) -> None:
        self.deferring = False

    async def already_handled(self, claims: Collection[Claim]) -> frozenset[Claim]:
        return frozenset(self.inbox.intersection(claims))

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Transactions]:
        self.pending, self.claims, self.deferring, self.duplicates = [], {}, True, 0
        try:
            yield self
            if self.deferring and self.claims:
                seen = self.inbox.intersection(self.claims)
                if seen:
                    raise DuplicateClaims(seen)
            if self.deferring and self.fail_deferred is not None:
                raise self.fail_deferred
        except BaseException:
            self.rollbacks += 1
            raise
        self.committed.extend(self.pending)
        self.inbox.update(self.claims)


def _batch(size: int) -> list[InboundRecord]:
    """``size`` records of one partition, offsets 0 to size - 1."""
    return [InboundRecord("t", 0, offset, b"ref-abcdef", b"{}") for offset in range(size)]


async def test_a_poison_record_in_a_batch_is_dead_lettered_alone_and_the_rest_commit_once() -> None:
    records = _batch(5)
    transactions = Transactions()

    async def process(record: InboundRecord) -> None:
        transactions.write(record.offset)  # kept only if the batch commits
        if record.offset == 2:
            raise InvalidMessage(Problem(RejectionReason.CONFLICTING_DUPLICATE, "x"))

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert transactions.committed == [0, 1, 3, 4]  # in order, each once, in one commit
    assert transactions.rollbacks == 1  # the attempt that met the poison record
    assert [(r.offset, p.reason) for r, p in dead.got] == [
        (2, RejectionReason.CONFLICTING_DUPLICATE)
    ]


async def test_a_poison_record_that_wrote_nothing_costs_no_rollback_and_no_second_run() -> None:
    records = _batch(5)
    transactions = Transactions()
    runs: list[int] = []

    async def process(record: InboundRecord) -> None:
        runs.append(record.offset)
        if record.offset == 2:
            raise InvalidMessage(Problem(RejectionReason.NOT_JSON, "x"))  # before any write
        transactions.write(record.offset)

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert runs == [0, 1, 2, 3, 4]  # each record handled (and logged) once
    assert transactions.committed == [0, 1, 3, 4]
    assert transactions.rollbacks == 0
    assert [r.offset for r, _ in dead.got] == [2]


async def test_an_outage_mid_batch_retries_the_whole_batch_and_commits_nothing_twice() -> None:
    records = _batch(4)
    transactions = Transactions()
    outage = [asyncpg.AdminShutdownError(), asyncpg.CannotConnectNowError()]

    async def process(record: InboundRecord) -> None:
        if record.offset == 3 and outage:
            raise outage.pop(0)
        transactions.write(record.offset)

    consumer = ReliableConsumer("c", process, DeadLetters(), FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert transactions.committed == [0, 1, 2, 3]
    assert transactions.rollbacks == 2


def _event(offset: int) -> Claim:
    return ("c", uuid.uuid5(uuid.NAMESPACE_URL, f"event-{offset}"))


async def test_a_redelivered_batch_changes_nothing_twice_though_its_claims_are_deferred() -> None:
    # Offsets 0-2 were handled (committed) before a crash that lost the offset commit; 3-4 new.
    transactions = Transactions(inbox={_event(0), _event(1), _event(2)})
    records = _batch(5)
    handled: list[int] = []

    async def process(record: InboundRecord) -> None:
        if transactions.claim(f"event-{record.offset}"):
            transactions.write(record.offset)
            handled.append(record.offset)

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert transactions.committed == [3, 4]  # the effects of the new events, once
    assert transactions.rollbacks == 1  # the run that took the old events for new ones
    assert handled[-2:] == [3, 4]
    assert dead.got == []
    assert transactions.inbox == {_event(offset) for offset in range(5)}


async def test_a_record_failing_only_because_its_event_was_handled_is_not_dead_lettered() -> None:
    # A redelivered event whose use case, believing it new, finds the state moved on and
    # refuses it: the claim, checked on the next run, says it is a duplicate.
    transactions = Transactions(inbox={_event(1)})
    records = _batch(3)

    async def process(record: InboundRecord) -> None:
        if not transactions.claim(f"event-{record.offset}"):
            return
        if record.offset == 1:
            raise InvalidMessage(Problem(RejectionReason.INVALID_VALUE, "state moved on"))
        transactions.write(record.offset)

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert dead.got == []
    assert transactions.committed == [0, 2]


async def test_a_genuine_poison_record_that_claimed_is_still_dead_lettered_alone() -> None:
    transactions = Transactions()
    records = _batch(3)

    async def process(record: InboundRecord) -> None:
        if not transactions.claim(f"event-{record.offset}"):
            return
        if record.offset == 1:
            raise InvalidMessage(Problem(RejectionReason.INVALID_VALUE, "never valid"))
        transactions.write(record.offset)

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert [r.offset for r, _ in dead.got] == [1]
    assert transactions.committed == [0, 2]
    assert transactions.inbox == {_event(0), _event(2)}  # the poison's claim rolled back


async def test_deferred_writes_failing_for_good_find_the_record_they_belong_to() -> None:
    # A write deferred to the end of the batch breaks a constraint: the batch runs again
    # writing at once, the record whose write fails is dead-lettered alone, the rest commit.
    transactions = Transactions()
    transactions.fail_deferred = asyncpg.UniqueViolationError("duplicate key")
    transactions.at_once_failure = (2, asyncpg.UniqueViolationError("duplicate key"))
    records = _batch(4)

    async def process(record: InboundRecord) -> None:
        transactions.write(record.offset)

    dead = DeadLetters()
    consumer = ReliableConsumer("c", process, dead, FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert [(r.offset, p.reason) for r, p in dead.got] == [(2, RejectionReason.PROCESSING_ERROR)]
    assert transactions.committed == [0, 1, 3]


async def test_an_outage_at_the_end_of_a_batch_is_retried_not_written_at_once() -> None:
    transactions = Transactions()
    transactions.fail_deferred = asyncpg.CannotConnectNowError()
    records = _batch(3)
    attempts: list[bool] = []

    async def process(record: InboundRecord) -> None:
        if record.offset == 0:
            attempts.append(transactions.deferring)
            if len(attempts) == 2:
                transactions.fail_deferred = None  # the database is back
        transactions.write(record.offset)

    consumer = ReliableConsumer("c", process, DeadLetters(), FAST, 1.0, transaction=transactions)
    await consumer.handle_batch(records)
    assert attempts == [True, True]  # retried as a batch, still deferring
    assert transactions.committed == [0, 1, 2]


class _Getmany:
    """A consumer whose getmany waits its timeout and returns nothing, or returns records."""

    def __init__(self, records: dict[object, list[object]] | None = None) -> None:
        self.records = records or {}
        self.calls = 0

    async def getmany(self, timeout_ms: int, max_records: int | None) -> dict[object, list[object]]:
        self.calls += 1
        if not self.records:
            await asyncio.sleep(timeout_ms / 1000)
        return self.records


async def test_an_idle_poll_goes_round_without_sleeping_again_and_records_come_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FastStream's own get_msg sleeps the batch timeout again after an empty poll, with
    # anyio.sleep: record those sleeps rather than timing the call (a loaded machine is slow).
    slept_again: list[float] = []

    async def record(delay: float) -> None:
        slept_again.append(delay)

    monkeypatch.setattr(faststream_usecase.anyio, "sleep", record)
    broker = KafkaBroker("127.0.0.1:1")
    consumer = ReliableConsumer("c", lambda r: asyncio.sleep(0), DeadLetters(), FAST, 1.0)
    subscribe(
        broker,
        consumer,
        topic="t",
        group_id="g",
        documented_payload=dict,
        description="d",
        max_records=10,
    )
    (subscriber,) = broker.subscribers
    subscriber.batch_timeout_ms = 50  # type: ignore[attr-defined]
    idle = _Getmany()
    assert await subscriber.get_msg(idle) == ()  # type: ignore[attr-defined]
    assert idle.calls == 1
    assert slept_again == []
    busy = _Getmany({"tp": ["r1", "r2"], "tp2": ["r3"]})
    assert await subscriber.get_msg(busy) == ("r1", "r2", "r3")  # type: ignore[attr-defined]


async def test_metrics_count_a_batch_once_per_outcome_with_the_reasons_set_aside() -> None:
    """A redelivered batch with a poison record: the metrics see each record once, in its final
    outcome (the rolled-back runs count nothing), and the dead letter's reason."""
    transactions = Transactions(inbox={_event(0), _event(1)})
    records = _batch(6)

    async def process(record: InboundRecord) -> None:
        if record.offset == 4:
            raise InvalidMessage(Problem(RejectionReason.NOT_JSON, "x"))
        if transactions.claim(f"event-{record.offset}"):
            transactions.write(record.offset)

    topic = f"t-{uuid.uuid4().hex[:8]}"  # the registry is the process's: series of our own
    observer = ServiceMetrics("svc").consumer("c", topic, "dead_lettered")
    consumer = ReliableConsumer(
        "c", process, DeadLetters(), FAST, 1.0, transaction=transactions, observer=observer
    )
    await consumer.handle_batch(records)
    assert transactions.committed == [2, 3, 5]

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(
            name, {"service": "svc", "consumer": "c", "topic": topic, **labels}
        )

    consumed = "aiguillage_records_consumed_total"
    assert value(consumed, outcome="handled") == 3
    assert value(consumed, outcome="duplicate") == 2
    assert value(consumed, outcome="dead_lettered") == 1
    assert value("aiguillage_dead_letters_total", reason=str(RejectionReason.NOT_JSON)) == 1
    assert value("aiguillage_batch_handling_seconds_count") == 1  # one batch, one observation


async def test_a_batch_lets_the_service_s_other_tasks_run_between_its_records() -> None:
    # Records that never await (their writes wait for the batch's end) must still give way:
    # a delivery lane or an identity request of the same process is served meanwhile.
    records = _batch(20)
    transactions = Transactions()
    seen_by_other_task: list[int] = []

    async def process(record: InboundRecord) -> None:
        transactions.write(record.offset)

    async def other_task() -> None:
        while len(seen_by_other_task) < 5:
            seen_by_other_task.append(len(transactions.pending))
            await asyncio.sleep(0)

    consumer = ReliableConsumer("c", process, DeadLetters(), FAST, 1.0, transaction=transactions)
    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)  # the other task is waiting for its turn
    await consumer.handle_batch(records)
    await other
    assert transactions.committed == list(range(20))
    assert 0 < seen_by_other_task[-1] < 20  # it ran while the batch was half done
