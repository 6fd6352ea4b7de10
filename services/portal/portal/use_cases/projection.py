"""Use case: an event from routing, intake or the directory lands in the portal's projection,
once (inbox claim in the same transaction as the change)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    CapacityUpdated,
    ServiceClosed,
    ServiceClosedData,
    ServiceOpened,
    SiteAdded,
    SiteClosed,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralRejected
from portal.domain.projection import (
    ROUTING_EVENTS,
    Admission,
    RejectionRecord,
    RoutingChange,
    admission,
    rejection,
    routing_change,
)


class ProjectionUnitOfWork(UnitOfWork, Protocol):
    async def apply_routing(self, change: RoutingChange) -> None: ...

    async def apply_admission(self, admission: Admission) -> None: ...

    async def add_rejection(self, record: RejectionRecord) -> None: ...

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

    async def add_site(self, site_id: str, centre_id: str, departement: str) -> None: ...

    async def close_site(self, site_id: str, as_of: datetime) -> None: ...


async def project(
    event: Envelope, uow_factory: Callable[[], ProjectionUnitOfWork], consumer: str
) -> bool:
    """False when the event was already projected."""
    async with uow_factory() as uow:
        if not await uow.claim(consumer, event.event_id):
            return False
        if isinstance(event, ROUTING_EVENTS):
            await uow.apply_routing(routing_change(event))
        elif isinstance(event, ReferralAccepted):
            await uow.apply_admission(admission(event))
        elif isinstance(event, ReferralRejected):
            await uow.add_rejection(rejection(event))
        elif isinstance(event, CapacityUpdated | ServiceOpened | ServiceClosed):
            d = event.data
            await uow.set_capacity(
                d.site_id,
                str(d.service),
                None if isinstance(d, ServiceClosedData) else d.places_total,
                d.as_of,
                d.actor.id if d.actor else event.source,
                open_=not isinstance(d, ServiceClosedData),
            )
        elif isinstance(event, SiteAdded):
            await uow.add_site(event.data.site_id, event.data.centre_id, event.data.serves[0])
        elif isinstance(event, SiteClosed):
            await uow.close_site(event.data.site_id, event.data.as_of)
    return True
