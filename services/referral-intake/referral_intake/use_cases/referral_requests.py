"""Use cases: the prescriber that submitted a referral amends or cancels it.

A referral submitted by someone else is "unknown" to the sender: telling it apart from a missing
one would let a prescriber probe other courts' referral ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.events.referral_lifecycle import ReferralCancelled, ReferralCancelledData
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import Identity
from aiguillage_schemas.vocabulary import RejectionReason
from referral_intake.use_cases.submit_referral import (
    CONSUMER,
    SOURCE,
    Outcome,
    Topics,
    derived_id,
)


@dataclass(frozen=True, slots=True)
class StoredReferral:
    prescriber_id: str
    status: str  # 'open' or 'cancelled'
    purged: bool


class RequestsUnitOfWork(UnitOfWork, Protocol):
    async def referral(self, referral_id: str) -> StoredReferral | None: ...

    async def cancel(self, referral_id: str, at: datetime) -> None: ...

    async def replace_identity(self, referral_id: str, identity: Identity) -> None: ...


def _unknown(prescriber: PrescriberEntry) -> InvalidMessage:
    return InvalidMessage(
        Problem(
            RejectionReason.UNKNOWN_REFERRAL,
            "no referral with this id was submitted by this prescriber",
            "subject",
            prescriber.prescriber_id,
        )
    )


def _owned(stored: StoredReferral | None, prescriber: PrescriberEntry) -> StoredReferral:
    if stored is None or stored.prescriber_id != prescriber.prescriber_id:
        raise _unknown(prescriber)
    return stored


async def cancel_referral(
    event: ReferralCancellationRequested,
    prescriber: PrescriberEntry,
    uow_factory: Callable[[], RequestsUnitOfWork],
    topics: Topics,
    now: datetime,
) -> Outcome:
    """Close the referral once and forward ``referral.cancelled`` to routing via the outbox."""
    uow = uow_factory()
    async with uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return Outcome.DUPLICATE
        stored = _owned(await uow.referral(event.subject), prescriber)
        if stored.status == "cancelled":
            return Outcome.DUPLICATE  # cancelling twice has one effect
        await uow.cancel(event.subject, now)
        await uow.emit(
            topics.accepted,  # same topic and key as the referral: ordered after it
            ReferralCancelled(
                event_id=derived_id(event.event_id, "cancelled"),
                source=SOURCE,
                correlation_id=event.correlation_id,
                subject=event.subject,
                data=ReferralCancelledData(
                    prescriber_id=prescriber.prescriber_id,
                    prescriber_kind=prescriber.kind,
                    reason=event.data.reason,
                ),
            ),
        )
    return Outcome.CANCELLED


async def amend_referral(
    event: ReferralAmended,
    prescriber: PrescriberEntry,
    uow_factory: Callable[[], RequestsUnitOfWork],
    today: date,
) -> Outcome:
    """Replace the sealed identity (new person key; the old one is gone with its row)."""
    if event.data.identity.birth_date >= today:
        raise InvalidMessage(
            Problem(
                RejectionReason.IMPOSSIBLE_DATE,
                "birth date is not in the past",
                "data.identity.birth_date",
                prescriber.prescriber_id,
            )
        )
    uow = uow_factory()
    async with uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return Outcome.DUPLICATE
        stored = _owned(await uow.referral(event.subject), prescriber)
        if stored.status != "open" or stored.purged:
            raise InvalidMessage(
                Problem(
                    RejectionReason.REFERRAL_CLOSED,
                    "the referral is closed and can no longer be amended",
                    "subject",
                    prescriber.prescriber_id,
                )
            )
        await uow.replace_identity(event.subject, event.data.identity)
    return Outcome.AMENDED
