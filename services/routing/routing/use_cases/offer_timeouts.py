"""Use case run by the timer worker: an offer left unanswered past its deadline is withdrawn
from that site and the referral goes to the next best one (or to a human).

Deadlines live in PostgreSQL (``referrals.answer_by``), so they survive restarts; each expiry is
one transaction that locks the referral with SKIP LOCKED, so several instances share the work and
never expire the same offer twice.
"""

from __future__ import annotations

from routing.use_cases.placement import drain, reroute_or_escalate
from routing.use_cases.ports import RoutingContext, derived_id


async def expire_one_offer(ctx: RoutingContext) -> str | None:
    """Expire the earliest overdue offer, if any; returns its referral id."""
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        ref = await uow.due_offer(now)
        if ref is None:
            return None
        cause = derived_id("offer-timeout", ref.referral_id, ref.attempt)
        freed = await uow.release(ref.referral_id)
        await reroute_or_escalate(uow, ctx, ref, cause, now, "pas de réponse dans le délai")
        await drain(uow, ctx, freed, cause, now)
        return ref.referral_id
