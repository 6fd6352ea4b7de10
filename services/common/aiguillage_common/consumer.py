"""Reliable consumption: process, retry what is transient, dead-letter what is not, then commit.

The rules (see the engineering notes): FastStream's default ACK_FIRST auto-commits before the
handler finishes, and ACK / REJECT_ON_ERROR commit even when it raises, so subscribers use MANUAL
ack and this module decides. The offset is committed only after the effect is durable (the use
case's transaction committed) or after the message is on a dead-letter topic with its reason.
Transient failures are retried in place with capped, jittered backoff; when the dead-letter publish
itself fails the message is sought back and redelivered, never skipped.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import asyncpg
import structlog
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.middlewares import AckPolicy

from aiguillage_common.codec import InvalidMessage, Problem, sha256_hex
from aiguillage_common.kafka import BAD_HEADERS_MARKER, tolerant_parser
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.referral_lifecycle import Rejection
from aiguillage_schemas.vocabulary import RejectionReason

log = get_logger("aiguillage.consumer")

# Failures worth retrying: the same message may well succeed once the peer is back.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
)
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

    def rejection(self, problem: Problem, event_id: UUID | None = None) -> Rejection:
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
    max_attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter: spreads retries of many consumers hitting the same outage."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


Process = Callable[[InboundRecord], Awaitable[None]]


class DeadLetterSink(Protocol):
    async def __call__(self, record: InboundRecord, problem: Problem) -> None: ...


class ReliableConsumer:
    """Runs one record through ``process`` until it has a durable outcome. Never raises for the
    record's own fault; raises only when even the dead-letter topic cannot be reached."""

    def __init__(
        self,
        name: str,
        process: Process,
        dead_letter: DeadLetterSink,
        policy: RetryPolicy,
        timeout_s: float,
    ) -> None:
        self.name = name
        self._process = process
        self._dead_letter = dead_letter
        self._policy = policy
        self._timeout_s = timeout_s

    async def handle(self, record: InboundRecord) -> None:
        with structlog.contextvars.bound_contextvars(
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            referral_id=record.key_text,
            correlation_id=record.headers.get("correlation_id"),
            event_type=record.headers.get("event_type"),
        ):
            problem = await self._outcome(record)
            if problem is not None:
                await self._dead_letter(record, problem)
                log.warning(
                    "message.dead_lettered",
                    reason=str(problem.reason),
                    field_path=problem.field_path,
                    detail=problem.message,
                )

    async def _outcome(self, record: InboundRecord) -> Problem | None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.wait_for(self._process(record), self._timeout_s)
            except InvalidMessage as invalid:
                return invalid.problem
            except TRANSIENT_ERRORS as error:
                if attempt >= self._policy.max_attempts:
                    log.error(
                        "message.retries_exhausted",
                        attempts=attempt,
                        error_type=type(error).__name__,
                    )
                    return Problem(
                        RejectionReason.RETRIES_EXHAUSTED,
                        f"gave up after {attempt} attempts ({type(error).__name__})",
                    )
                delay = self._policy.delay(attempt)
                log.warning(
                    "message.retrying",
                    attempt=attempt,
                    error_type=type(error).__name__,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
            except Exception as error:
                # A bug or an unforeseen input. The exception text may quote data (asyncpg puts
                # key values in its details), so only its type and place are logged.
                log.error(
                    "message.processing_failed", error_type=type(error).__name__, at=where(error)
                )
                return Problem(
                    RejectionReason.PROCESSING_ERROR,
                    f"unexpected {type(error).__name__} while processing",
                )
            else:
                return None


def where(error: BaseException) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _to_record(message: KafkaMessage) -> InboundRecord:
    raw: Any = message.raw_message
    return InboundRecord(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        headers=dict(message.headers),
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
    redelivery_pause_s: float = 1.0,
) -> None:
    """Attach ``consumer`` to ``topic`` with manual commits after durable outcomes.

    ``documented_payload`` only feeds the AsyncAPI document: the broker runs with apply_types off,
    so FastStream never validates (and never rejects) a payload before our handler sees it.
    """

    async def on_message(message: Any) -> None:
        kafka_message: KafkaMessage = message
        try:
            await consumer.handle(_to_record(kafka_message))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Even the dead-letter topic is unreachable: do not commit, seek back, try again.
            log.error("message.redelivery_scheduled", error_type=type(error).__name__)
            await kafka_message.nack()
            await asyncio.sleep(redelivery_pause_s)
            return
        await kafka_message.ack()

    on_message.__annotations__ = {"message": documented_payload, "return": None}
    on_message.__name__ = f"consume_{topic.replace('.', '_').replace('-', '_')}"
    broker.subscriber(
        topic,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        parser=tolerant_parser,
        decoder=_whole_message,
        title=f"{topic}:{consumer.name}",
        description=description,
    )(on_message)
