"""The heart of the closed loop, shared by every use case: decide, reserve, offer or wait;
release places and hand them to the waiting list in order; escalate to a human.

Everything here runs inside the caller's transaction, so a decision, its reservation, its record
and its outgoing event are committed together or not at all.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from aiguillage_schemas.events.routing_decisions import (
    HousingOffered,
    HousingOfferedData,
    HousingUpdated,
    HousingUpdatedData,
    ReferralEscalated,
    ReferralEscalatedData,
    ReferralRouted,
    ReferralRoutedData,
    ReferralUnroutable,
    ReferralUnroutableData,
    ReferralWaitlisted,
    ReferralWaitlistedData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.decision import Decision, Routed, Split, Unroutable, Waitlisted, decide
from routing.domain.directory import Directory, Site
from routing.domain.referral import HousingEnd, ReferralState, answer_deadline
from routing.domain.waiting import Waiting, next_for, positions, queue_at, reach
from routing.use_cases.ports import (
    SOURCE,
    DecisionRow,
    RoutingContext,
    RoutingUnitOfWork,
    derived_id,
    envelope,
)


class ReservationContention(TimeoutError):
    """Lost the race for places too many times in a row: transient, the message is retried."""


def site_ref(site: Site, directory: Directory) -> SiteRef:
    return SiteRef(
        centre_id=site.centre_id,
        centre_name=directory.centre_of(site).name,
        site_id=site.site_id,
        site_commune_insee=site.commune_insee,
        site_departement=site.departement,
        address_confidential=site.address_confidential,
    )


async def place(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    cause: uuid.UUID,
    now: datetime,
) -> ReferralState:
    """Offer the referral to the best untried site with room, else put it on a waiting list,
    else mark it unroutable (first attempt) or escalate it (re-route). Returns the new state."""
    data = ref.accepted
    territory = {
        data.residence_departement,
        *ctx.geography.neighbours.get(data.residence_departement, ()),
    }
    housing = ServiceCode.EVICTION_HOUSING
    care_needs = [s for s in data.needed_services if s is not housing]
    if ref.housing_held:
        # The national platform already holds the housing: only the care is decided again.
        data = data.model_copy(update={"needed_services": care_needs})
    for _ in range(ctx.reservation_retries):
        directory = await uow.directory_snapshot(territory)
        decision = decide(
            data,
            directory,
            ctx.geography,
            ctx.policy,
            now=now,
            tried=ref.tried,
            housing_tried=ref.housing_tried,
        )
        if isinstance(decision, Routed):
            if await uow.reserve(ref.referral_id, decision.site.site_id, data.needed_services):
                return await _offer(uow, ctx, ref, decision, directory, cause, now)
            continue  # another instance took the last place: decide again on fresh counts
        if isinstance(decision, Split):
            # Both legs in this transaction, all or nothing: care at the local site, then the
            # housing at the platform; a lost race on the second gives the first back.
            care_site = decision.care.site.site_id
            if await uow.reserve(ref.referral_id, care_site, care_needs):
                if await uow.reserve(ref.referral_id, decision.housing.site_id, [housing]):
                    return await _offer_split(uow, ctx, ref, decision, directory, cause, now)
                await uow.release(ref.referral_id, care_site)
            continue
        if ref.housing_held:
            # No site can give the care now: the platform's place goes back too and the
            # referral is decided whole (waiting list, or a human), as any referral.
            # (The freed platform place is handed on by the caller: ``housing_given_back``.)
            ref, _ = await end_housing(
                uow,
                ctx,
                ref,
                cause,
                "released",
                "Aucun site ne peut assurer la prise en charge; la place d'hébergement est rendue.",
            )
            return await place(uow, ctx, ref, cause, now)
        if isinstance(decision, Waitlisted):
            return await _wait(uow, ctx, ref, decision, cause)
        if ref.tried:
            return await escalate(
                uow, ctx, ref, cause, "no_feasible_site", decision.explanation, decision
            )
        return await _unroutable(uow, ctx, ref, decision, cause)
    raise ReservationContention(f"no place reserved after {ctx.reservation_retries} tries")


async def _offer(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    decision: Routed,
    directory: Directory,
    cause: uuid.UUID,
    now: datetime,
    services: Sequence[ServiceCode] | None = None,
) -> ReferralState:
    answer_by = answer_deadline(
        ref.accepted, now, ctx.offer_timeout, ctx.urgent_offer_timeout, ctx.min_offer_window
    )
    previous = ref.tried[-1] if ref.tried else None
    new = dataclasses.replace(
        ref,
        status="offered",
        site_id=decision.site.site_id,
        attempt=ref.attempt + 1,
        tried=(*ref.tried, decision.site.site_id),
        answer_by=answer_by,
    )
    if ref.status == "waitlisted":
        await uow.waitlist_remove(ref.referral_id)
    await uow.save_referral(new)
    decision_id = derived_id("decision", cause, ref.referral_id, new.attempt)
    await _record(uow, new, decision_id, "routed", decision, cause)
    await uow.emit(
        ctx.decisions_topic,
        ReferralRouted(
            **envelope(new, cause, "routed"),
            data=ReferralRoutedData(
                decision_id=decision_id,
                prescriber_id=ref.accepted.prescriber_id,
                prescriber_kind=ref.accepted.prescriber_kind,
                site=site_ref(decision.site, directory),
                services=list(services)
                if services
                else [
                    s
                    for s in ref.accepted.needed_services
                    if s is not ServiceCode.EVICTION_HOUSING or not ref.housing_held
                ],
                distance_km=decision.distance_km,
                explanation=decision.explanation,
                attempt=new.attempt,
                answer_by=new.answer_by,
                previous_site_id=previous,
            ),
        ),
    )
    return new


async def _offer_split(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    decision: Split,
    directory: Directory,
    cause: uuid.UUID,
    now: datetime,
) -> ReferralState:
    """The care offer (``referral.routed``, as any offer, for the care services) and the housing
    offer to the platform (``referral.housing_offered``, 24 h like every eviction-housing offer),
    each with its own deadline."""
    care = dataclasses.replace(decision.care, explanation=decision.explanation)
    services = [s for s in ref.accepted.needed_services if s is not ServiceCode.EVICTION_HOUSING]
    offered = await _offer(uow, ctx, ref, care, directory, cause, now, services)
    new = dataclasses.replace(
        offered,
        housing_site_id=decision.housing.site_id,
        housing_status="offered",
        housing_answer_by=now + ctx.urgent_offer_timeout,
    )
    await uow.save_referral(new)
    decision_id = derived_id("decision", cause, ref.referral_id, new.attempt)
    await uow.emit(
        ctx.decisions_topic,
        HousingOffered(
            **envelope(new, cause, "housing-offered"),
            data=HousingOfferedData(
                decision_id=decision_id,
                prescriber_id=ref.accepted.prescriber_id,
                prescriber_kind=ref.accepted.prescriber_kind,
                site=site_ref(decision.housing, directory),
                care_site=site_ref(decision.care.site, directory),
                distance_km=decision.distance_km,
                explanation=decision.explanation,
                answer_by=new.housing_answer_by or now,
            ),
        ),
    )
    return new


async def end_housing(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    cause: uuid.UUID,
    outcome: HousingEnd,
    explanation: str,
) -> tuple[ReferralState, list[tuple[str, ServiceCode]]]:
    """The housing leg ends (declined, timed out, released): the platform's place is given back
    and everyone concerned is told; a decline or a timeout is escalated to a human while the
    care goes on. Returns the new state (the care leg unchanged) and the places freed (the
    caller hands them to the waiting list)."""
    if not ref.housing_held or ref.housing_site_id is None:
        return ref, []
    freed = await uow.release(ref.referral_id, ref.housing_site_id)
    new = dataclasses.replace(ref, housing_status=outcome, housing_answer_by=None)
    await uow.save_referral(new)
    platform = await uow.site_ref(ref.housing_site_id)
    if platform is not None:
        await uow.emit(
            ctx.decisions_topic,
            HousingUpdated(
                **envelope(new, cause, f"housing-{outcome}"),
                data=HousingUpdatedData(
                    prescriber_id=ref.accepted.prescriber_id,
                    prescriber_kind=ref.accepted.prescriber_kind,
                    site=platform,
                    outcome=outcome,
                    escalated=outcome in ("declined", "timed_out"),
                    explanation=explanation,
                ),
            ),
        )
    return new, freed


def housing_given_back(
    before: ReferralState, after: ReferralState
) -> list[tuple[str, ServiceCode]]:
    """The platform's place a re-route gave back (no site could give the care any more, or a
    human took the referral over): the caller hands it to the waiting list with the rest."""
    if before.housing_held and not after.housing_held and before.housing_site_id:
        return [(before.housing_site_id, ServiceCode.EVICTION_HOUSING)]
    return []


async def _wait(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    decision: Waitlisted,
    cause: uuid.UUID,
) -> ReferralState:
    if ref.status == "waitlisted" and any(
        c.site_id == ref.site_id and c.feasible for c in decision.record.candidates
    ):
        return ref  # its site is still fine: it keeps its place in the queue, nothing new to say
    new = dataclasses.replace(
        ref, status="waitlisted", site_id=decision.site.site_id, answer_by=None
    )
    await uow.save_referral(new)
    decision_id = derived_id("decision", cause, ref.referral_id, "waitlisted", ref.attempt)
    await uow.waitlist_add(new, decision.site.site_id, decision.service, decision_id)
    await _record(uow, new, decision_id, "waitlisted", decision, cause)
    if ref.status != "waitlisted" and ref.urgency_rank == 0 and ctx.escalate_urgent_waits:
        # The network's promise on urgent referrals: an offer at once when a site within reach
        # has a place; otherwise a human is told at once, with the reason, while it waits first.
        await uow.emit(
            ctx.decisions_topic,
            ReferralEscalated(
                **envelope(new, cause, "urgent-escalated"),
                data=ReferralEscalatedData(
                    prescriber_id=ref.accepted.prescriber_id,
                    prescriber_kind=ref.accepted.prescriber_kind,
                    attempts=len(ref.tried),
                    reason="urgent_no_place",
                    explanation=(
                        "Orientation urgente sans place disponible dans le rayon de la "
                        f"politique : {decision.explanation} La personne reste en tête de file; "
                        "un coordinateur cherche une solution (dont la plateforme nationale "
                        "d'hébergement)."
                    ),
                ),
            ),
        )
    # Its position, and the positions it changes, are told by retell.
    await retell(
        uow,
        ctx,
        {ref.accepted.residence_departement},
        cause,
        first_words={ref.referral_id: decision.explanation},
    )
    return new


async def retell(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    homes: Collection[str],
    cause: uuid.UUID,
    first_words: Mapping[str, str] | None = None,
) -> int:
    """Tell every waiting referral whose position changed (or was never told) its true position,
    for the queues a referral living in ``homes`` can be part of. Returns how many were told.

    Inside a consumer's batch the positions are told once, when the batch ends (for every home
    the batch touched): positions taken and left within one transaction were never committed, so
    nobody is told a position that lasted only until the next record of the batch. A burst that
    puts urgent referrals ahead of a queue then tells each waiting referral once per batch, not
    once per arrival. Returns 0 then (told later)."""
    if not homes:
        return 0
    later = uow.deferred(_Retelling, lambda: _Retelling(ctx, cause))
    if later is None:
        return await _retell_now(uow, ctx, homes, cause, first_words)
    later.homes.update(homes)
    later.first_words.update(first_words or {})
    return 0


@dataclasses.dataclass
class _Retelling:
    """The positions a batch tells when it ends: the homes it touched, the first words of the
    referrals it put on a waiting list, and its first cause (the notices' ids derive from it)."""

    ctx: RoutingContext
    cause: uuid.UUID
    homes: set[str] = dataclasses.field(default_factory=set)
    first_words: dict[str, str] = dataclasses.field(default_factory=dict)

    async def run(self) -> None:
        async with self.ctx.uow_factory() as uow:
            await _retell_now(uow, self.ctx, self.homes, self.cause, self.first_words)


async def _retell_now(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    homes: Collection[str],
    cause: uuid.UUID,
    first_words: Mapping[str, str] | None = None,
) -> int:
    if not homes:
        return 0
    geography = ctx.geography
    area = {*homes}
    for home in homes:
        area |= geography.neighbours.get(home, frozenset())
    near = await uow.directory_snapshot(area)
    affected = {
        site.site_id: site
        for site in near.local_sites  # nobody waits at a national provider
        if site.departement in area or any(home in site.serves for home in homes)
    }
    if not affected:
        return 0
    reached: set[str] = set()
    for site in affected.values():
        reached |= reach(site, geography)
    waiting = await uow.waiting_near(reached)
    if not any(w.site_id in affected for w in waiting):
        return 0
    directory = await uow.directory_snapshot(reached)
    told = positions(waiting, directory, geography, ctx.policy, affected.keys())
    words = first_words or {}
    count = 0
    for entry in waiting:
        position = told.get(entry.referral_id)
        if position is None or position == entry.told_position:
            continue
        named = directory.site(entry.site_id)
        if named is None:
            continue
        explanation = words.get(entry.referral_id)
        if explanation is None:
            before = (
                f" (auparavant {entry.told_position})" if entry.told_position is not None else ""
            )
            explanation = (
                f"Nouvelle position dans la file d'attente du site {named.site_id}{before}."
            )
        await uow.emit(
            ctx.decisions_topic,
            ReferralWaitlisted(
                event_id=derived_id(cause, "waitlisted", entry.referral_id, position),
                source=SOURCE,
                correlation_id=entry.correlation_id,
                subject=entry.referral_id,
                data=ReferralWaitlistedData(
                    decision_id=entry.decision_id
                    or derived_id("decision", entry.referral_id, "waitlisted"),
                    prescriber_id=entry.accepted.prescriber_id,
                    prescriber_kind=entry.accepted.prescriber_kind,
                    site=site_ref(named, directory),
                    service=entry.service,
                    position=position,
                    explanation=f"{explanation} Position {position} dans la file.",
                ),
            ),
        )
        await uow.waitlist_told(entry.referral_id, position)
        count += 1
    return count


async def _unroutable(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    decision: Unroutable,
    cause: uuid.UUID,
) -> ReferralState:
    new = dataclasses.replace(ref, status="unroutable", site_id=None, answer_by=None)
    await uow.save_referral(new)
    decision_id = derived_id("decision", cause, ref.referral_id, "unroutable")
    await _record(uow, new, decision_id, "unroutable", decision, cause)
    await uow.emit(
        ctx.decisions_topic,
        ReferralUnroutable(
            **envelope(new, cause, "unroutable"),
            data=ReferralUnroutableData(
                decision_id=decision_id,
                prescriber_id=ref.accepted.prescriber_id,
                prescriber_kind=ref.accepted.prescriber_kind,
                reason=decision.reason,
                explanation=decision.explanation,
            ),
        ),
    )
    return new


async def escalate(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    cause: uuid.UUID,
    reason: str,
    explanation: str,
    decision: Decision | None = None,
) -> ReferralState:
    if ref.housing_held:
        # A human takes the whole referral over: the platform's place is given back too.
        ref, _ = await end_housing(
            uow, ctx, ref, cause, "released", "Un coordinateur reprend l'orientation."
        )
    new = dataclasses.replace(ref, status="escalated", site_id=None, answer_by=None)
    await uow.waitlist_remove(ref.referral_id)
    await uow.save_referral(new)
    if ref.status == "waitlisted":
        await retell(uow, ctx, {ref.accepted.residence_departement}, cause)
    decision_id = derived_id("decision", cause, ref.referral_id, "escalated")
    await _record(uow, new, decision_id, "escalated", decision, cause, reason, explanation)
    await uow.emit(
        ctx.decisions_topic,
        ReferralEscalated(
            **envelope(new, cause, "escalated"),
            data=ReferralEscalatedData(
                prescriber_id=ref.accepted.prescriber_id,
                prescriber_kind=ref.accepted.prescriber_kind,
                attempts=len(ref.tried),
                reason="attempts_exhausted"
                if reason == "attempts_exhausted"
                else "no_feasible_site",
                explanation=explanation,
            ),
        ),
    )
    return new


async def _record(
    uow: RoutingUnitOfWork,
    ref: ReferralState,
    decision_id: uuid.UUID,
    outcome: str,
    decision: Decision | None,
    cause: uuid.UUID,
    reason: str | None = None,
    explanation: str | None = None,
) -> None:
    site = decision.site if isinstance(decision, Routed | Waitlisted) else None
    await uow.record_decision(
        DecisionRow(
            referral_id=ref.referral_id,
            decision_id=decision_id,
            attempt=max(ref.attempt, 1),
            outcome=outcome,
            site=site,
            distance_km=decision.distance_km if isinstance(decision, Routed | Waitlisted) else None,
            reason=reason or (decision.reason if isinstance(decision, Unroutable) else None),
            explanation=explanation or (decision.explanation if decision else ""),
            record=decision.record if decision else None,
            cause_event_id=cause,
            correlation_id=ref.correlation_id,
        )
    )


async def reroute_or_escalate(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    cause: uuid.UUID,
    now: datetime,
    why: str,
) -> ReferralState:
    """After a decline or a timeout (places already released): next best site, or a human."""
    if ref.attempt >= ctx.max_attempts:
        return await escalate(
            uow,
            ctx,
            ref,
            cause,
            "attempts_exhausted",
            f"{ref.attempt} site(s) proposé(s) sans réponse favorable ({why}); "
            "un coordinateur reprend le dossier.",
        )
    return await place(uow, ctx, ref, cause, now)


async def drain(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    freed: Collection[tuple[str, ServiceCode]],
    cause: uuid.UUID,
    now: datetime,
    left: Collection[str] = (),
) -> int:
    """Places freed at a site go to the waiting referrals in the site's queue, in the documented
    order (domain/waiting.py), across services: the first one the site has room for is offered a
    place, again and again, until the site has no room any waiting referral could use. Then every
    position that changed is told again (``left``: home départements of referrals that left the
    waiting list in this transaction). Returns how many waiting referrals were offered a place."""
    geography = ctx.geography
    offered = 0
    homes = set(left)
    done: set[str] = set()  # national providers already drained in this call
    for site_id in sorted({site_id for site_id, _ in freed}):
        while True:
            area = set(await uow.site_reach(site_id))
            for departement in list(area):
                area |= geography.neighbours.get(departement, frozenset())
            directory = await uow.directory_snapshot(area)
            site = directory.site(site_id)
            if site is None:
                break  # closed
            if site.national:
                done.add(site.site_id)
                offered += await _drain_national(uow, ctx, site, cause, now, homes)
                break
            queue = queue_at(site, await uow.waiting_near(area), directory, geography, ctx.policy)
            chosen = next_for(site, queue, directory, geography, ctx.policy, now)
            if chosen is None:
                break
            ref = await uow.get_referral(chosen.referral_id)
            if ref is None or ref.status != "waitlisted":
                await uow.waitlist_remove(chosen.referral_id)
                continue
            new = await place(uow, ctx, ref, cause, now)
            if new.status == "waitlisted":
                break  # decided otherwise on fresh counts: nothing more to give here
            offered += new.status == "offered"
            homes.add(ref.accepted.residence_departement)
        # Care places freed here may let a referral waiting for eviction housing be split (care
        # here, housing at the national platform) when the platform has room: the site's own
        # queue never holds it (the site offers no housing).
        area = set(await uow.site_reach(site_id))
        for national in (await uow.directory_snapshot(area)).national_housing:
            held = directory.capacity.get((national.site_id, ServiceCode.EVICTION_HOUSING))
            if national.site_id not in done and held and held.places_held < held.places_total:
                done.add(national.site_id)
                offered += await _drain_national(uow, ctx, national, cause, now, homes)
    await retell(uow, ctx, homes, cause)
    return offered


async def _drain_national(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    site: Site,
    cause: uuid.UUID,
    now: datetime,
    homes: set[str],
) -> int:
    """A place at the national housing platform (freed, or free while a care place frees): the
    waiting referrals needing eviction housing are decided again in the documented order of the
    site each waits at (urgent first — they all are —, then that site's département, then
    arrival, then entry), so the first whose care a local site can give now is split; stops
    once the platform has no room left."""
    key = (site.site_id, ServiceCode.EVICTION_HOUSING)
    housing = [
        w
        for w in await uow.waiting_near(site.serves)
        if ServiceCode.EVICTION_HOUSING in w.accepted.needed_services
    ]
    if not housing:
        return 0
    near = await uow.directory_snapshot({w.accepted.residence_departement for w in housing})

    def order(w: Waiting) -> tuple[object, ...]:
        # The documented order at the site each waits at (its queue): urgent first, then those
        # living in that site's département, then arrival, then entry.
        named = near.site(w.site_id)
        away = named is None or named.departement != w.accepted.residence_departement
        return (w.urgency_rank, away, w.arrived_at, w.seq)

    waiting = sorted(housing, key=order)
    offered = 0
    for entry in waiting:
        held = (await uow.directory_snapshot({site.departement})).capacity.get(key)
        if held is None or held.places_held >= held.places_total:
            break
        ref = await uow.get_referral(entry.referral_id)
        if ref is None or ref.status != "waitlisted":
            continue
        new = await place(uow, ctx, ref, cause, now)
        if new.status == "offered":
            offered += 1
            homes.add(ref.accepted.residence_departement)
    return offered


async def requeue_waiting_at(
    uow: RoutingUnitOfWork, ctx: RoutingContext, site_id: str, cause: uuid.UUID, now: datetime
) -> int:
    """A site or one of its services closed: the referrals waiting there are decided again
    (offered elsewhere, or moved to another queue, keeping their arrival time)."""
    moved = 0
    homes: set[str] = set()
    for referral_id in await uow.waiting_at(site_id):
        ref = await uow.get_referral(referral_id)
        if ref is None or ref.status != "waitlisted":
            continue
        new = await place(uow, ctx, ref, cause, now)
        moved += new.site_id != site_id
        if new.status != "waitlisted":
            homes.add(ref.accepted.residence_departement)
    await retell(uow, ctx, homes, cause)  # those behind the ones offered a place move up
    return moved
