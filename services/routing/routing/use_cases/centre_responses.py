"""Use cases on ``centres.responses``: a centre answers an offer, then reports the path.

A centre speaks only about a referral offered to (or placed at) one of its sites; anything else is
refused with a reason code and goes to the dead-letter topic, never changing a referral.
"""

from __future__ import annotations

import dataclasses

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_schemas.events.centres import OfferAnswered, PathReport
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    PathReportedData,
    ReferralPlaced,
    ReferralPlacedData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import RejectionReason
from routing.domain.referral import ReferralState
from routing.use_cases.placement import drain, reroute_or_escalate
from routing.use_cases.ports import CONSUMER, RoutingContext, RoutingUnitOfWork, envelope

# Reports that end the person's path at the site and so free the places held there.
RELEASING_REPORTS = frozenset({"path_completed", "path_terminated"})


async def _owned(
    uow: RoutingUnitOfWork, referral_id: str, centre_id: str, site_id: str, status: str
) -> tuple[ReferralState, SiteRef]:
    ref = await uow.get_referral(referral_id)
    if ref is None:
        raise InvalidMessage(
            Problem(RejectionReason.UNKNOWN_REFERRAL, "routing knows no such referral", "subject")
        )
    site = await uow.site_ref(site_id)
    if (
        ref.status != status
        or ref.site_id != site_id
        or site is None
        or site.centre_id != centre_id
    ):
        raise InvalidMessage(
            Problem(
                RejectionReason.NOT_OFFERED_TO_SENDER,
                f"this referral is not {status} at this centre's site",
                "data.site_id",
            )
        )
    return ref, site


async def answer_offer(event: OfferAnswered, ctx: RoutingContext) -> ReferralState | None:
    data = event.data
    if data.answer == "declined" and data.decline_reason is None:
        raise InvalidMessage(
            Problem(
                RejectionReason.MISSING_FIELD,
                "a decline needs a decline_reason",
                "data.decline_reason",
            )
        )
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(CONSUMER + ".centres", event.event_id):
            return None
        ref, site = await _owned(uow, event.subject, data.centre_id, data.site_id, "offered")
        if data.answer == "accepted":
            new = dataclasses.replace(ref, status="placed", answer_by=None)
            await uow.save_referral(new)
            await uow.emit(
                ctx.decisions_topic,
                ReferralPlaced(
                    **envelope(ref, event.event_id, "placed"),
                    data=ReferralPlacedData(
                        prescriber_id=ref.accepted.prescriber_id,
                        prescriber_kind=ref.accepted.prescriber_kind,
                        site=site,
                    ),
                ),
            )
            return new
        freed = await uow.release(ref.referral_id)
        new = await reroute_or_escalate(
            uow, ctx, ref, event.event_id, now, f"refus : {data.decline_reason}"
        )
        await drain(uow, ctx, freed, event.event_id, now)
        return new


async def report_path(event: PathReport, ctx: RoutingContext) -> ReferralState | None:
    data = event.data
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(CONSUMER + ".centres", event.event_id):
            return None
        ref, site = await _owned(uow, event.subject, data.centre_id, data.site_id, "placed")
        new = ref
        freed = []
        if data.report in RELEASING_REPORTS:
            freed = await uow.release(ref.referral_id)
            new = dataclasses.replace(ref, status="closed")
            await uow.save_referral(new)
        await uow.emit(
            ctx.decisions_topic,
            PathReported(
                **envelope(ref, event.event_id, "path"),
                data=PathReportedData(
                    prescriber_id=ref.accepted.prescriber_id,
                    prescriber_kind=ref.accepted.prescriber_kind,
                    site=site,
                    report=data.report,
                    occurred_on=data.occurred_on,
                    justified=data.justified,
                    termination_reason=data.termination_reason,
                    module=data.module,
                ),
            ),
        )
        await drain(uow, ctx, freed, event.event_id, now)
        return new
