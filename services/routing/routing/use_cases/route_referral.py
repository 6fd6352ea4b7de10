"""Use case: an accepted referral arrives; choose a site and publish the decision once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

from aiguillage_common.geography import Geography
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from aiguillage_schemas.events.routing_decisions import (
    ReferralRouted,
    ReferralRoutedData,
    ReferralUnroutable,
    ReferralUnroutableData,
    SiteRef,
)
from routing.domain.decision import Routed, Unroutable, decide
from routing.domain.directory import Directory

CONSUMER = "routing"
SOURCE = "routing"
_IDS = uuid.UUID("5a0c7a6e-2f7d-4a53-9a8e-7b61d2c4f0b3")


class RoutingUnitOfWork(UnitOfWork, Protocol):
    async def record_decision(
        self, event: ReferralAccepted, decision_id: uuid.UUID, decision: Routed | Unroutable
    ) -> None: ...


async def route_referral(
    event: ReferralAccepted,
    uow_factory: Callable[[], RoutingUnitOfWork],
    directory: Directory,
    geography: Geography,
    decisions_topic: str,
) -> Routed | Unroutable | None:
    """Returns the decision, or None when the event was already handled."""
    decision = decide(event.data, directory, geography)
    decision_id = uuid.uuid5(_IDS, f"decision:{event.event_id}")
    async with uow_factory() as uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return None
        await uow.record_decision(event, decision_id, decision)
        await uow.emit(decisions_topic, _decision_event(event, decision_id, decision, directory))
    return decision


def _decision_event(
    event: ReferralAccepted,
    decision_id: uuid.UUID,
    decision: Routed | Unroutable,
    directory: Directory,
) -> Envelope:
    common = {
        "event_id": uuid.uuid5(_IDS, f"decided:{event.event_id}"),
        "source": SOURCE,
        "correlation_id": event.correlation_id,
        "subject": event.subject,
    }
    if isinstance(decision, Unroutable):
        return ReferralUnroutable(
            **common,
            data=ReferralUnroutableData(
                decision_id=decision_id,
                prescriber_id=event.data.prescriber_id,
                prescriber_kind=event.data.prescriber_kind,
                reason=decision.reason,
                explanation=decision.explanation,
            ),
        )
    site = decision.site
    return ReferralRouted(
        **common,
        data=ReferralRoutedData(
            decision_id=decision_id,
            prescriber_id=event.data.prescriber_id,
            prescriber_kind=event.data.prescriber_kind,
            site=SiteRef(
                centre_id=site.centre_id,
                centre_name=directory.centre_of(site).name,
                site_id=site.site_id,
                site_commune_insee=site.commune_insee,
                site_departement=site.departement,
                address_confidential=site.address_confidential,
            ),
            services=list(event.data.needed_services),
            distance_km=decision.distance_km,
            explanation=decision.explanation,
        ),
    )
