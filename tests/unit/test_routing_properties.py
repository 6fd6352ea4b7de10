"""Properties of routing that must hold for any referral and any sequence of events."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_common.codec import InvalidMessage
from aiguillage_common.geography import Geography
from aiguillage_schemas.events.centres import OfferAnswered
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
    ReferralAcceptedData,
)
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.domain.decision import Policy, Request, Routed, Split, Waitlisted, decide, screen
from routing.domain.directory import Directory
from routing.use_cases.centre_responses import answer_offer
from routing.use_cases.offer_timeouts import expire_one_offer
from routing.use_cases.route_referral import cancel_referral, route_referral
from tests.support.routing_events import answer, lille_cancelled, lille_referral
from tests.unit.routing_fakes import T0, Clock, RoutingStore, fresh_directory, routing_context

# Communes spread over a few regions, with their départements.
HOMES = [
    ("59350", "59"),
    ("62041", "62"),
    ("69381", "69"),
    ("31555", "31"),
    ("13201", "13"),
    ("35238", "35"),
    ("21231", "21"),
    ("97411", "974"),
]
SERVICES = list(ServiceCode)
KINDS = list(PrescriberKind)


@st.composite
def referrals(draw: st.DrawFn) -> ReferralAcceptedData:
    commune, departement = draw(st.sampled_from(HOMES))
    kind = draw(st.sampled_from(KINDS))
    return ReferralAcceptedData(
        prescriber_id="p-1",
        prescriber_kind=kind,
        judicial_frame=JudicialFrame.VOLUNTARY
        if not kind.is_judicial
        else draw(st.sampled_from([f for f in JudicialFrame if f is not JudicialFrame.VOLUNTARY])),
        residence_commune_insee=commune,
        residence_departement=departement,
        needed_services=draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3)),
        excluded_communes=draw(
            st.lists(st.sampled_from(["59350", "62041", "69381", "31555", "13055"]), max_size=2)
        ),
        excluded_departements=draw(st.lists(st.sampled_from(["59", "62", "69", "31"]), max_size=1)),
        urgency=draw(st.sampled_from(list(Urgency))),
        language=draw(st.sampled_from(["fr", "ar"])),
        interpreter_needed=False,
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(referral=referrals())
def test_a_chosen_site_meets_every_hard_constraint_and_the_choice_is_deterministic(
    referral: ReferralAcceptedData, directory: Directory, geography: Geography
) -> None:
    fresh = fresh_directory(directory)
    decision = decide(referral, fresh, geography, now=T0)
    assert decision == decide(referral, fresh, geography, now=T0)
    decided = referral
    if isinstance(decision, Split):  # the record is the care leg's: the needs but housing
        decided = referral.model_copy(
            update={
                "needed_services": [
                    s for s in referral.needed_services if s is not ServiceCode.EVICTION_HOUSING
                ]
            }
        )
    request = Request.of(decided, geography)
    for candidate in decision.record.candidates:  # the cheap screen agrees with the record
        cost, feasible, room = screen(fresh.by_id[candidate.site_id], request, fresh, Policy(), T0)
        assert (cost, feasible, room) == (
            candidate.score["total"],
            candidate.feasible,
            candidate.has_room,
        )
    if not isinstance(decision, Routed | Waitlisted):
        return
    site = decision.site
    assert site.commune_insee not in geography.exclusion_zone(referral.excluded_communes)
    assert site.departement not in referral.excluded_departements
    assert set(referral.needed_services) <= site.services
    home = referral.residence_departement
    assert home in site.serves or site.departement in geography.neighbours.get(home, ())
    for service in referral.needed_services:
        capacity = fresh.capacity[(site.site_id, service)]
        assert capacity.admits(referral.prescriber_kind)
        if isinstance(decision, Routed):
            assert capacity.places_held < capacity.places_total


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    referral=referrals(),
    stale_policy=st.sampled_from(["rank", "drop"]),
    aged=st.sets(st.sampled_from(["59", "62", "80", "69", "01", "31", "13", "35", "21", "974"])),
)
def test_stale_counts_rank_lower_or_offer_nothing_as_the_policy_says_in_screen_and_record(
    referral: ReferralAcceptedData,
    stale_policy: Literal["rank", "drop"],
    aged: set[str],
    directory: Directory,
    geography: Geography,
) -> None:
    """The sites lying in ``aged`` counted 40 days ago (stale after 30): the record marks them
    stale and, as the policy says, ranks them on their last counts or gives them no room; the
    cheap screen finds the same cost and room."""
    fresh = fresh_directory(directory)
    capacity = {
        key: replace(c, updated_at=T0 - timedelta(days=40))
        if fresh.by_id[key[0]].departement in aged
        else c
        for key, c in fresh.capacity.items()
    }
    counts = replace(fresh, capacity=capacity)
    policy = Policy(stale_capacity=stale_policy)
    decision = decide(referral, counts, geography, policy, now=T0)
    assert decision == decide(referral, counts, geography, policy, now=T0)
    request = Request.of(referral, geography)
    if isinstance(decision, Split):
        return  # its record is the care leg's (other needs), checked by the test above
    for candidate in decision.record.candidates:
        site = counts.by_id[candidate.site_id]
        stale = site.departement in aged and any(
            (site.site_id, s) in capacity for s in request.needed
        )
        assert candidate.stale == stale
        ranked = stale and stale_policy == "rank"
        assert candidate.score["stale"] == (policy.stale_penalty_km if ranked else 0.0)
        if stale and stale_policy == "drop":
            assert not candidate.has_room
        cost, feasible, room = screen(site, request, counts, policy, T0)
        assert (cost, feasible, room) == (
            candidate.score["total"],
            candidate.feasible,
            candidate.has_room,
        )
    if isinstance(decision, Routed) and stale_policy == "drop":
        assert decision.site.departement not in aged


Step = tuple[str, int]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["accept", "accept", "accept", "decline", "ok", "cancel", "tick"]),
        st.integers(0, 11),
    ),
    min_size=5,
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_capacity_is_never_negative_nor_oversubscribed_whatever_happens(
    steps: list[Step], directory: Directory, geography: Geography
) -> None:
    store = RoutingStore(fresh_directory(directory))
    # Tight capacity around Lille so that waiting lists, declines and releases interleave.
    for site_id in ("HDF-ARRAS-59", "HDF-ARRAS-62", "HDF-CREIL-02", "HDF-CREIL-80"):
        for (sid, service), _ in list(store.directory.capacity.items()):
            if sid == site_id:
                store.set_capacity(sid, service, places_total=2)
    clock = Clock()
    ctx = routing_context(store, geography, clock, max_attempts=3)

    async def run() -> None:
        for action, n in steps:
            referral_id = f"ref-prop-{n:03d}"
            ref = store.referrals.get(referral_id)
            if action == "accept":
                await route_referral(_accepted(referral_id, n), ctx)
            elif action in ("decline", "ok") and ref is not None and ref.site_id:
                verdict = "declined" if action == "decline" else "accepted"
                try:
                    await answer_offer(_answer(referral_id, ref.site_id, verdict), ctx)
                except InvalidMessage:
                    assert ref.status != "offered"
            elif action == "cancel":
                await cancel_referral(lille_cancelled(referral_id), ctx)
            elif action == "tick":
                clock.advance(days=6)
                while await expire_one_offer(ctx) is not None:
                    pass
            _check(store)

    asyncio.run(run())


def _check(store: RoutingStore) -> None:
    for capacity in store.directory.capacity.values():
        assert 0 <= capacity.places_held <= capacity.places_total
    held: dict[tuple[str, ServiceCode], int] = {}
    for rows in store.holds.values():
        for key in rows:
            held[key] = held.get(key, 0) + 1
    for key, capacity in store.directory.capacity.items():
        assert held.get(key, 0) == capacity.places_held
    for referral_id, ref in store.referrals.items():
        assert (referral_id in store.holds) == (ref.status in ("offered", "placed"))
        assert (referral_id in store.waitlist) == (ref.status == "waitlisted")


def _accepted(referral_id: str, n: int) -> ReferralAccepted:
    needs = [ServiceCode.RESPONSIBILITY_COURSE]
    if n % 3 == 0:
        needs.append(ServiceCode.PSYCHOLOGICAL_FOLLOWUP)
    return lille_referral(
        referral_id,
        urgency=Urgency.URGENT if n % 4 == 0 else Urgency.STANDARD,
        needs=needs,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, referral_id),
        occurred_at=T0 + timedelta(minutes=n),
    )


def _answer(referral_id: str, site_id: str, verdict: str) -> OfferAnswered:
    return answer(referral_id, site_id, verdict, "no_capacity" if verdict == "declined" else None)
