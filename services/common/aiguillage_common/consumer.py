"""Reliable consumption: process, retry what is transient, dead-letter what is not, then commit.

The rules (see the engineering notes): FastStream's default ACK_FIRST auto-commits before the
handler finishes, and ACK / REJECT_ON_ERROR commit even when it raises, so subscribers use MANUAL
ack and this module decides. The offset is committed only after the effect is durable (the use
case's transaction committed) or after the message is on a dead-letter topic with its reason.
Transient failures (``aiguillage_common.failures``) are retried with capped, jittered backoff for as
long as it takes, holding the partition: the record is never committed past, dead-lettered or
rejected because a dependency is down. Only a record that can never succeed is dead-lettered.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any, Protocol
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.middlewares import AckPolicy

from aiguillage_common.codec import InvalidMessage, Problem, sha256_hex
from aiguillage_common.failures import Dependency, transient_dependency
from aiguillage_common.kafka import BAD_HEADERS_MARKER, tolerant_parser
from aiguillage_common.logging import get_logger
from aiguillage_common.unit_of_work import Claim, DuplicateClaims
from aiguillage_schemas.events.referral_lifecycle import (
    MAX_REJECTION_ERRORS,
    Rejection,
    RejectionError,
)
from aiguillage_schemas.vocabulary import RejectionReason

log = get_logger("aiguillage.consumer")

LOG_APPEND_TIME = 1  # Kafka's timestamp type for "set by the broker when appended"
DEAD_LETTER_NAMESPACE = UUID("6f1d9a52-3c1e-4c7e-9d0a-5d2b8f3e1a77")


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """What a handler needs of a Kafka record, free of any framework type."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    # When the record reached the broker (ms since the epoch), on topics configured with
    # LogAppendTime; None elsewhere (a CreateTime is whatever the producer said).
    broker_timestamp_ms: int | None = None

    @property
    def key_text(self) -> str | None:
        try:
            return self.key.decode("utf-8") if self.key else None
        except UnicodeDecodeError:
            return None

    @property
    def has_bad_headers(self) -> bool:
        return BAD_HEADERS_MARKER in self.headers

    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def checked_value(self, max_bytes: int | None = None) -> bytes:
        """The value, after the checks that need nothing but the record and come before any
        cryptography runs on it: its size, headers that decode, a value at all."""
        if self.value is not None and max_bytes is not None and len(self.value) > max_bytes:
            raise InvalidMessage(
                Problem(RejectionReason.MESSAGE_TOO_LARGE, f"the value exceeds {max_bytes} bytes")
            )
        if self.has_bad_headers:
            raise InvalidMessage(Problem(RejectionReason.BAD_HEADER, "a header value is not UTF-8"))
        if not self.value:
            raise InvalidMessage(
                Problem(
                    RejectionReason.EMPTY_MESSAGE, "the message has no value (or is a tombstone)"
                )
            )
        return self.value

    def rejection(self, problem: Problem, event_id: UUID | None = None) -> Rejection:
        """Why this record was refused; ``errors`` lists every problem found (at least one)."""
        return Rejection(
            reason=problem.reason,
            message=problem.message,
            field_path=problem.field_path,
            original_sha256=sha256_hex(self.value),
            original_topic=self.topic,
            original_partition=self.partition,
            original_offset=self.offset,
            original_event_id=event_id,
            prescriber_id=problem.prescriber_id,
            errors=[
                RejectionError(reason=d.reason, message=d.message, field_path=d.field_path)
                for d in problem.all_details()[:MAX_REJECTION_ERRORS]
            ],
        )

    def derived_id(self, purpose: str) -> UUID:
        """A stable id for what we derive from this record, so a redelivery derives the same one."""
        return uuid.uuid5(DEAD_LETTER_NAMESPACE, f"{purpose}:{self.coordinates()}")

    def correlation_id(self) -> UUID:
        try:
            return UUID(self.headers.get("correlation_id", ""))
        except ValueError:
            return self.derived_id("correlation")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff while a dependency is down. There is no attempt cap: a transient failure is
    retried for as long as it takes (see ``aiguillage_common.failures``)."""

    base_delay_s: float = 0.2
    max_delay_s: float = 10.0
    # How long one delivery of a record may be held in the handler before it is sought back and
    # fetched again: well inside max_poll_interval_ms, so a long outage never gets the consumer
    # evicted from its group (which would redeliver elsewhere and rebalance everyone).
    hold_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Full jitter in the upper half: spreads retries of many consumers hitting the same
        outage, yet keeps growing until the cap."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** min(attempt - 1, 32))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


Process = Callable[[InboundRecord], Awaitable[None]]
# Told when a consumer starts waiting for a dependency (with its name) and when it resumes (None).
WaitListener = Callable[[str, Dependency | None], None]


class DeadLetterSink(Protocol):
    async def __call__(self, record: InboundRecord, problem: Problem) -> None: ...


class BatchObserver(Protocol):
    """Told once per batch brought to a durable outcome (metrics: aiguillage_common.metrics):
    how many records, how many were duplicates, the problems of those set aside, and how long
    it took. Once per batch, so that counting costs nothing per record."""

    def batch_done(
        self, records: int, duplicates: int, set_aside: Sequence[Problem], seconds: float
    ) -> None: ...


class HoldBack(Exception):
    """The record could not be processed yet (a dependency is down): seek back, do not commit."""


class BatchScope(Protocol):
    """What the consumer sees of a batch's transaction: how many units of work joined it, and
    the inbox claims it deferred to its end (see ``unit_of_work.SharedTransaction``)."""

    joins: int
    # Claims answered "duplicate" in this run (their event was handled before): no effect.
    duplicates: int

    @property
    def claims_made(self) -> int: ...

    def claims_since(self, mark: int) -> list[Claim]: ...

    def know_duplicates(self, claims: Collection[Claim]) -> None: ...

    def write_at_once(self) -> None: ...

    async def already_handled(self, claims: Collection[Claim]) -> frozenset[Claim]: ...


Transaction = Callable[[], AbstractAsyncContextManager[BatchScope]]


@dataclass
class _NoScope:
    joins: int = 0
    duplicates: int = 0
    claims_made: int = 0

    def claims_since(self, mark: int) -> list[Claim]:
        return []

    def know_duplicates(self, claims: Collection[Claim]) -> None:
        return None

    def write_at_once(self) -> None:
        return None

    async def already_handled(self, claims: Collection[Claim]) -> frozenset[Claim]:
        return frozenset()


@asynccontextmanager
async def _no_transaction() -> AsyncIterator[BatchScope]:
    yield _NoScope()


@dataclass
class _BatchRun:
    """What the runs of one batch learnt, kept across rollbacks and outage retries."""

    # Claims found handled before (a redelivery): answered "duplicate" from then on.
    known: set[Claim] = field(default_factory=set)
    # Claims made by records found poison, answered "new" without looking (deferred): a record
    # that fails only because its event was handled already is a duplicate, not poison. Checked
    # at the start of the next run, on a fresh transaction.
    suspects: dict[int, list[Claim]] = field(default_factory=dict)
    # False once the deferred writes failed for good: each record's rows are written at once.
    deferring: bool = True
    # Duplicates answered in the run that committed (for the observer).
    duplicates: int = 0


class _Restart(Exception):
    """A record of the batch can never succeed: roll back and redo the batch without it."""


class ReliableConsumer:
    """Runs a batch of records through ``process`` until each has a durable outcome.

    The batch runs in one ``transaction`` (see ``unit_of_work.shared_transaction``): the use cases
    see it as their own, the batch commits once, and the offsets are committed after that, so a
    batch costs one commit and one offset commit instead of one per record. Records run in
    order, so per-partition (per-referral) order holds.

    A record that can never succeed (``InvalidMessage``, or a bug) is set aside and dead-lettered
    alone with its reason; if it had joined the transaction (it may have written), the batch is
    rolled back and redone without it first. A
    transient failure is retried, the whole batch, with capped, jittered backoff for as long as
    it takes; after ``hold_s`` the handler raises ``HoldBack`` so the subscriber seeks back and
    polls again (the backoff keeps growing across these redeliveries). The wait is logged once
    when it starts and once when it ends, not per attempt.
    """

    def __init__(
        self,
        name: str,
        process: Process,
        dead_letter: DeadLetterSink,
        policy: RetryPolicy,
        timeout_s: float,
        on_wait: WaitListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        transaction: Transaction = _no_transaction,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._observer = observer
        self._process = process
        self._dead_letter = dead_letter
        self._policy = policy
        self._timeout_s = timeout_s
        self._on_wait = on_wait
        self._clock = clock
        self._transaction = transaction
        self._failures = 0  # consecutive transient failures, across redeliveries
        self._waiting_for: Dependency | None = None
        self._waiting_since = 0.0

    @property
    def waiting_for(self) -> Dependency | None:
        return self._waiting_for

    async def handle(self, record: InboundRecord) -> None:
        await self.handle_batch((record,))

    async def handle_batch(self, records: Sequence[InboundRecord]) -> None:
        started = time.perf_counter()
        poison: dict[int, Problem] = {}
        run = _BatchRun()  # kept across the retries of an outage
        await self._run_transiently(lambda: self._process_all(records, poison, run))
        for index in sorted(poison):
            record, problem = records[index], poison[index]
            with _bound(self.name, record):
                await self._run_transiently(partial(self._dead_letter, record, problem))
                log.warning(
                    "message.dead_lettered",
                    reason=str(problem.reason),
                    field_path=problem.field_path,
                    detail=problem.message,
                )
        if self._observer is not None:
            self._observer.batch_done(
                len(records),
                run.duplicates,
                [poison[index] for index in sorted(poison)],
                time.perf_counter() - started,
            )

    async def _process_all(
        self, records: Sequence[InboundRecord], poison: dict[int, Problem], run: _BatchRun
    ) -> None:
        known, suspects = run.known, run.suspects
        while True:
            ran = False
            try:
                async with self._transaction() as scope:
                    if not run.deferring:
                        scope.write_at_once()
                    if suspects:
                        handled = await scope.already_handled(
                            [c for made in suspects.values() for c in made]
                        )
                        for index, made in suspects.items():
                            if handled.intersection(made):
                                del poison[index]  # run again: it will find its claim taken
                        known |= handled
                        suspects.clear()
                    scope.know_duplicates(known)
                    for index, record in enumerate(records):
                        if index in poison:
                            continue
                        joins, mark = scope.joins, scope.claims_made
                        with _bound(self.name, record):
                            problem = await self._one(record)
                        if problem is not None:
                            poison[index] = problem
                            if scope.joins != joins:
                                # It may have written before failing: undo the batch and redo
                                # it without this record. (Most poison fails before writing:
                                # bad bytes, signature, shape; the others go on at once.)
                                suspects[index] = scope.claims_since(mark)
                                raise _Restart
                        # The batch's writes wait for its end, so its records would otherwise
                        # run back to back without an await: a batch of 200 held the event loop
                        # for ~100 ms, and the service's other tasks (notifications' delivery
                        # lanes, intake's identity API) with it.
                        await asyncio.sleep(0)
                    ran = True
                    run.duplicates = scope.duplicates
                return
            except _Restart:
                continue  # rolled back; the records set aside are skipped this time
            except DuplicateClaims as duplicates:
                # Rolled back: some events were handled before (a redelivery). Run the batch
                # again; their claims now say so and they change nothing.
                known |= duplicates.claims
                continue
            except Exception as error:
                if not ran or not run.deferring or transient_dependency(error) is not None:
                    raise
                # The writes deferred to the end of the batch failed for a reason that is not
                # transient: run the batch again writing each record's rows at once, so the
                # record they belong to is found and dead-lettered alone.
                log.warning("batch.deferred_writes_failed", error_type=type(error).__name__)
                run.deferring = False

    async def _one(self, record: InboundRecord) -> Problem | None:
        """None on success; the problem of a record that can never succeed; raises what is
        transient (the caller retries the batch)."""
        try:
            # A timeout scope, not wait_for: no extra task per record.
            async with asyncio.timeout(self._timeout_s):
                await self._process(record)
        except InvalidMessage as invalid:
            return invalid.problem
        except Exception as error:
            if transient_dependency(error) is not None:
                raise
            # A bug or an unforeseen input. The exception text may quote data (asyncpg puts
            # key values in its details), so only its type and place are logged.
            log.error("message.processing_failed", error_type=type(error).__name__, at=where(error))
            return Problem(
                RejectionReason.PROCESSING_ERROR,
                f"unexpected {type(error).__name__} while processing",
            )
        return None

    async def _run_transiently(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` until it succeeds or fails for a reason that is not transient."""
        held_since = self._clock()
        while True:
            try:
                await attempt()
            except Exception as error:
                dependency = transient_dependency(error)
                if dependency is None:
                    self._resumed()
                    raise
                self._failures += 1
                delay = self._policy.delay(self._failures)
                self._waiting(dependency, type(error).__name__, delay)
                await asyncio.sleep(delay)
                if self._clock() - held_since >= self._policy.hold_s:
                    raise HoldBack(dependency) from None
            else:
                self._resumed()
                return

    def _waiting(self, dependency: Dependency, error_type: str, delay: float) -> None:
        if self._waiting_for != dependency:
            log.warning(
                "consumer.waiting",
                dependency=dependency,
                error_type=error_type,
                retry_in_s=round(delay, 3),
                max_delay_s=self._policy.max_delay_s,
            )
            if self._waiting_for is None:
                self._waiting_since = self._clock()
            self._waiting_for = dependency
            if self._on_wait is not None:
                self._on_wait(self.name, dependency)

    def _resumed(self) -> None:
        if self._waiting_for is not None:
            log.warning(
                "consumer.resumed",
                dependency=self._waiting_for,
                waited_s=round(self._clock() - self._waiting_since, 3),
                attempts=self._failures,
            )
            self._waiting_for = None
            if self._on_wait is not None:
                self._on_wait(self.name, None)
        self._failures = 0


