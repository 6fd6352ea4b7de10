"""Use cases of centre staff: answer an offer, report the path, confirm or change capacity.

Each runs in one transaction: the access rule is checked against the projection row (locked),
the signed event is queued in the outbox (published by the relay, signed at send time), the
referral is marked as waiting for routing's answer, and the action is audited. A second click
on the same button finds the pending answer and publishes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import DeclineReason
from aiguillage_schemas.events.routing_decisions import PathReportKind, TerminationReason
from aiguillage_schemas.vocabulary import ServiceCode
from portal.domain import responses
from portal.domain.access import (
    Principal,
    ReferralView,
    may_answer_offer,
    may_change_capacity,
    may_report_path,
    may_see_offer,
)
from portal.domain.responses import ActionRefused, OfferContext


class NotFound(LookupError):
    """Unknown, or not this user's to see: the same answer for both (404)."""


class ActionsUnitOfWork(UnitOfWork, Protocol):
    async def referral_for_update(self, referral_id: str) -> Any: ...

    async def site_for_update(self, site_id: str, service: str) -> Any: ...

    async def set_pending(self, referral_id: str, action: str | None) -> None: ...

    async def set_capacity(
        self,
        site_id: str,
        service: str,
        places_total: int | None,
        as_of: datetime,
        actor_id: str | None,
        *,
        open_: bool = True,
    ) -> bool: ...

    async def audit(self, action: str, outcome: str, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Topics:
    centre_responses: str
    directory_updates: str


def _context(row: Any) -> OfferContext:
    return OfferContext(row["referral_id"], row["correlation_id"], row["centre_id"], row["site_id"])


async def answer_offer(
    principal: Principal,
    referral_id: str,
    answer: Literal["accepted", "declined"],
    reason: DeclineReason | None,
    text: str | None,
    uow_factory: Callable[[], ActionsUnitOfWork],
    topics: Topics,
    now: datetime,
) -> Envelope:
    async with uow_factory() as uow:
        row = await uow.referral_for_update(referral_id)
        if row is None or not may_see_offer(principal, view := ReferralView.of(row)):
            raise NotFound(referral_id)
        if not may_answer_offer(principal, view):
            raise ActionRefused("Cette offre a déjà reçu une réponse.")
        event = responses.offer_answer(principal, _context(row), answer, reason, text, now)
        await uow.emit(topics.centre_responses, event)
        await uow.set_pending(referral_id, answer)
        await uow.audit(
            "offer_answered",
            answer,
            user_id=principal.user_id,
            referral_id=referral_id,
            detail={
                "site_id": row["site_id"],
                "decline_reason": reason,
                "event_id": str(event.event_id),
            },
        )
    return event


async def report_path(
    principal: Principal,
    referral_id: str,
    report: PathReportKind,
    occurred_on: date,
    uow_factory: Callable[[], ActionsUnitOfWork],
    topics: Topics,
    today: date,
    *,
    justified: bool | None = None,
    termination_reason: TerminationReason | None = None,
    module: ServiceCode | None = None,
) -> Envelope:
    async with uow_factory() as uow:
        row = await uow.referral_for_update(referral_id)
        if row is None or not may_see_offer(principal, view := ReferralView.of(row)):
            raise NotFound(referral_id)
        if not may_report_path(principal, view):
            raise ActionRefused("Le parcours se déclare une fois l'orientation acceptée.")
        event = responses.path_report(
            principal,
            _context(row),
            report,
            occurred_on,
            today,
            justified=justified,
            termination_reason=termination_reason,
            module=module,
        )
        await uow.emit(topics.centre_responses, event)
        await uow.audit(
            "path_reported",
            report,
            user_id=principal.user_id,
            referral_id=referral_id,
            detail={"site_id": row["site_id"], "event_id": str(event.event_id)},
        )
    return event


async def set_capacity(
    principal: Principal,
    site_id: str,
    service: ServiceCode,
    places_total: int,
    uow_factory: Callable[[], ActionsUnitOfWork],
    topics: Topics,
    now: datetime,
) -> Envelope:
    """Confirms (same number) or changes the places of one of the user's site-services."""
    async with uow_factory() as uow:
        row = await uow.site_for_update(site_id, str(service))
        if row is None or not may_change_capacity(principal, row["centre_id"]):
            raise NotFound(site_id)
        event = responses.capacity_update(principal, site_id, service, places_total, now)
        await uow.emit(topics.directory_updates, event)
        await uow.set_capacity(site_id, str(service), places_total, now, principal.actor_id)
        changed = row["places_total"] != places_total
        await uow.audit(
            "capacity_changed" if changed else "capacity_confirmed",
            "ok",
            user_id=principal.user_id,
            detail={"site_id": site_id, "service": str(service), "places_total": places_total},
        )
    return event
