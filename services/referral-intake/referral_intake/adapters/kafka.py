"""Kafka side of intake: turn a raw record into a submitted referral, or a rejection."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from aiguillage_common.codec import InvalidMessage, Problem, decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.dead_letter import publish_event, safe_subject
from aiguillage_common.geography import Geography
from aiguillage_common.kafka import KafkaProducerAdapter
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.referral_lifecycle import ReferralRejected
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from aiguillage_schemas.vocabulary import RejectionReason
from referral_intake.use_cases.submit_referral import (
    SOURCE,
    IntakeUnitOfWork,
    Topics,
    conflict_problem,
    submit_referral,
)

log = get_logger("aiguillage.intake")
ACCEPTED_VERSIONS: tuple[type[ReferralSubmitted], ...] = (ReferralSubmitted,)


def read_submission(record: InboundRecord, max_bytes: int) -> ReferralSubmitted:
    """Envelope-level checks that need nothing but the record."""
    if record.value is not None and len(record.value) > max_bytes:
        raise InvalidMessage(
            Problem(RejectionReason.MESSAGE_TOO_LARGE, f"the value exceeds {max_bytes} bytes")
        )
    if record.has_bad_headers:
        raise InvalidMessage(Problem(RejectionReason.BAD_HEADER, "a header value is not UTF-8"))
    event = decode_event(record.value, ACCEPTED_VERSIONS)
    assert isinstance(event, ReferralSubmitted)
    if record.key is None:
        raise InvalidMessage(
            Problem(RejectionReason.MISSING_KEY, "the Kafka key must be the referral id")
        )
    if record.key_text != event.subject:
        raise InvalidMessage(
            Problem(RejectionReason.KEY_MISMATCH, "the Kafka key differs from subject", "subject")
        )
    return event


class IntakeHandler:
    def __init__(
        self,
        uow_factory: Callable[[], IntakeUnitOfWork],
        geography: Geography,
        topics: Topics,
        max_bytes: int,
        today: Callable[[], date],
    ) -> None:
        self._uow_factory = uow_factory
        self._geography = geography
        self._topics = topics
        self._max_bytes = max_bytes
        self._today = today

    async def __call__(self, record: InboundRecord) -> None:
        event = read_submission(record, self._max_bytes)
        outcome = await submit_referral(
            event,
            record.rejection(conflict_problem(), event.event_id),
            self._uow_factory,
            self._geography,
            self._topics,
            self._today(),
        )
        log.info(
            f"referral.{outcome}",
            referral_id=event.subject,
            correlation_id=str(event.correlation_id),
        )


class RejectionPublisher:
    """Intake's dead-letter sink: the prescriber-facing ``referrals.rejected`` topic."""

    def __init__(self, producer: KafkaProducerAdapter, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def __call__(self, record: InboundRecord, problem: Problem) -> None:
        event = ReferralRejected(
            event_id=record.derived_id("rejected"),
            source=SOURCE,
            correlation_id=record.correlation_id(),
            subject=safe_subject(record),
            data=record.rejection(problem),
        )
        await publish_event(self._producer, self._topic, event)
