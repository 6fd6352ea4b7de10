"""Use cases on ``centres.responses``: a centre answers an offer, then reports the path.

A centre speaks only about a referral offered to (or placed at) one of its sites; anything else is
refused with a reason code and goes to the dead-letter topic, never changing a referral.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_schemas.events.centres import OfferAnswered, PathReport
from aiguillage_schemas.events.routing_decisions import (
    HousingUpdated,
    HousingUpdatedData,
    PathReported,
    PathReportedData,
    ReferralPlaced,
    ReferralPlacedData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import RejectionReason, ServiceCode
from routing.domain.referral import ReferralState
from routing.use_cases.placement import (
    drain,
    end_housing,
    housing_given_back,
    reroute_or_escalate,
)
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
        known = await uow.get_referral(event.subject)
        if (
            known is not None
            and known.housing_site_id == data.site_id
            and known.site_id != data.site_id
        ):
            return await _answer_housing(uow, ctx, known, event, now)
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
        # Only the care leg: a housing offer or place at the platform stands while the care is
        # offered elsewhere.
        freed = await uow.release(ref.referral_id, ref.site_id)
        new = await reroute_or_escalate(
            uow, ctx, ref, event.event_id, now, f"refus : {data.decline_reason}"
        )
        freed += housing_given_back(ref, new)
        await drain(uow, ctx, freed, event.event_id, now)
        return new


async def _answer_housing(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    event: OfferAnswered,
    now: datetime,
) -> ReferralState:
    """The national platform answers the housing leg of a split referral: accepted, the person
    is housed (the care leg goes on as it is); declined, the place is given back and a human is
    told (``escalated``) while the care goes on."""
    data = event.data
    platform = await _housing_site(
        uow,
        ref,
        data.site_id,
        data.centre_id,
        "offered",
        "this referral's housing is not offered at this centre's site",
    )
    if data.answer == "accepted":
        new = dataclasses.replace(ref, housing_status="placed", housing_answer_by=None)
        await uow.save_referral(new)
        await uow.emit(
            ctx.decisions_topic,
            HousingUpdated(
                **envelope(new, event.event_id, "housing-accepted"),
                data=HousingUpdatedData(
                    prescriber_id=ref.accepted.prescriber_id,
                    prescriber_kind=ref.accepted.prescriber_kind,
                    site=platform,
                    outcome="accepted",
                    escalated=False,
                    explanation=f"{platform.centre_name} héberge la personne.",
                ),
            ),
        )
        return new
    new, freed = await end_housing(
        uow,
        ctx,
        ref,
        event.event_id,
        "declined",
        f"{platform.centre_name} a refusé l'hébergement ({data.decline_reason}); un "
        "coordinateur cherche une solution d'hébergement, la prise en charge continue.",
    )
    await drain(uow, ctx, freed, event.event_id, now)
    return new


async def report_path(event: PathReport, ctx: RoutingContext) -> ReferralState | None:
    data = event.data
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(CONSUMER + ".centres", event.event_id):
            return None
        known = await uow.get_referral(event.subject)
        if (
            known is not None
            and known.housing_site_id == data.site_id
            and known.site_id != data.site_id
        ):
            return await _report_housing(uow, ctx, known, event, now)
        ref, site = await _owned(uow, event.subject, data.centre_id, data.site_id, "placed")
        new = ref
        freed: list[tuple[str, ServiceCode]] = []
        if data.report in RELEASING_REPORTS:
            if ref.housing_held:
                ref, freed = await end_housing(
                    uow,
                    ctx,
                    ref,
                    event.event_id,
                    "released",
                    "Le parcours au centre est terminé; la place d'hébergement est rendue.",
                )
            freed += await uow.release(ref.referral_id)
            new = dataclasses.replace(ref, status="closed")
            await uow.save_referral(new)
        await uow.emit(ctx.decisions_topic, _path_reported(ref, event, "path", site))
        await drain(uow, ctx, freed, event.event_id, now)
        return new


def _path_reported(ref: ReferralState, event: PathReport, leg: str, site: SiteRef) -> PathReported:
    """A centre's report relayed to the prescriber, naming the site of the leg it is about
    (the care site, or the national platform for the housing); ``leg`` keeps the two event ids
    apart."""
    data = event.data
    return PathReported(
        **envelope(ref, event.event_id, leg),
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
    )


async def _report_housing(
    uow: RoutingUnitOfWork,
    ctx: RoutingContext,
    ref: ReferralState,
    event: PathReport,
    now: datetime,
) -> ReferralState:
    """The national platform reports on the housing it gives (the housing leg, placed): the end
    of the housing (completed, terminated) gives its place back (``referral.housing_updated``
    ``ended``: the care leg and its holder are untouched); any other report is relayed as a
    path report naming the platform's site."""
    data = event.data
    platform = await _housing_site(
        uow,
        ref,
        data.site_id,
        data.centre_id,
        "placed",
        "this referral is not housed at this centre's site",
    )
    if data.report in RELEASING_REPORTS:
        new, freed = await end_housing(
            uow,
            ctx,
            ref,
            event.event_id,
            "ended",
            f"{platform.centre_name} : hébergement terminé le {data.occurred_on:%d/%m/%Y}.",
        )
        await drain(uow, ctx, freed, event.event_id, now)
        return new
    await uow.emit(ctx.decisions_topic, _path_reported(ref, event, "housing-path", platform))
    return ref


async def _housing_site(
    uow: RoutingUnitOfWork,
    ref: ReferralState,
    site_id: str,
    centre_id: str,
    status: str,
    refusal: str,
) -> SiteRef:
    """The platform site a housing answer or report names, if the referral's housing leg is in
    ``status`` there and the sender is that site's centre; else the message is refused."""
    platform = await uow.site_ref(site_id)
    if ref.housing_status != status or platform is None or platform.centre_id != centre_id:
        raise InvalidMessage(
            Problem(RejectionReason.NOT_OFFERED_TO_SENDER, refusal, "data.site_id")
        )
    return platform
