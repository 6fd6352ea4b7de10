"""Use case: a prescriber submitted a referral."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Protocol

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.geography import Geography
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
    ReferralRejected,
    Rejection,
)
from aiguillage_schemas.events.referral_submitted import Identity, ReferralSubmitted
from aiguillage_schemas.vocabulary import RejectionReason
from referral_intake.domain.admission import Admitted, admit
from referral_intake.domain.registry import outside_jurisdiction

CONSUMER = "referral-intake"
SOURCE = "referral-intake"
_IDS = uuid.UUID("0b9a4bb0-54c4-4b8e-8d3c-1f0b6f1a9e21")


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    ACCEPTED_FLAGGED = "accepted_outside_jurisdiction"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    AMENDED = "amended"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


class IntakeUnitOfWork(UnitOfWork, Protocol):
    async def add_referral(
        self,
        event: ReferralSubmitted,
        admitted: Admitted,
        identity: Identity,
        outside_jurisdiction: bool,
    ) -> str | None:
        """Store the referral and its sealed identity unless its id is taken; None when stored,
        else the fingerprint stored under that id (nothing written)."""
        ...


@dataclass(frozen=True, slots=True)
class Topics:
    accepted: str
    rejected: str


def derived_id(event_id: uuid.UUID, purpose: str) -> uuid.UUID:
    """Ids of the events we derive are stable, so a retried transaction emits the same ones."""
    return uuid.uuid5(_IDS, f"{purpose}:{event_id}")


async def submit_referral(
    event: ReferralSubmitted,
    conflict: Callable[[], Rejection],
    uow_factory: Callable[[], IntakeUnitOfWork],
    geography: Geography,
    topics: Topics,
    today: date,
    prescriber: PrescriberEntry,
    flag_outside_jurisdiction: bool,
) -> Outcome:
    """Admit the referral once: store it (identity sealed) and emit the identity-free event.

    ``conflict`` makes the rejection to send if the referral id is already taken by other
    content (made only then: it hashes the record).
    ``prescriber`` is the authenticated sender; a referral outside its jurisdiction is refused, or
    admitted and flagged when ``flag_outside_jurisdiction`` (a policy setting).
    Checks that need no database raise ``InvalidMessage`` before any transaction is opened.
    """
    admitted = admit(event, geography, today)
    if isinstance(admitted, Problem):
        raise InvalidMessage(admitted)
    foreign = outside_jurisdiction(prescriber, admitted.data.residence_departement)
    if foreign is not None and not flag_outside_jurisdiction:
        raise InvalidMessage(foreign)
    uow = uow_factory()
    async with uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return Outcome.DUPLICATE
        stored = await uow.add_referral(event, admitted, event.data.identity, foreign is not None)
        if stored == admitted.fingerprint:
            return Outcome.DUPLICATE  # resubmitted under a new event id: one effect only
        if stored is not None:
            await uow.emit(topics.rejected, _conflict(event, conflict()))
            return Outcome.CONFLICTING_DUPLICATE
        await uow.emit(
            topics.accepted,
            ReferralAccepted(
                event_id=derived_id(event.event_id, "accepted"),
                source=SOURCE,
                correlation_id=event.correlation_id,
                subject=event.subject,
                data=admitted.data,
            ),
        )
    return Outcome.ACCEPTED if foreign is None else Outcome.ACCEPTED_FLAGGED


def conflict_problem(prescriber_id: str | None = None) -> Problem:
    return Problem(
        RejectionReason.CONFLICTING_DUPLICATE,
        "this referral id was already submitted with different content",
        "subject",
        prescriber_id,
    )


def _conflict(event: ReferralSubmitted, conflict: Rejection) -> ReferralRejected:
    return ReferralRejected(
        event_id=derived_id(event.event_id, "rejected"),
        source=SOURCE,
        correlation_id=event.correlation_id,
        subject=event.subject,
        data=conflict,
    )
