"""Kafka side of intake: authenticate a raw record, decode it, dispatch it, or reject it.

Order of checks, cheapest and least trusting first: size, headers, emptiness, then the signature
(before the body is parsed), then the body, then the business rules. Once the sender is
authenticated every rejection names it, so notifications can tell it what to fix.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Protocol

from aiguillage_common.codec import InvalidMessage, Problem, decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.dead_letter import publish_event, safe_subject
from aiguillage_common.geography import Geography
from aiguillage_common.kafka import KafkaProducerAdapter
from aiguillage_common.logging import get_logger
from aiguillage_common.replay_headers import REPLAY_OF_HEADER
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.prescribers import PrescriberEntry, PrescriberRegistryUpdated
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralRejected,
)
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import (
    ReferralSubmitted,
    ReferralSubmittedV1,
    upgrade_v1,
)
from aiguillage_schemas.signing import KEY_ID_HEADER
from aiguillage_schemas.vocabulary import RejectionReason
from referral_intake.domain.authentication import (
    ReferenceSource,
    WindowReference,
    authenticate,
    signing_key_id,
    window_reference,
)
from referral_intake.domain.identity_release import HOLDER_EVENTS
from referral_intake.use_cases.identity_release import HoldersUnitOfWork, track_holder
from referral_intake.use_cases.referral_requests import (
    RequestsUnitOfWork,
    amend_referral,
    cancel_referral,
)
from referral_intake.use_cases.submit_referral import (
    SOURCE,
    IntakeUnitOfWork,
    Outcome,
    Topics,
    conflict_problem,
    submit_referral,
)
from referral_intake.use_cases.update_registry import RegistryUnitOfWork, update_registry

log = get_logger("aiguillage.intake")
ACCEPTED_VERSIONS: tuple[type[Envelope], ...] = (
    ReferralSubmitted,
    ReferralSubmittedV1,
    ReferralAmended,
    ReferralCancellationRequested,
)


class Registry(Protocol):
    async def by_key_id(self, key_id: str) -> PrescriberEntry | None: ...


class IntakeUnitOfWorkAll(IntakeUnitOfWork, RequestsUnitOfWork, Protocol):
    pass


def read_request(record: InboundRecord) -> Envelope:
    """Decode the body and check the key; v1 submissions come out upgraded to v2."""
    event = decode_event(record.value, ACCEPTED_VERSIONS)
    if record.key is None:
        raise InvalidMessage(
            Problem(RejectionReason.MISSING_KEY, "the Kafka key must be the referral id")
        )
    if record.key_text != event.subject:
        raise InvalidMessage(
            Problem(RejectionReason.KEY_MISMATCH, "the Kafka key differs from subject", "subject")
        )
    if isinstance(event, ReferralSubmittedV1):
        return upgrade_v1(event)
    return event


def claimed_sender(event: Envelope) -> tuple[str, str]:
    """The prescriber id the body claims, and where it says so."""
    if isinstance(event, ReferralSubmitted):
        return event.data.prescriber.prescriber_id, "data.prescriber.prescriber_id"
    assert isinstance(event, ReferralAmended | ReferralCancellationRequested)
    return event.data.prescriber_id, "data.prescriber_id"


class IntakeHandler:
    def __init__(
        self,
        uow_factory: Callable[[], IntakeUnitOfWorkAll],
        geography: Geography,
        topics: Topics,
        max_bytes: int,
        today: Callable[[], date],
        registry: Registry,
        secrets: Mapping[str, bytes],
        replay_window_s: int,
        flag_outside_jurisdiction: bool,
        clock: Callable[[], float] = time.time,
        operations_secret: bytes = b"",
    ) -> None:
        self._uow_factory = uow_factory
        self._geography = geography
        self._topics = topics
        self._max_bytes = max_bytes
        self._today = today
        self._registry = registry
        self._secrets = dict(secrets)
        self._window_s = replay_window_s
        self._flag = flag_outside_jurisdiction
        self._clock = clock
        # Empty: an operator's replay headers are ignored and a replay is checked like any record.
        self._operations_secret = operations_secret

    async def __call__(self, record: InboundRecord) -> None:
        try:
            value = record.checked_value(self._max_bytes)
        except InvalidMessage as invalid:
            raise InvalidMessage(await self._named_by_key_id(record, invalid.problem)) from None
        prescriber = await self._authenticate(record, value)
        try:
            event = read_request(record)
            claimed, path = claimed_sender(event)
            if claimed != prescriber.prescriber_id:
                raise InvalidMessage(
                    Problem(
                        RejectionReason.BAD_SIGNATURE,
                        "the record is signed with another prescriber's key",
                        path,
                    )
                )
            outcome = await self._dispatch(record, event, prescriber)
        except InvalidMessage as invalid:
            named = dataclasses.replace(invalid.problem, prescriber_id=prescriber.prescriber_id)
            raise InvalidMessage(named) from None
        log.info(
            f"referral.{outcome}",
            referral_id=event.subject,
            correlation_id=str(event.correlation_id),
            prescriber_id=prescriber.prescriber_id,
        )

    async def _named_by_key_id(self, record: InboundRecord, problem: Problem) -> Problem:
        """A record refused before its signature can be checked (too large, broken headers,
        empty) names the prescriber whose registered key id it carries, as a bad signature does:
        the key's owner must learn that records under its key are refused. Unproven, so it is
        the key's owner that is told, never a prescriber the body claims to be."""
        key_id = record.headers.get(KEY_ID_HEADER)
        if not key_id:
            return problem
        entry = await self._registry.by_key_id(key_id)
        if entry is None:
            return problem
        return dataclasses.replace(problem, prescriber_id=entry.prescriber_id)

    async def _authenticate(self, record: InboundRecord, value: bytes) -> PrescriberEntry:
        key_id = signing_key_id(record.headers)
        if isinstance(key_id, Problem):
            raise InvalidMessage(key_id)
        entry = await self._registry.by_key_id(key_id)
        reference = self._window_reference(record, value)
        found = authenticate(
            record.headers,
            value,
            entry,
            self._secrets.get(key_id),
            reference.at_s,
            self._window_s,
        )
        if isinstance(found, Problem):
            raise InvalidMessage(found)
        return found

    def _window_reference(self, record: InboundRecord, value: bytes) -> WindowReference:
        """When the record first reached the broker; says so when an operator's replay is
        involved, so the operators see their replays counted (or not). Never logs a header
        value but the verified replay's coordinates: signatures stay out of the logs."""
        reference = window_reference(
            record.headers,
            value,
            record.broker_timestamp_ms,
            self._operations_secret,
            self._clock(),
        )
        if reference.source is ReferenceSource.OPERATOR_REPLAY:
            log.info(
                "referral.operator_replay",
                coordinates=record.coordinates(),
                replay_of=record.headers[REPLAY_OF_HEADER],
            )
        elif reference.unverified_replay:
            log.warning(
                "referral.replay_headers_unverified",
                coordinates=record.coordinates(),
                operations_secret_set=bool(self._operations_secret),
            )
        return reference

    async def _dispatch(
        self, record: InboundRecord, event: Envelope, prescriber: PrescriberEntry
    ) -> Outcome:
        if isinstance(event, ReferralSubmitted):
            return await submit_referral(
                event,
                lambda: record.rejection(
                    conflict_problem(prescriber.prescriber_id), event.event_id
                ),
                self._uow_factory,
                self._geography,
                self._topics,
                self._today(),
                prescriber,
                self._flag,
            )
        if isinstance(event, ReferralCancellationRequested):
            return await cancel_referral(
                event, prescriber, self._uow_factory, self._topics, datetime.now(UTC)
            )
        assert isinstance(event, ReferralAmended)
        return await amend_referral(event, prescriber, self._uow_factory, self._today())