def _bound(consumer: str, record: InboundRecord) -> AbstractContextManager[Any]:
    """The record's ids on every log line written while it is handled."""
    return structlog.contextvars.bound_contextvars(
        consumer=consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        referral_id=record.key_text,
        correlation_id=record.headers.get("correlation_id"),
        event_type=record.headers.get("event_type"),
    )


def where(error: BaseException) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def to_record(raw: ConsumerRecord[bytes, bytes]) -> InboundRecord:
    return InboundRecord(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        # Values were made UTF-8 by the parser (a bad one is flagged, see kafka.tolerant_parser).
        headers={name: (value or b"").decode("utf-8") for name, value in raw.headers},
        # Only the broker's own clock says when a record arrived; a CreateTime is the producer's
        # word, which a replayed record would simply repeat.
        broker_timestamp_ms=raw.timestamp if raw.timestamp_type == LOG_APPEND_TIME else None,
    )


async def _whole_message(message: Any, _original: Any = None) -> Any:
    """Hand the handler the message itself: decoding is ours, so bad payloads reach our code."""
    return message


def subscribe(
    broker: KafkaBroker,
    consumer: ReliableConsumer,
    *,
    topic: str,
    group_id: str,
    documented_payload: Any,
    description: str,
    max_records: int,
    redelivery_pause_s: float = 1.0,
) -> Any:
    """Attach ``consumer`` to ``topic``: batches of up to ``max_records`` records (what one fetch
    returns, never waiting to fill a batch), offsets committed after each batch is durable.

    ``documented_payload`` only feeds the AsyncAPI document: the broker runs with apply_types off,
    so FastStream never validates (and never rejects) a payload before our handler sees it.
    """

    async def on_batch(message: Any) -> None:
        kafka_message: KafkaMessage = message
        raw: tuple[ConsumerRecord[bytes, bytes], ...] = kafka_message.raw_message
        try:
            await consumer.handle_batch([to_record(record) for record in raw])
        except asyncio.CancelledError:
            raise
        except HoldBack:
            # Still waiting for a dependency: hand the records back to the poll loop uncommitted
            # (each partition sought back to its first record of the batch), so the consumer
            # stays in its group and fetches these same records again.
            await kafka_message.nack()
            return
        except Exception as error:
            # Dead-lettering itself failed for a reason that is not transient (a bug): do not
            # commit past the records; seek back and try again after a pause.
            log.error("message.redelivery_scheduled", error_type=type(error).__name__)
            await kafka_message.nack()
            await asyncio.sleep(redelivery_pause_s)
            return
        try:
            await kafka_message.ack()
        except KafkaError as error:
            # The effects are durable; only the offsets are not. The records come again (after
            # a rebalance or restart) and their event ids make the second run a no-op.
            log.warning("message.commit_failed", error_type=type(error).__name__)

    # One record is one event: the document shows the record's payload, not the batch.
    on_batch.__annotations__ = {"message": documented_payload, "return": None}
    on_batch.__name__ = f"consume_{topic.replace('.', '_').replace('-', '_')}"
    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        batch=True,
        max_records=max_records,
        # getmany returns at once when records are there; this only bounds an idle poll (see
        # _PromptBatchSubscriber: no sleep after an empty one).
        batch_timeout_ms=IDLE_POLL_MS,
        parser=tolerant_parser,
        decoder=_whole_message,
        title=f"{topic}:{consumer.name}",
        description=description,
    )
    subscriber(on_batch)
    prompt(subscriber)
    return subscriber  # its aiokafka consumer (``.consumer``, once started) tells the lag


