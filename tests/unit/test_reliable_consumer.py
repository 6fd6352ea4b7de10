"""The consumer's outcome for each kind of failure: retried, dead-lettered, or surfaced."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.consumer import HoldBack, InboundRecord, ReliableConsumer, RetryPolicy
from aiguillage_common.failures import is_transient
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
    """A fake transaction that records what was committed, and rolls back on an exception."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.committed: list[int] = []
        self.rollbacks = 0
        self.joins = 0

    def write(self, offset: int) -> None:
        self.joins += 1  # as a unit of work joining the batch's transaction does
        self.pending.append(offset)

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Transactions]:
        self.pending = []
        try:
            yield self
        except BaseException:
            self.rollbacks += 1
            raise
        self.committed.extend(self.pending)


async def test_a_poison_record_in_a_batch_is_dead_lettered_alone_and_the_rest_commit_once() -> None:
    records = [InboundRecord("t", 0, offset, b"ref-abcdef", b"{}") for offset in range(5)]
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
    records = [InboundRecord("t", 0, offset, b"ref-abcdef", b"{}") for offset in range(5)]
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
    records = [InboundRecord("t", 0, offset, b"ref-abcdef", b"{}") for offset in range(4)]
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
