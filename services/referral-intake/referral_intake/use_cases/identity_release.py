"""Use cases: follow who holds each referral, and release the identity to that centre only.

Holder tracking consumes ``referrals.routed`` with the usual guarantees (inbox by event id in the
same transaction as the change, commit after it). A release request is answered from the same
database, and every request, granted or not, is audited in the transaction that reads the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_submitted import Identity
from referral_intake.domain.identity_release import (
    Holder,
    ReferralState,
    Release,
    Unchanged,
    decide_release,
    holder_after,
    housing_holder_after,
)

ROUTED_CONSUMER = "referral-intake.routed"


class HoldersUnitOfWork(UnitOfWork, Protocol):
    async def set_holder(self, referral_id: str, holder: Holder | None, event_id: UUID) -> None: ...

    async def set_housing_holder(
        self, referral_id: str, holder: Holder | None, event_id: UUID
    ) -> None: ...


class ReleaseUnitOfWork(UnitOfWork, Protocol):
    async def referral_state(self, referral_id: str) -> ReferralState | None: ...

    async def has_handled(self, consumer: str, event_id: UUID) -> bool: ...

    async def open_identity(self, referral_id: str) -> Identity: ...

    async def audit_release(self, referral_id: str, centre_id: str, outcome: Release) -> None: ...


async def track_holder(event: Envelope, uow_factory: Callable[[], HoldersUnitOfWork]) -> bool:
    """Apply one routing event; False for a duplicate (already applied)."""
    uow = uow_factory()
    async with uow:
        if not await uow.claim(ROUTED_CONSUMER, event.event_id):
            return False
        holder = holder_after(event)
        if not isinstance(holder, Unchanged):
            await uow.set_holder(event.subject, holder, event.event_id)
        housing = housing_holder_after(event)
        if not isinstance(housing, Unchanged):
            await uow.set_housing_holder(event.subject, housing, event.event_id)
    return True


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    referral_id: str
    centre_id: str
    offer_event_id: UUID | None = None  # the routing event the caller acts on, if any


@dataclass(frozen=True, slots=True)
class ReleaseAnswer:
    outcome: Release
    identity: Identity | None = None


async def release_identity(
    request: ReleaseRequest, uow_factory: Callable[[], ReleaseUnitOfWork]
) -> ReleaseAnswer:
    uow = uow_factory()
    async with uow:
        # Whether the offer was handled is read BEFORE the holder. Each statement sees what was
        # committed when it ran, and the batch that handles the offer may commit between the two
        # reads: read the other way round, the holder would be the one before the offer while the
        # offer reads as handled, and the rightful centre would be refused for good (403).
        seen = (
            None
            if request.offer_event_id is None
            else await uow.has_handled(ROUTED_CONSUMER, request.offer_event_id)
        )
        state = await uow.referral_state(request.referral_id)
        outcome = decide_release(state, request.centre_id, seen)
        # Audited before the identity is read: a failure to audit releases nothing.
        await uow.audit_release(request.referral_id, request.centre_id, outcome)
        identity = (
            await uow.open_identity(request.referral_id) if outcome is Release.GRANTED else None
        )
    return ReleaseAnswer(outcome, identity)
