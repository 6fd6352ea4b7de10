"""Use cases on ``referrals.accepted``: route a new referral; withdraw a cancelled one."""

from __future__ import annotations

import dataclasses

from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralCancelled
from aiguillage_schemas.events.routing_decisions import ReferralWithdrawn, ReferralWithdrawnData
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.referral import FINAL, HOLDING, ReferralState, urgency_rank
from routing.use_cases.placement import drain, end_housing, place
from routing.use_cases.ports import CONSUMER, SOURCE, RoutingContext, derived_id

__all__ = ["CONSUMER", "cancel_referral", "route_referral"]


async def route_referral(event: ReferralAccepted, ctx: RoutingContext) -> ReferralState | None:
    """Returns the referral's new state, or None when the event was already handled."""
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return None
        # The row must exist before holds reference it. Its status is provisional: place()
        # always overwrites it in this same transaction (offered, waitlisted or unroutable).
        ref = ReferralState(
            referral_id=event.subject,
            correlation_id=event.correlation_id,
            accepted=event.data,
            status="offered",
            site_id=None,
            attempt=0,
            tried=(),
            urgency_rank=urgency_rank(event.data),
            arrived_at=event.occurred_at,
        )
        known = await uow.add_referral(ref)
        if known is not None:
            return known  # a second acceptance of the same referral changes nothing
        return await place(uow, ctx, ref, event.event_id, now)


async def cancel_referral(event: ReferralCancelled, ctx: RoutingContext) -> ReferralState | None:
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return None
        ref = await uow.get_referral(event.subject)
        if ref is not None and ref.status in FINAL:
            return ref  # already over: nothing to release, nobody to tell again
        site = None
        if ref is not None and ref.status in HOLDING and ref.site_id is not None:
            site = await uow.site_ref(ref.site_id)
        freed: list[tuple[str, ServiceCode]] = []
        if ref is not None and ref.housing_held:
            # The platform is told its housing offer or place is released (the event names it).
            ref, freed = await end_housing(
                uow,
                ctx,
                ref,
                event.event_id,
                "released",
                "Orientation annulée par le prescripteur; la place d'hébergement est rendue.",
            )
        freed += await uow.release(event.subject) if ref is not None else []
        await uow.waitlist_remove(event.subject)
        new = None
        if ref is not None:
            new = dataclasses.replace(ref, status="withdrawn", answer_by=None)
            await uow.save_referral(new)
        await uow.emit(
            ctx.decisions_topic,
            ReferralWithdrawn(
                event_id=derived_id(event.event_id, "withdrawn", event.subject),
                source=SOURCE,
                correlation_id=event.correlation_id,
                subject=event.subject,
                data=ReferralWithdrawnData(
                    prescriber_id=event.data.prescriber_id,
                    prescriber_kind=event.data.prescriber_kind,
                    site=site,
                    reason="cancelled_by_prescriber",
                ),
            ),
        )
        left = [ref.accepted.residence_departement] if ref and ref.status == "waitlisted" else []
        await drain(uow, ctx, freed, event.event_id, now, left)
        return new
