"""What routing's use cases need from the outside: one transaction with routing's tables, the
reference geography, the policy and the clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiguillage_common.geography import Geography
from aiguillage_common.unit_of_work import D, UnitOfWork
from aiguillage_schemas.events.routing_decisions import SiteRef
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.decision import DecisionRecord, Policy
from routing.domain.directory import Directory, Eligibility, Site
from routing.domain.referral import ReferralState
from routing.domain.waiting import Waiting

CONSUMER = "routing"
SOURCE = "routing"
IDS = uuid.UUID("5a0c7a6e-2f7d-4a53-9a8e-7b61d2c4f0b3")


def derived_id(*parts: object) -> uuid.UUID:
    """Stable ids: the same cause always derives the same decision and event ids."""
    return uuid.uuid5(IDS, ":".join(str(p) for p in parts))


def envelope(ref: ReferralState, cause: uuid.UUID, purpose: str) -> dict[str, object]:
    """Envelope fields of an event routing derives from ``cause`` about ``ref``."""
    return {
        "event_id": derived_id(cause, purpose, ref.referral_id, ref.attempt),
        "source": SOURCE,
        "correlation_id": ref.correlation_id,
        "subject": ref.referral_id,
    }


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One stored decision: what a coordinator reads back with ``aiguillage-routing-decision``."""

    referral_id: str
    decision_id: uuid.UUID
    attempt: int
    outcome: str
    site: Site | None
    distance_km: float | None
    reason: str | None
    explanation: str
    record: DecisionRecord | None
    cause_event_id: uuid.UUID
    correlation_id: uuid.UUID


class RoutingUnitOfWork(UnitOfWork, Protocol):
    def deferred(self, key: object, make: Callable[[], D]) -> D | None:
        """Inside a consumer's batch: the batch-wide ``D`` under ``key``, run once right before
        the batch commits; None outside a batch (see ``PostgresUnitOfWork.deferred``)."""
        ...

    async def directory_snapshot(self, departements: Collection[str]) -> Directory: ...
    async def site_ref(self, site_id: str) -> SiteRef | None: ...
    async def site_centre(self, site_id: str) -> str | None:
        """The centre ``site_id`` belongs to, open or closed; None when the directory has no such
        site (a site added earlier in the same transaction counts)."""
        ...

    async def set_capacity(
        self, site_id: str, service: ServiceCode, places_total: int, as_of: datetime
    ) -> bool: ...
    async def open_service(
        self,
        site_id: str,
        service: ServiceCode,
        places_total: int,
        eligibility: Eligibility,
        as_of: datetime,
    ) -> bool: ...
    async def close_service(self, site_id: str, service: ServiceCode, as_of: datetime) -> bool: ...
    async def site_exists(self, site_id: str) -> bool: ...
    async def centre_exists(self, centre_id: str) -> bool: ...
    async def add_site(self, site: Site) -> bool: ...
    async def close_site(self, site_id: str, as_of: datetime) -> bool: ...
    async def get_referral(self, referral_id: str) -> ReferralState | None: ...
    async def add_referral(self, state: ReferralState) -> ReferralState | None:
        """Store a new referral; None when stored, else the one already known under its id
        (unchanged, locked as ``get_referral`` locks it)."""
        ...

    async def save_referral(self, state: ReferralState) -> None: ...
    async def due_offer(self, now: datetime) -> ReferralState | None: ...
    async def reserve(
        self, referral_id: str, site_id: str, services: Sequence[ServiceCode]
    ) -> bool: ...
    async def release(
        self, referral_id: str, site_id: str | None = None
    ) -> list[tuple[str, ServiceCode]]:
        """Give back the referral's places (only those at ``site_id`` when given: one leg of a
        split); returns the (site, service) freed."""
        ...

    async def due_housing(self, now: datetime) -> ReferralState | None:
        """One open housing offer (split referral) past its deadline, locked as ``due_offer``."""
        ...

    async def waitlist_add(
        self, state: ReferralState, site_id: str, service: ServiceCode, decision_id: uuid.UUID
    ) -> None: ...
    async def waitlist_remove(self, referral_id: str) -> None: ...
    async def waiting_near(self, departements: Collection[str]) -> list[Waiting]:
        """Every waiting referral living in ``departements``, with the position it was told."""
        ...

    async def waitlist_told(self, referral_id: str, position: int) -> None: ...
    async def waiting_at(self, site_id: str) -> list[str]: ...
    async def site_reach(self, site_id: str) -> list[str]: ...
    async def record_decision(self, row: DecisionRow) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoutingContext:
    uow_factory: Callable[[], RoutingUnitOfWork]
    geography: Geography
    policy: Policy
    decisions_topic: str
    offer_timeout: timedelta = timedelta(days=5)
    urgent_offer_timeout: timedelta = timedelta(days=1)
    min_offer_window: timedelta = timedelta(hours=4)
    max_attempts: int = 3
    reservation_retries: int = 5
    escalate_urgent_waits: bool = True  # an urgent referral that must wait is escalated at once
    clock: Callable[[], datetime] = utc_now
