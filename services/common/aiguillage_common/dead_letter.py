"""Dead-letter sink for internal consumers: the record's coordinates, hash and reason, no payload.

Internal topics carry no identity, but a poison message could be anything; operators fetch the
original bytes from the source topic by the coordinates given here, within its retention.
"""

from __future__ import annotations

import re

from aiguillage_common.codec import Problem, encode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.kafka import KafkaProducerAdapter, OutgoingRecord, event_headers
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_lifecycle import DeadLetter, MessageDeadLettered

_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UNKNOWN_SUBJECT = "unknown"


def safe_subject(record: InboundRecord) -> str:
    """The record's key when it looks like a referral id, else 'unknown' (never echo junk)."""
    key = record.key_text
    return key if key is not None and _SUBJECT.match(key) else UNKNOWN_SUBJECT


def dead_letter_event(
    record: InboundRecord, problem: Problem, consumer: str
) -> MessageDeadLettered:
    return MessageDeadLettered(
        event_id=record.derived_id(f"dead-letter:{consumer}"),
        source=consumer,
        correlation_id=record.correlation_id(),
        subject=safe_subject(record),
        data=DeadLetter(**record.rejection(problem).model_dump(), consumer=consumer),
    )


async def publish_event(producer: KafkaProducerAdapter, topic: str, event: Envelope) -> None:
    await producer.publish(
        OutgoingRecord(
            topic=topic, key=event.subject, value=encode_event(event), headers=event_headers(event)
        )
    )


class DeadLetterPublisher:
    def __init__(self, producer: KafkaProducerAdapter, topic: str, consumer: str) -> None:
        self._producer = producer
        self._topic = topic
        self._consumer = consumer

    async def __call__(self, record: InboundRecord, problem: Problem) -> None:
        await publish_event(
            self._producer, self._topic, dead_letter_event(record, problem, self._consumer)
        )
