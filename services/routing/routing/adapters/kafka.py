"""Kafka side of routing: decode accepted referrals and hand them to the use case."""

from __future__ import annotations

from collections.abc import Callable

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.geography import Geography
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from routing.domain.decision import Routed
from routing.domain.directory import Directory
from routing.use_cases.route_referral import RoutingUnitOfWork, route_referral

log = get_logger("aiguillage.routing")


class RoutingHandler:
    def __init__(
        self,
        uow_factory: Callable[[], RoutingUnitOfWork],
        directory: Directory,
        geography: Geography,
        decisions_topic: str,
    ) -> None:
        self._uow_factory = uow_factory
        self._directory = directory
        self._geography = geography
        self._decisions_topic = decisions_topic

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, (ReferralAccepted,))
        assert isinstance(event, ReferralAccepted)
        decision = await route_referral(
            event, self._uow_factory, self._directory, self._geography, self._decisions_topic
        )
        if decision is None:
            log.info("referral.duplicate_ignored", referral_id=event.subject)
        elif isinstance(decision, Routed):
            log.info(
                "referral.routed",
                referral_id=event.subject,
                site_id=decision.site.site_id,
                distance_km=decision.distance_km,
            )
        else:
            log.warning("referral.unroutable", referral_id=event.subject, reason=decision.reason)
