"""Use case of operators on the network page: correct a site-service's capacity.

Like a centre's confirm (``centre_actions.set_capacity``), it queues one signed
``directory.updates`` event in the portal's outbox and audits it in the same transaction; the
event names the operator (``actor.kind = "operator"``). The portal's own projection is left to
the event coming back (the portal consumes ``directory.updates``), and the page shows the change
as pending until routing's table carries a count at least as recent (read back, never assumed).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.vocabulary import ServiceCode
from portal.domain import responses
from portal.domain.access import Principal, may_operate
from portal.use_cases.centre_actions import NotFound, Topics


class CorrectionUnitOfWork(UnitOfWork, Protocol):
    async def audit(self, action: str, outcome: str, **fields: Any) -> None: ...


async def correct_capacity(
    principal: Principal,
    site_id: str,
    service: ServiceCode,
    places_total: int,
    current_places: int | None,
    uow_factory: Callable[[], CorrectionUnitOfWork],
    topics: Topics,
    now: datetime,
) -> Envelope:
    """``current_places``: routing's count now (None: routing knows no such site-service, and
    nothing is published)."""
    if not may_operate(principal) or current_places is None:
        raise NotFound(site_id)
    event = responses.capacity_update(principal, site_id, service, places_total, now)
    async with uow_factory() as uow:
        await uow.emit(topics.directory_updates, event)
        await uow.audit(
            "capacity_corrected",
            "ok",
            user_id=principal.user_id,
            detail={
                "site_id": site_id,
                "service": str(service),
                "places_total": places_total,
                "previous": current_places,
                "as_of": now.isoformat(),
                "event_id": str(event.event_id),
            },
        )
    return event
