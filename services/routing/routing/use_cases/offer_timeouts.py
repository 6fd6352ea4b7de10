"""Use case run by the timer worker: an offer left unanswered past its deadline is withdrawn
from that site and the referral goes to the next best one (or to a human).

Deadlines live in PostgreSQL (``referrals.answer_by``), so they survive restarts; each expiry is
one transaction that locks the referral with SKIP LOCKED, so several instances share the work and
never expire the same offer twice.
"""

from __future__ import annotations

from datetime import datetime

from routing.use_cases.placement import (
    drain,
    end_housing,
    housing_given_back,
    reroute_or_escalate,
)
from routing.use_cases.ports import RoutingContext, RoutingUnitOfWork, derived_id


async def expire_one_offer(ctx: RoutingContext) -> str | None:
    """Expire the earliest overdue offer, if any; returns its referral id."""
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        ref = await uow.due_offer(now)
        if ref is None:
            return await _expire_housing(ctx, uow, now)
        cause = derived_id("offer-timeout", ref.referral_id, ref.attempt)
        # Only the care leg; a housing offer or place at the national platform stands.
        freed = await uow.release(ref.referral_id, ref.site_id)
        new = await reroute_or_escalate(uow, ctx, ref, cause, now, "pas de réponse dans le délai")
        await drain(uow, ctx, [*freed, *housing_given_back(ref, new)], cause, now)
        return ref.referral_id


async def _expire_housing(ctx: RoutingContext, uow: RoutingUnitOfWork, now: datetime) -> str | None:
    """A housing offer the national platform left unanswered past its deadline (24 h): the place
    is given back and a human is told, while the care goes on."""
    ref = await uow.due_housing(now)
    if ref is None:
        return None
    cause = derived_id("housing-timeout", ref.referral_id, ref.housing_site_id, ref.attempt)
    _, freed = await end_housing(
        uow,
        ctx,
        ref,
        cause,
        "timed_out",
        "La plateforme nationale n'a pas répondu dans le délai; un coordinateur cherche une "
        "solution d'hébergement, la prise en charge continue.",
    )
    await drain(uow, ctx, freed, cause, now)
    return ref.referral_id
