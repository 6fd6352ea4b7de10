"""Use cases: follow who holds each referral, and release the identity to that centre only.

Holder tracking consumes ``referrals.routed`` with the usual guarantees (inbox by event id in the
same transaction as the change, commit after it). A release request is answered from the same
database, and every request, granted or not, is audited before any identity is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from aiguillage_common.identity_requests import Release
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_submitted import Identity
from referral_intake.domain.identity_release import (
    Holder,
    ReferralState,
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


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """What one release request reads, in one snapshot."""

    offer_seen: bool | None  # None when the request names no offer event
    state: ReferralState | None  # None: no such referral
    sealed: object | None  # the sealed identity, opened only for a grant


class ReleaseStore(Protocol):
    async def release_view(
        self, referral_id: str, consumer: str, offer_event_id: UUID | None
    ) -> ReleaseView: ...

    async def audit_release(
        self, referral_id: str, centre_id: str, outcome: Release, view: ReleaseView
    ) -> bool:
        """Record the answer; False (nothing recorded) for a grant on a referral that was
        cancelled, purged or amended since ``view`` was read."""
        ...

    def open_identity(self, referral_id: str, sealed: object) -> Identity: ...


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


# A grant refused by the audit means the referral changed since it was read; reading again
# settles it (cancelled: 'gone'; amended: the new identity). A referral that keeps changing
# this fast is a fault, answered 500 rather than looped on.
MAX_READS = 5


async def release_identity(request: ReleaseRequest, store: ReleaseStore) -> ReleaseAnswer:
    for _ in range(MAX_READS):
        # Whether the offer was handled and who holds the referral are read together, in one
        # snapshot: read apart, the batch that handles the offer could commit in between, and
        # the rightful centre would read as not the holder and be refused for good (403).
        view = await store.release_view(
            request.referral_id, ROUTED_CONSUMER, request.offer_event_id
        )
        outcome = decide_release(view.state, request.centre_id, view.offer_seen)
        # Audited before the identity is opened: a failure to audit releases nothing. A grant
        # the audit refuses (the referral changed meanwhile) is decided again on a fresh read.
        if await store.audit_release(request.referral_id, request.centre_id, outcome, view):
            identity = (
                store.open_identity(request.referral_id, view.sealed)
                if outcome is Release.GRANTED
                else None
            )
            return ReleaseAnswer(outcome, identity)
    raise RuntimeError(f"the referral changed at each of {MAX_READS} reads")
