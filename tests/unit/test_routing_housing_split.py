"""Care locally, housing by the national platform: the split decision (pure, property-tested)
and its two legs through the use cases on the in-memory store — offered together, each answered,
timed out, declined and released on its own."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_common.codec import InvalidMessage
from aiguillage_common.geography import Geography
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAcceptedData,
)
from aiguillage_schemas.events.routing_decisions import (
    HousingOffered,
    HousingUpdated,
    PathReported,
    ReferralRouted,
)
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.domain.decision import Policy, Routed, Split, Unroutable, Waitlisted, decide
from routing.domain.directory import Capacity, Directory
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.offer_timeouts import expire_one_offer
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import cancel_referral, route_referral
from tests.support.routing_events import answer, lille_cancelled, path_report
from tests.support.routing_events import lille_referral as accepted
from tests.unit.routing_fakes import (
    T0,
    Clock,
    RoutingStore,
    capacity_of,
    fresh_directory,
    routing_context,
)

HOUSING = ServiceCode.EVICTION_HOUSING
COURSE = ServiceCode.RESPONSIBILITY_COURSE
PLATFORM = "PN-HEBERGEMENT-NATIONAL"
LILLE = "HDF-ARRAS-59"
ARRAS = "HDF-ARRAS-62"  # the only site with eviction housing serving Lille (8 places)
NEEDS = (COURSE, HOUSING)


def with_places(directory: Directory, **totals: int) -> Directory:
    """``SITE__SERVICE=total`` (dashes as underscores are not needed: keys are looked up)."""
    capacity = dict(directory.capacity)
    for key, total in totals.items():
        site, service = key.split("__")
        capacity[(site, ServiceCode(service))] = dataclasses.replace(
            capacity[(site, ServiceCode(service))], places_total=total
        )
    return dataclasses.replace(directory, capacity=capacity)


def no_local_housing(directory: Directory) -> Directory:
    """Every local eviction-housing count at zero: only the platform can house."""
    capacity: dict[tuple[str, ServiceCode], Capacity] = {
        key: dataclasses.replace(c, places_total=0)
        if key[1] is HOUSING and key[0] != PLATFORM
        else c
        for key, c in directory.capacity.items()
    }
    return dataclasses.replace(directory, capacity=capacity)


def test_the_platform_is_a_national_housing_provider_of_the_seed(directory: Directory) -> None:
    platform = directory.by_id[PLATFORM]
    assert platform.national
    assert platform.services == {HOUSING}
    assert len(platform.serves) == 101  # every département the network serves
    assert directory.capacity[(PLATFORM, HOUSING)].eligibility == "judicial_only"
    assert platform not in directory.local_sites


def test_care_and_housing_at_one_local_site_when_it_has_room(
    directory: Directory, geography: Geography
) -> None:
    decision = decide(
        accepted("ref-decide", needs=NEEDS).data, fresh_directory(directory), geography, now=T0
    )
    assert isinstance(decision, Routed)
    assert decision.site.site_id == ARRAS


def test_no_local_housing_room_splits_care_locally_and_housing_at_the_platform(
    directory: Directory, geography: Geography
) -> None:
    fresh = no_local_housing(fresh_directory(directory))
    decision = decide(accepted("ref-decide", needs=NEEDS).data, fresh, geography, now=T0)
    assert isinstance(decision, Split)
    assert decision.care.site.site_id == LILLE  # the care near home, not at Arras
    assert decision.housing.site_id == PLATFORM
    assert "plateforme" in decision.explanation.lower()


def test_a_stale_platform_count_still_houses_when_ranked_and_never_when_dropped(
    directory: Directory, geography: Geography
) -> None:
    fresh = no_local_housing(fresh_directory(directory))
    capacity = dict(fresh.capacity)
    capacity[(PLATFORM, HOUSING)] = dataclasses.replace(
        capacity[(PLATFORM, HOUSING)], updated_at=T0 - timedelta(days=8)
    )
    stale = dataclasses.replace(fresh, capacity=capacity)
    referral = accepted("ref-decide", needs=NEEDS).data
    week = timedelta(days=7)
    ranked = decide(referral, stale, geography, Policy(capacity_freshness=week), now=T0)
    assert isinstance(ranked, Split)  # on its last count
    assert ranked.housing.site_id == PLATFORM
    drop = Policy(capacity_freshness=week, stale_capacity="drop")
    dropped = decide(referral, stale, geography, drop, now=T0)
    assert isinstance(dropped, Waitlisted)  # no platform place: waits for local housing
    assert dropped.service == HOUSING


def test_no_split_without_platform_room_nor_for_a_volunteer(
    directory: Directory, geography: Geography
) -> None:
    full = with_places(
        no_local_housing(fresh_directory(directory)), **{f"{PLATFORM}__{HOUSING}": 0}
    )
    decision = decide(accepted("ref-decide", needs=NEEDS).data, full, geography, now=T0)
    assert isinstance(decision, Waitlisted | Unroutable)
    volunteer = accepted("ref-decide", needs=NEEDS).data.model_copy(
        update={
            "prescriber_kind": PrescriberKind.VOLUNTARY,
            "judicial_frame": JudicialFrame.VOLUNTARY,
        }
    )
    open_ = no_local_housing(fresh_directory(directory))
    assert not isinstance(decide(volunteer, open_, geography, now=T0), Split)


def test_the_care_site_of_a_split_keeps_the_exclusion_zone(
    directory: Directory, geography: Geography
) -> None:
    referral = accepted("ref-decide", needs=NEEDS).data.model_copy(
        update={"excluded_communes": ["59350"]}
    )
    decision = decide(referral, no_local_housing(fresh_directory(directory)), geography, now=T0)
    assert isinstance(decision, Split)
    assert decision.care.site.site_id != LILLE  # Lille's site lies in the excluded commune
    assert decision.housing.site_id == PLATFORM  # the platform serves nationally


HOMES = [("59350", "59"), ("62041", "62"), ("69123", "69"), ("31555", "31"), ("13055", "13")]
CARE = [s for s in ServiceCode if s not in (HOUSING,)]


@st.composite
def housing_referrals(draw: st.DrawFn) -> ReferralAcceptedData:
    commune, departement = draw(st.sampled_from(HOMES))
    kind = draw(st.sampled_from(list(PrescriberKind)))
    return ReferralAcceptedData(
        prescriber_id="p-1",
        prescriber_kind=kind,
        judicial_frame=JudicialFrame.VOLUNTARY
        if not kind.is_judicial
        else JudicialFrame.ALTERNATIVE_ORIENTATION,
        residence_commune_insee=commune,
        residence_departement=departement,
        needed_services=[HOUSING, *draw(st.lists(st.sampled_from(CARE), min_size=1, max_size=2))],
        excluded_communes=draw(
            st.lists(st.sampled_from(["59350", "62041", "69381", "31555", "13055"]), max_size=2)
        ),
        urgency=Urgency.URGENT,
        language="fr",
        interpreter_needed=False,
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    referral=housing_referrals(),
    local_housing=st.integers(0, 1),
    platform_places=st.integers(0, 1),
)
def test_a_split_only_when_no_site_has_room_for_everything_and_both_legs_have_room(
    referral: ReferralAcceptedData,
    local_housing: int,
    platform_places: int,
    directory: Directory,
    geography: Geography,
) -> None:
    fresh = fresh_directory(directory)
    if not local_housing:
        fresh = no_local_housing(fresh)
    fresh = with_places(fresh, **{f"{PLATFORM}__{HOUSING}": platform_places})
    decision = decide(referral, fresh, geography, now=T0)
    assert decision == decide(referral, fresh, geography, now=T0)  # deterministic
    whole = decide(referral, fresh, geography, now=T0, housing_tried=[PLATFORM])
    assert not isinstance(whole, Split)  # a platform that said no is never asked again
    if not isinstance(decision, Split):
        assert isinstance(whole, type(decision))
        return
    assert not isinstance(whole, Routed)  # never split when a site has room for every need
    assert referral.prescriber_kind.is_judicial
    care, housing = decision.care.site, decision.housing
    assert housing.national
    assert not care.national
    platform = fresh.capacity[(housing.site_id, HOUSING)]
    assert platform.places_held < platform.places_total
    # the care site meets every hard constraint for the care needs and has room for them
    assert care.commune_insee not in geography.exclusion_zone(referral.excluded_communes)
    home = referral.residence_departement
    assert home in care.serves or care.departement in geography.neighbours.get(home, ())
    for service in referral.needed_services:
        if service is HOUSING:
            continue
        held = fresh.capacity[(care.site_id, service)]
        assert held.admits(referral.prescriber_kind)
        assert held.places_held < held.places_total


# -- the two legs through the use cases ------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(directory: Directory) -> RoutingStore:
    return RoutingStore(no_local_housing(fresh_directory(directory)))


@pytest.fixture
def ctx(store: RoutingStore, geography: Geography, clock: Clock) -> RoutingContext:
    return routing_context(store, geography, clock, Policy(allow_neighbour_fallback=False))


def housing_events(store: RoutingStore) -> list[HousingUpdated]:
    return [e for e in store.events(HousingUpdated) if isinstance(e, HousingUpdated)]


async def test_a_split_offers_care_to_the_local_centre_and_housing_to_the_platform(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    state = await route_referral(accepted("ref-split-1", needs=NEEDS), ctx)
    assert state is not None
    assert (state.status, state.site_id) == ("offered", LILLE)
    assert (state.housing_status, state.housing_site_id) == ("offered", PLATFORM)
    routed = [e for e in store.events(ReferralRouted) if isinstance(e, ReferralRouted)]
    assert [(e.data.site.site_id, e.data.services) for e in routed] == [(LILLE, [COURSE])]
    offered = [e for e in store.events(HousingOffered) if isinstance(e, HousingOffered)]
    assert len(offered) == 1
    assert offered[0].data.site.site_id == PLATFORM
    assert offered[0].data.care_site.site_id == LILLE
    assert offered[0].data.answer_by == T0 + timedelta(hours=24)
    assert capacity_of(store, LILLE, COURSE).places_held == 1
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 1

    # each leg answered on its own
    await answer_offer(answer("ref-split-1", PLATFORM, "accepted"), ctx)
    await answer_offer(answer("ref-split-1", LILLE, "accepted"), ctx)
    placed = store.referrals["ref-split-1"]
    assert (placed.status, placed.housing_status) == ("placed", "placed")
    assert [e.data.outcome for e in housing_events(store)] == ["accepted"]


async def test_housing_declined_tells_a_human_and_the_care_goes_on(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-split-2", needs=NEEDS), ctx)
    await answer_offer(answer("ref-split-2", PLATFORM, "declined", "no_capacity"), ctx)
    state = store.referrals["ref-split-2"]
    assert (state.status, state.site_id, state.housing_status) == ("offered", LILLE, "declined")
    [declined] = housing_events(store)
    assert declined.data.outcome == "declined"
    assert declined.data.escalated
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 0
    assert capacity_of(store, LILLE, COURSE).places_held == 1
    with pytest.raises(InvalidMessage) as again:  # a second answer on a closed housing leg
        await answer_offer(answer("ref-split-2", PLATFORM, "accepted"), ctx)
    assert again.value.problem.reason == "not_offered_to_sender"


async def test_care_declined_is_rerouted_while_the_housing_stands(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-split-3", needs=NEEDS), ctx)
    await answer_offer(answer("ref-split-3", LILLE, "declined", "no_capacity"), ctx)
    state = store.referrals["ref-split-3"]
    assert state.status == "offered"
    assert state.site_id not in (LILLE, None)
    assert state.housing_status == "offered"
    rerouted = [e for e in store.events(ReferralRouted) if isinstance(e, ReferralRouted)][-1]
    assert rerouted.data.services == [COURSE]
    assert rerouted.data.attempt == 2
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 1
    assert capacity_of(store, LILLE, COURSE).places_held == 0
    assert len(store.events(HousingOffered)) == 1  # the platform is not asked twice


async def test_an_unanswered_housing_offer_times_out_after_24_hours(
    store: RoutingStore, ctx: RoutingContext, clock: Clock
) -> None:
    await route_referral(accepted("ref-split-4", needs=NEEDS), ctx)
    clock.advance(hours=23)
    assert await expire_one_offer(ctx) is None
    clock.advance(hours=2)
    # both legs are due (the care of an eviction-housing referral is urgent too): the care is
    # offered to the next site, the housing times out
    assert await expire_one_offer(ctx) == "ref-split-4"
    assert await expire_one_offer(ctx) == "ref-split-4"
    assert await expire_one_offer(ctx) is None
    state = store.referrals["ref-split-4"]
    assert (state.status, state.attempt, state.housing_status) == ("offered", 2, "timed_out")
    assert [e.data.outcome for e in housing_events(store)] == ["timed_out"]
    assert housing_events(store)[0].data.escalated
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 0


async def test_another_centre_cannot_answer_for_the_platform_and_cancel_frees_both_legs(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-split-5", needs=NEEDS), ctx)
    with pytest.raises(InvalidMessage) as caught:
        await answer_offer(answer("ref-split-5", PLATFORM, "accepted", centre="HDF-ARRAS"), ctx)
    assert caught.value.problem.reason == "not_offered_to_sender"
    assert store.referrals["ref-split-5"].housing_status == "offered"
    await cancel_referral(
        lille_cancelled("ref-split-5", store.referrals["ref-split-5"].correlation_id),
        ctx,
    )
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 0
    assert capacity_of(store, LILLE, COURSE).places_held == 0
    assert [e.data.outcome for e in housing_events(store)] == ["released"]


async def test_a_platform_place_given_back_splits_the_first_referral_waiting_for_housing(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    store.set_capacity(PLATFORM, HOUSING, places_total=1)
    await route_referral(accepted("ref-split-6", needs=NEEDS), ctx)
    waiting = await route_referral(accepted("ref-split-7", needs=NEEDS), ctx)
    assert waiting is not None
    assert waiting.status == "waitlisted"  # the platform is full, no local housing place
    await answer_offer(answer("ref-split-6", PLATFORM, "accepted"), ctx)
    await answer_offer(answer("ref-split-6", LILLE, "accepted"), ctx)
    await report_path(path_report("ref-split-6", LILLE, "path_completed"), ctx)
    assert store.referrals["ref-split-6"].housing_status == "released"
    now_split = store.referrals["ref-split-7"]
    assert (now_split.status, now_split.housing_status) == ("offered", "offered")
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 1


async def test_the_platform_reports_on_the_housing_leg_alone(
    store: RoutingStore, ctx: RoutingContext
) -> None:
    await route_referral(accepted("ref-split-8", needs=NEEDS), ctx)
    with pytest.raises(InvalidMessage) as early:  # nobody housed yet: nothing to report on
        await report_path(path_report("ref-split-8", PLATFORM, "attended"), ctx)
    assert early.value.problem.reason == "not_offered_to_sender"
    await answer_offer(answer("ref-split-8", PLATFORM, "accepted"), ctx)
    await answer_offer(answer("ref-split-8", LILLE, "accepted"), ctx)
    await report_path(path_report("ref-split-8", PLATFORM, "attended"), ctx)
    relayed = [e for e in store.events(PathReported) if isinstance(e, PathReported)]
    assert [(e.data.site.site_id, e.data.report) for e in relayed] == [(PLATFORM, "attended")]
    await report_path(path_report("ref-split-8", PLATFORM, "path_completed"), ctx)
    state = store.referrals["ref-split-8"]
    assert (state.status, state.housing_status) == ("placed", "ended")  # the care goes on
    assert [e.data.outcome for e in housing_events(store)] == ["accepted", "ended"]
    assert capacity_of(store, PLATFORM, HOUSING).places_held == 0
    assert capacity_of(store, LILLE, COURSE).places_held == 1
