"""The consumer's outcome for each kind of failure: retried, dead-lettered, or surfaced."""

from __future__ import annotations

import asyncpg
import pytest

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.consumer import InboundRecord, ReliableConsumer, RetryPolicy
from aiguillage_schemas.vocabulary import RejectionReason

RECORD = InboundRecord("t", 2, 41, b"ref-abcdef", b"{}", {"correlation_id": "nope"})
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002)


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


async def test_exhausted_retries_are_dead_lettered_with_that_reason() -> None:
    calls, process = _failing(*(OSError() for _ in range(5)))
    dead = DeadLetters()
    await ReliableConsumer("c", process, dead, FAST, 1.0).handle(RECORD)  # type: ignore[arg-type]
    assert len(calls) == FAST.max_attempts
    assert [p.reason for _, p in dead.got] == [RejectionReason.RETRIES_EXHAUSTED]


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


async def test_an_unreachable_dead_letter_topic_surfaces_so_the_offset_is_not_committed() -> None:
    _, process = _failing(InvalidMessage(Problem(RejectionReason.NOT_JSON, "x")))
    with pytest.raises(ConnectionError):
        await ReliableConsumer("c", process, DeadLetters(fail=True), FAST, 1.0).handle(  # type: ignore[arg-type]
            RECORD
        )


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.1, max_delay_s=1.0)
    assert 0.05 <= policy.delay(1) <= 0.1
    assert 0.5 <= policy.delay(8) <= 1.0


def test_derived_ids_are_stable_per_record() -> None:
    same = InboundRecord("t", 2, 41, None, None)
    assert RECORD.derived_id("x") == same.derived_id("x") != RECORD.derived_id("y")
    assert RECORD.correlation_id() == same.correlation_id()