class RegistryHandler:
    """Registry updates: same delivery guarantees as referrals (inbox, commit after storing)."""

    def __init__(self, uow_factory: Callable[[], RegistryUnitOfWork]) -> None:
        self._uow_factory = uow_factory

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, (PrescriberRegistryUpdated,))
        assert isinstance(event, PrescriberRegistryUpdated)
        if record.key_text != event.subject or event.subject != event.data.prescriber_id:
            raise InvalidMessage(
                Problem(
                    RejectionReason.KEY_MISMATCH,
                    "key, subject and prescriber_id must be the same prescriber id",
                    "subject",
                )
            )
        kept = await update_registry(event, self._uow_factory)
        log.info(
            "registry.updated" if kept else "registry.update_ignored",
            prescriber_id=event.data.prescriber_id,
            signing_key_id=event.data.signing_key_id,
            active=event.data.active,
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


class HolderHandler:
    """Routing events, read only to know which centre currently holds each referral."""

    def __init__(self, uow_factory: Callable[[], HoldersUnitOfWork]) -> None:
        self._uow_factory = uow_factory

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, HOLDER_EVENTS)
        if record.key_text != event.subject:
            raise InvalidMessage(
                Problem(
                    RejectionReason.KEY_MISMATCH, "the Kafka key differs from subject", "subject"
                )
            )
        applied = await track_holder(event, self._uow_factory)
        # Debug: routing logs each decision with its centre, the holder is in identity_holders
        # (and the console's timeline); at info this line was a third of intake's log volume.
        log.debug(
            "identity_holder.tracked" if applied else "identity_holder.duplicate_ignored",
            referral_id=event.subject,
            routing_event=event.event_type,
        )
