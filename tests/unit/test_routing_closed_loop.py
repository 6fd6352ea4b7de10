"""The closed loop through the use cases, on the in-memory store: offers, answers, timeouts,
escalation, waiting lists, path reports and cancellations."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from aiguillage_common.codec import InvalidMessage
from aiguillage_common.geography import Geography
from aiguillage_schemas.events.centres import (
    PathReport,
    PathReportData,
)
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
)
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    ReferralEscalated,
    ReferralPlaced,
    ReferralRouted,
    ReferralWaitlisted,
    ReferralWithdrawn,
)
from aiguillage_schemas.vocabulary import ServiceCode, Urgency
from routing.domain.decision import Policy
from routing.domain.directory import Directory
from routing.domain.referral import answer_deadline
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.offer_timeouts import expire_one_offer
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import cancel_referral, route_referral
from tests.support.routing_events import answer, lille_cancelled
from tests.support.routing_events import lille_referral as accepted
from tests.unit.routing_fakes import (
    Clock,
    RoutingStore,
    capacity_of,
    fresh_directory,
    routing_context,
)

COURSE = ServiceCode.RESPONSIBILITY_COURSE
LILLE = "HDF-ARRAS-59"


@pytest.fixture
def store(directory: Directory) -> RoutingStore:
    return RoutingStore(fresh_directory(directory))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(store: RoutingStore, geography: Geography, clock: Clock) -> RoutingContext:
    return routing_context(
        store, geography, clock, Policy(allow_neighbour_fallback=False), max_attempts=2
    )


def offers(store: RoutingStore) -> list[ReferralRouted]:
    return [e for e in store.events(ReferralRouted) if isinstance(e, ReferralRouted)]


async def test_accepted_offer_places_and_declined_one_goes_to_an_untried_site(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-accept-1"), ctx)
    await answer_offer(answer("ref-accept-1", LILLE, "accepted"), ctx)
    assert store.referrals["ref-accept-1"].status == "placed"
    assert len(store.events(ReferralPlaced)) == 1

    await route_referral(accepted("ref-decline-1"), ctx)
    state = await answer_offer(answer("ref-decline-1", LILLE, "declined", "no_capacity"), ctx)
    assert state is not None
    rerouted = offers(store)[-1]
    assert rerouted.data.attempt == 2
    assert rerouted.data.previous_site_id == LILLE
    assert rerouted.data.site.site_id != LILLE
    # the declined place is free again; only the placed referral holds one at Lille
    assert capacity_of(store, LILLE, COURSE).places_held == 1


async def test_a_centre_cannot_answer_for_a_referral_not_offered_to_it(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-other-1"), ctx)
    before = store.snapshot()
    with pytest.raises(InvalidMessage) as caught:
        await answer_offer(answer("ref-other-1", "HDF-ARRAS-62", "accepted"), ctx)
    assert caught.value.problem.reason == "not_offered_to_sender"
    with pytest.raises(InvalidMessage) as unknown:
        await answer_offer(answer("ref-nobody-1", LILLE, "accepted"), ctx)
    assert unknown.value.problem.reason == "unknown_referral"
    assert store.referrals == before["referrals"]


async def test_unanswered_offers_time_out_then_escalate_after_the_last_attempt(
    store: RoutingStore, ctx: RoutingContext, clock: Clock
) -> None:
    await route_referral(accepted("ref-silent-1"), ctx)
    assert await expire_one_offer(ctx) is None  # not due yet
    clock.advance(days=6)
    assert await expire_one_offer(ctx) == "ref-silent-1"
    assert [o.data.attempt for o in offers(store)] == [1, 2]
    clock.advance(days=6)
    assert await expire_one_offer(ctx) == "ref-silent-1"
    escalated = store.events(ReferralEscalated)
    assert len(escalated) == 1
    assert isinstance(escalated[0], ReferralEscalated)
    assert escalated[0].data.reason == "attempts_exhausted"
    assert all(c.places_held == 0 for c in store.directory.capacity.values())


def told_positions(store: RoutingStore) -> list[tuple[str, int]]:
    return [
        (e.subject, e.data.position)
        for e in store.events(ReferralWaitlisted)
        if isinstance(e, ReferralWaitlisted)
    ]


async def test_waiting_list_is_served_by_urgency_then_arrival_when_places_free(
    store: RoutingStore, ctx: RoutingContext, clock: Clock
) -> None:
    for site in ("HDF-ARRAS-59", "HDF-ARRAS-62"):
        store.set_capacity(site, COURSE, places_total=1)
    await route_referral(accepted("ref-first-01"), ctx)
    await route_referral(accepted("ref-second-1"), ctx)
    clock.advance(minutes=1)
    await route_referral(accepted("ref-third-01"), ctx)  # standard, arrived third
    clock.advance(minutes=1)
    urgent = accepted("ref-urgent-1", Urgency.URGENT)
    await route_referral(urgent, ctx)
    told = told_positions(store)
    # Both wait for the same places: the urgent one goes ahead, and the third is told it moved.
    assert told == [("ref-third-01", 1), ("ref-urgent-1", 1), ("ref-third-01", 2)]
    # The first referral is cancelled: its place goes to the urgent one, ahead of the third.
    await cancel_referral(
        lille_cancelled("ref-first-01"),
        ctx,
    )
    withdrawn = store.events(ReferralWithdrawn)
    assert len(withdrawn) == 1
    assert isinstance(withdrawn[0], ReferralWithdrawn)
    assert withdrawn[0].data.site is not None
    assert store.referrals["ref-urgent-1"].status == "offered"
    assert store.referrals["ref-third-01"].status == "waitlisted"
    assert told_positions(store)[-1] == ("ref-third-01", 1)  # first in line now, and told so
    assert all(c.places_held <= c.places_total for c in store.directory.capacity.values())


async def test_path_reports_are_relayed_and_completion_frees_the_place(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-path-001"), ctx)
    await answer_offer(answer("ref-path-001", LILLE, "accepted"), ctx)
    assert capacity_of(store, LILLE, COURSE).places_held == 1

    def report(kind: str) -> PathReport:
        return PathReport(
            source="HDF-ARRAS",
            correlation_id=uuid.uuid4(),
            subject="ref-path-001",
            data=PathReportData.model_validate(
                {
                    "centre_id": "HDF-ARRAS",
                    "site_id": LILLE,
                    "report": kind,
                    "occurred_on": date(2026, 11, 30),
                }
            ),
        )

    await report_path(report("attended"), ctx)
    assert capacity_of(store, LILLE, COURSE).places_held == 1
    await report_path(report("path_completed"), ctx)
    assert capacity_of(store, LILLE, COURSE).places_held == 0
    assert [e.data.report for e in store.events(PathReported) if isinstance(e, PathReported)] == [
        "attended",
        "path_completed",
    ]
    with pytest.raises(InvalidMessage):
        await report_path(report("attended"), ctx)  # the path is over


def test_offer_deadlines_follow_urgency_and_the_prescribers_date() -> None:
    standard, urgent, minimum = timedelta(days=5), timedelta(days=1), timedelta(hours=4)
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    data = accepted("ref-deadline").data

    def deadline(**changes: object) -> datetime:
        return answer_deadline(data.model_copy(update=changes), now, standard, urgent, minimum)

    assert deadline() == now + standard
    assert deadline(urgency=Urgency.URGENT) == now + urgent
    assert deadline(needed_services=[ServiceCode.EVICTION_HOUSING]) == now + urgent
    # "By the 25th" is the 25th in Paris until 23:59 (UTC+1 in November), not 00:00 UTC.
    assert deadline(respond_by=date(2026, 11, 25)) == datetime(2026, 11, 25, 22, 59, tzinfo=UTC)
    summer_now = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    summer = answer_deadline(
        data.model_copy(update={"respond_by": date(2026, 6, 3)}),
        summer_now,
        standard,
        urgent,
        minimum,
    )
    assert summer == datetime(2026, 6, 3, 21, 59, tzinfo=UTC)  # UTC+2 in summer
    assert deadline(respond_by=date(2026, 11, 20)) == now + minimum  # already past


async def test_an_urgent_referral_without_a_place_is_escalated_at_once_and_keeps_waiting(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    for site in ("HDF-ARRAS-59", "HDF-ARRAS-62"):
        store.set_capacity(site, COURSE, places_total=1)
    await route_referral(accepted("ref-first-02"), ctx)
    await route_referral(accepted("ref-second-2"), ctx)
    await route_referral(accepted("ref-urgent-2", Urgency.URGENT), ctx)
    escalated = [e for e in store.events(ReferralEscalated) if isinstance(e, ReferralEscalated)]
    assert [(e.subject, e.data.reason) for e in escalated] == [("ref-urgent-2", "urgent_no_place")]
    assert "tête de file" in escalated[0].data.explanation
    assert store.referrals["ref-urgent-2"].status == "waitlisted"
    first = store.referrals["ref-first-02"]
    assert first.site_id is not None
    await answer_offer(answer("ref-first-02", first.site_id, "declined", "no_capacity"), ctx)
    assert store.referrals["ref-urgent-2"].status == "offered"  # first in line when it frees
    assert len(store.events(ReferralEscalated)) == 1  # told once, not at every release


async def test_a_place_freed_near_home_goes_to_that_departements_people_first(
    store: RoutingStore, geography: Geography, clock: Clock
) -> None:
    """Documented order at a release: urgent, then the site's own département, then arrival."""
    ctx = routing_context(store, geography, clock, Policy(), max_attempts=2)
    for (site_id, service), _ in list(store.capacity.items()):
        if service is COURSE and site_id.startswith("HDF-"):
            store.set_capacity(site_id, COURSE, places_total=0)
    for site_id in ("HDF-ARRAS-59", "HDF-ARRAS-62"):
        store.set_capacity(site_id, COURSE, places_total=1)

    def living_in(referral_id: str, commune: str, departement: str) -> ReferralAccepted:
        event = accepted(referral_id, occurred_at=clock.now)
        data = event.data.model_copy(
            update={"residence_commune_insee": commune, "residence_departement": departement}
        )
        return event.model_copy(update={"data": data})

    await route_referral(living_in("ref-lille-01", "59350", "59"), ctx)  # takes Lille's place
    await route_referral(living_in("ref-arras-01", "62041", "62"), ctx)  # takes Arras's place
    clock.advance(minutes=1)
    await route_referral(living_in("ref-arras-02", "62041", "62"), ctx)  # waits, arrived first
    clock.advance(minutes=1)
    await route_referral(living_in("ref-lille-02", "59350", "59"), ctx)  # waits, arrived second
    assert {store.referrals[r].status for r in ("ref-arras-02", "ref-lille-02")} == {"waitlisted"}
    await answer_offer(answer("ref-lille-01", "HDF-ARRAS-59", "accepted"), ctx)
    await report_path(
        PathReport(
            source="HDF-ARRAS",
            correlation_id=uuid.uuid4(),
            subject="ref-lille-01",
            data=PathReportData.model_validate(
                {
                    "centre_id": "HDF-ARRAS",
                    "site_id": "HDF-ARRAS-59",
                    "report": "path_completed",
                    "occurred_on": date(2026, 11, 30),
                }
            ),
        ),
        ctx,
    )
    # Lille's place goes to the Lille resident, though the Arras one arrived earlier.
    assert store.referrals["ref-lille-02"].status == "offered"
    assert store.referrals["ref-lille-02"].site_id == "HDF-ARRAS-59"
    assert store.referrals["ref-arras-02"].status == "waitlisted"
