"""Kafka side of routing: decode each inbound topic's events and hand them to the use cases."""

from __future__ import annotations

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.centres import (
    CENTRE_RESPONSES,
    DIRECTORY_UPDATES,
    OfferAnswered,
    PathReport,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralCancelled
from routing.domain.referral import ReferralState
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.directory_updates import apply_directory_update
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import cancel_referral, route_referral

log = get_logger("aiguillage.routing")


def _log_outcome(kind: str, referral_id: str, state: ReferralState | None) -> None:
    if state is None:
        log.info("referral.duplicate_ignored", referral_id=referral_id, on=kind)
        return
    log.info(
        f"referral.{state.status}",
        referral_id=referral_id,
        on=kind,
        site_id=state.site_id,
        attempt=state.attempt,
    )


class RoutingHandler:
    """``referrals.accepted``: new referrals and prescribers' cancellations."""

    def __init__(self, ctx: RoutingContext) -> None:
        self._ctx = ctx

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, (ReferralAccepted, ReferralCancelled))
        if isinstance(event, ReferralAccepted):
            _log_outcome("accepted", event.subject, await route_referral(event, self._ctx))
        elif isinstance(event, ReferralCancelled):
            _log_outcome("cancelled", event.subject, await cancel_referral(event, self._ctx))


class CentreResponsesHandler:
    """``centres.responses``: answers to offers and path reports."""

    def __init__(self, ctx: RoutingContext) -> None:
        self._ctx = ctx

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, CENTRE_RESPONSES)
        if isinstance(event, OfferAnswered):
            _log_outcome(event.data.answer, event.subject, await answer_offer(event, self._ctx))
        elif isinstance(event, PathReport):
            _log_outcome(event.data.report, event.subject, await report_path(event, self._ctx))


class DirectoryHandler:
    """``directory.updates``: capacity, services and sites."""

    def __init__(self, ctx: RoutingContext) -> None:
        self._ctx = ctx

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, DIRECTORY_UPDATES)
        changed = await apply_directory_update(event, self._ctx)
        log.info("directory.updated", update=event.event_type, changed=changed)