# How long an idle poll waits for records before the consume loop goes round again.
IDLE_POLL_MS = 500


class _PromptBatchSubscriber(BatchSubscriber):
    """FastStream's batch subscriber, without the sleep after an empty poll.

    ``BatchSubscriber.get_msg`` (faststream 0.7) sleeps ``batch_timeout_ms`` again after a
    ``getmany`` that returned nothing, and a record arriving during that sleep waits for it: up to
    that long per hop at low rates. A short timeout bounds the wait but makes every idle
    subscriber go round its loop dozens of times a second (measured: +24 ms of CPU per second per
    service with 20 ms). Without the sleep, ``getmany`` itself waits (returning as soon as
    records are fetched, which aiokafka does in the background), so an idle subscriber goes
    round twice a second and a record waits for nothing."""

    __slots__ = ()

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        started = time.monotonic()
        messages = await consumer.getmany(
            timeout_ms=self.batch_timeout_ms, max_records=self.max_records
        )
        if not messages and time.monotonic() - started < self.batch_timeout_ms / 10_000:
            # Empty at once (a consumer closing): never spin; the loop checks it is running.
            await asyncio.sleep(0.05)
        return tuple(chain.from_iterable(messages.values()))


def prompt(subscriber: Any) -> None:
    """Make a FastStream batch subscriber one that does not sleep after an empty poll."""
    if type(subscriber) is not BatchSubscriber:  # another FastStream: keep its own, say so
        raise TypeError(f"expected faststream's BatchSubscriber, got {type(subscriber)!r}")
    subscriber.__class__ = _PromptBatchSubscriber
