"""Properties of the exclusion geography and of the waiting-list order (issue #13).

Exclusion works on places: a city excludes its municipal arrondissements and an arrondissement its
city. Waiting lists: at every release the documented order (urgent first, then the site's own
département, then arrival) holds across services; nobody waits while a site meeting every rule has
room; a told position is the true one and a change is told again.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_common.codec import InvalidMessage
from aiguillage_common.geography import Geography, haversine_km
from aiguillage_schemas.events.centres import PathReport
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from aiguillage_schemas.events.routing_decisions import ReferralWaitlisted
from aiguillage_schemas.vocabulary import ServiceCode, Urgency
from routing.adapters.memory import MemoryRoutingUow
from routing.domain.decision import Policy, Routed, Waitlisted, decide
from routing.domain.directory import Capacity, Directory, Site
from routing.domain.waiting import Waiting, eligible_at, has_room_for, positions
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.route_referral import cancel_referral, route_referral
from tests.support.routing_events import answer, lille_cancelled, lille_referral
from tests.unit.routing_fakes import T0, Clock, RoutingStore, fresh_directory, routing_context

CITIES = {"75056": "751", "69123": "6938", "13055": "132"}


def _places(geography: Geography) -> list[str]:
    """Every city code and arrondissement code of Paris, Lyon and Marseille."""
    return sorted(
        insee
        for insee, commune in geography.communes.items()
        if insee in CITIES or commune.parent in CITIES
    )


def test_each_arrondissement_has_its_own_point_and_knows_its_city(geography: Geography) -> None:
    arrondissements = [c for c in geography.communes.values() if c.parent is not None]
    assert len(arrondissements) == 45
    assert {c.parent for c in arrondissements} == set(CITIES)
    points = {(c.lat, c.lon) for c in arrondissements}
    assert len(points) == 45
    paris_1, paris_20 = geography.coordinates("75101"), geography.coordinates("75120")
    assert paris_1 is not None
    assert paris_20 is not None
    assert 3 < haversine_km(paris_1, paris_20) < 10


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_city_and_its_arrondissements_exclude_each_other(
    data: st.DataObject, geography: Geography
) -> None:
    places = _places(geography)
    excluded = data.draw(st.lists(st.sampled_from(places), min_size=1, max_size=3))
    site_commune = data.draw(st.sampled_from(places))
    zone = geography.exclusion_zone(excluded)

    def city(insee: str) -> str:
        return geography.communes[insee].parent or insee

    # Excluded: the same code, the site's city, or (the site being a city) one of its parts.
    expected = any(
        e == site_commune or e == city(site_commune) or site_commune == city(e) for e in excluded
    )
    assert (site_commune in zone) == expected
    assert set(excluded) <= zone


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_site_in_an_excluded_place_is_never_chosen(
    data: st.DataObject, geography: Geography
) -> None:
    """Sites in random arrondissements and city codes; the victim's commune in another spelling
    of the same place must still keep them out."""
    places = _places(geography)
    site_communes = data.draw(st.lists(st.sampled_from(places), min_size=1, max_size=6))
    sites = tuple(
        Site(
            site_id=f"S{i}-{insee}",
            centre_id="C",
            commune_insee=insee,
            departement=geography.communes[insee].departement,
            lat=coordinates[0],
            lon=coordinates[1],
            services=frozenset({ServiceCode.RESPONSIBILITY_COURSE}),
            serves=frozenset({"75", "69", "13"}),
        )
        for i, insee in enumerate(site_communes)
        if (coordinates := geography.coordinates(insee)) is not None
    )
    from routing.domain.directory import Centre

    directory = Directory(
        centres={"C": Centre("C", "Centre", "11", frozenset({"75", "69", "13"}))},
        sites=sites,
        capacity={
            (s.site_id, ServiceCode.RESPONSIBILITY_COURSE): Capacity(5, 0, T0) for s in sites
        },
    )
    home = data.draw(st.sampled_from(places))
    victim = data.draw(st.sampled_from(places))
    referral = lille_referral("ref-zone").data.model_copy(
        update={
            "residence_commune_insee": home,
            "residence_departement": geography.communes[home].departement,
            "excluded_communes": [victim],
        }
    )
    decision = decide(referral, directory, geography, now=T0)
    if isinstance(decision, Routed | Waitlisted):
        assert decision.site.commune_insee not in geography.same_place(victim)
    forbidden = geography.same_place(victim)
    for candidate in decision.record.candidates:
        site = directory.by_id[candidate.site_id]
        if site.commune_insee in forbidden:
            assert "exclusion_zone" in candidate.excluded


# -- the waiting list, through the use cases ----------------------------------------------------

SITES = ("HDF-ARRAS-59", "HDF-ARRAS-62", "HDF-CREIL-02", "HDF-CREIL-80")
HOMES = (("59350", "59"), ("62041", "62"), ("59512", "59"), ("80021", "80"))
NEEDS = (
    (ServiceCode.RESPONSIBILITY_COURSE,),
    (ServiceCode.PSYCHOLOGICAL_FOLLOWUP,),
    (ServiceCode.RESPONSIBILITY_COURSE, ServiceCode.PSYCHOLOGICAL_FOLLOWUP),
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "arrive", "accept", "decline", "end", "cancel"]),
        st.integers(0, 15),
    ),
    min_size=8,
    max_size=45,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_every_release_follows_the_documented_order_across_services(
    steps: list[tuple[str, int]], directory: Directory, geography: Geography
) -> None:
    store = RoutingStore(fresh_directory(directory))
    for site_id in SITES:
        for sid, service in list(store.capacity):
            if sid == site_id:
                store.set_capacity(sid, service, places_total=1)
    clock = Clock()
    policy = Policy()
    ctx = routing_context(store, geography, clock, policy, max_attempts=3)

    async def waiting() -> list[Waiting]:
        return await MemoryRoutingUow(store).waiting_near(
            {row.home for row in store.waitlist.values()}
        )

    async def run() -> None:
        for action, n in steps:
            referral_id = f"ref-wait-{n:03d}"
            ref = store.referrals.get(referral_id)
            before = {w.referral_id: w for w in await waiting()}
            clock.advance(minutes=1)
            try:
                if action == "arrive" and ref is None:
                    await route_referral(_arrival(referral_id, n, clock.now), ctx)
                elif action in ("accept", "decline") and ref is not None and ref.site_id:
                    verdict = "accepted" if action == "accept" else "declined"
                    reason = "no_capacity" if verdict == "declined" else None
                    await answer_offer(answer(referral_id, ref.site_id, verdict, reason), ctx)
                elif action == "end" and ref is not None and ref.status == "placed":
                    assert ref.site_id is not None
                    await report_path(_completed(referral_id, ref.site_id), ctx)
                elif action == "cancel":
                    await cancel_referral(lille_cancelled(referral_id), ctx)
            except InvalidMessage:
                assert ref is not None
            await _check_release(store, geography, policy, before, await waiting())
            _check_nobody_waits_beside_room(store, geography, policy, await waiting())
            _check_told_positions(store, geography, policy, await waiting())

    asyncio.run(run())


def documented(site: Site, waiting: Waiting) -> tuple[object, ...]:
    """The order docs/routing.md states, written out independently of the code under test."""
    urgent = waiting.accepted.urgency is Urgency.URGENT or (
        ServiceCode.EVICTION_HOUSING in waiting.accepted.needed_services
    )
    away = site.departement != waiting.accepted.residence_departement
    return (not urgent, away, waiting.arrived_at, waiting.seq)


async def _check_release(
    store: RoutingStore,
    geography: Geography,
    policy: Policy,
    before: dict[str, Waiting],
    after: list[Waiting],
) -> None:
    """No queue jump: a referral taken from the list at site S never passes one still waiting
    that S could take, comes first in S's order, and needs nothing the taken one did not (so the
    places it took would have served it)."""
    still = {w.referral_id: w for w in after}
    directory = store.directory
    for referral_id, taken in before.items():
        if referral_id in still or store.referrals[referral_id].status != "offered":
            continue
        site = directory.by_id[store.referrals[referral_id].site_id or ""]
        for other in still.values():
            if other.referral_id not in before:
                continue
            if not eligible_at(site, before[other.referral_id], directory, geography, policy):
                continue
            if set(other.accepted.needed_services) <= set(taken.accepted.needed_services):
                assert documented(site, taken) < documented(site, other), (
                    f"{referral_id} jumped {other.referral_id} at {site.site_id}"
                )


def _check_nobody_waits_beside_room(
    store: RoutingStore, geography: Geography, policy: Policy, waiting: list[Waiting]
) -> None:
    for entry in waiting:
        for site in store.directory.sites:
            if eligible_at(site, entry, store.directory, geography, policy):
                assert not has_room_for(site, entry, store.directory, geography, policy, T0), (
                    f"{entry.referral_id} waits while {site.site_id} has room"
                )


def _check_told_positions(
    store: RoutingStore, geography: Geography, policy: Policy, waiting: list[Waiting]
) -> None:
    true = positions(waiting, store.directory, geography, policy)
    last_told: dict[str, int] = {}
    for event in store.events(ReferralWaitlisted):
        assert isinstance(event, ReferralWaitlisted)
        last_told[event.subject] = event.data.position
    by_site: dict[str, list[int]] = {}
    for entry in waiting:
        assert entry.told_position == true[entry.referral_id] == last_told[entry.referral_id]
        by_site.setdefault(entry.site_id, []).append(true[entry.referral_id])
    for told in by_site.values():
        assert len(told) == len(set(told)), "two referrals told the same position"


def _arrival(referral_id: str, n: int, at: object) -> ReferralAccepted:
    event = lille_referral(
        referral_id,
        urgency=Urgency.URGENT if n % 5 == 0 else Urgency.STANDARD,
        needs=NEEDS[n % len(NEEDS)],
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, referral_id),
        occurred_at=at,
    )
    commune, departement = HOMES[n % len(HOMES)]
    data = event.data.model_copy(
        update={"residence_commune_insee": commune, "residence_departement": departement}
    )
    return event.model_copy(update={"data": data})


def _completed(referral_id: str, site_id: str) -> PathReport:
    centre_id = site_id.rsplit("-", 1)[0]
    return PathReport.model_validate(
        {
            "source": centre_id,
            "correlation_id": uuid.uuid4(),
            "subject": referral_id,
            "data": {
                "centre_id": centre_id,
                "site_id": site_id,
                "report": "path_completed",
                "occurred_on": (T0 + timedelta(days=30)).date().isoformat(),
            },
        }
    )
