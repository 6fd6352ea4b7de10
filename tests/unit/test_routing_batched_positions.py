"""Waiting-list positions inside a consumer's batch: told once, when the batch ends (issue #11).

A batch is one transaction: a position held only until the next record of the same batch was
never committed, so nobody is told it. What each waiting referral is told is still its true
position, and the last position it was told is the one it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_common.geography import Geography
from aiguillage_schemas.events.routing_decisions import ReferralWaitlisted
from aiguillage_schemas.vocabulary import Urgency
from routing.adapters.memory import MemoryRoutingUow, batch
from routing.domain.decision import Policy
from routing.domain.directory import Directory
from routing.domain.waiting import positions
from routing.use_cases.route_referral import route_referral
from tests.support.routing_events import lille_referral
from tests.unit.routing_fakes import Clock, RoutingStore, fresh_directory, routing_context


def _full_store(directory: Directory) -> RoutingStore:
    """Every place taken: each arrival waits."""
    store = RoutingStore(fresh_directory(directory))
    for site_id, service in list(store.capacity):
        store.set_capacity(site_id, service, places_total=0)
    return store


def _arrival(n: int, urgent: bool, clock: Clock) -> object:
    referral_id = f"ref-batch-{n:03d}"
    return lille_referral(
        referral_id,
        urgency=Urgency.URGENT if urgent else Urgency.STANDARD,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, referral_id),
        occurred_at=clock.now,
    )


def _notices(store: RoutingStore) -> Counter[str]:
    return Counter(event.subject for event in store.events(ReferralWaitlisted))


async def _true_positions(store: RoutingStore, geography: Geography) -> dict[str, int]:
    homes = {row.home for row in store.waitlist.values()}
    waiting = await MemoryRoutingUow(store).waiting_near(homes)
    return positions(waiting, store.directory, geography, Policy())


def _last_told(store: RoutingStore) -> dict[str, int]:
    told: dict[str, int] = {}
    for event in store.events(ReferralWaitlisted):
        assert isinstance(event, ReferralWaitlisted)
        told[event.subject] = event.data.position
    return told


def test_urgent_arrivals_in_one_batch_tell_those_behind_once(
    directory: Directory, geography: Geography
) -> None:
    async def run(batched: bool) -> RoutingStore:
        store = _full_store(directory)
        clock = Clock()
        ctx = routing_context(store, geography, clock)
        for n in range(5):  # five standard referrals wait, each told its position
            clock.advance(minutes=1)
            await route_referral(_arrival(n, False, clock), ctx)  # type: ignore[arg-type]
        async with batch(store) if batched else contextlib.nullcontext():
            for n in range(5, 8):  # three urgent ones go ahead of them, in one batch
                clock.advance(minutes=1)
                await route_referral(_arrival(n, True, clock), ctx)  # type: ignore[arg-type]
        return store

    one_by_one, batched = asyncio.run(run(False)), asyncio.run(run(True))
    standard = [f"ref-batch-{n:03d}" for n in range(5)]
    # Without a batch each urgent arrival moves the five back one more place: 1 + 3 notices.
    assert [_notices(one_by_one)[r] for r in standard] == [4] * 5
    # In one batch: their first notice, then one for where the batch left them.
    assert [_notices(batched)[r] for r in standard] == [2] * 5
    assert [_notices(batched)[f"ref-batch-{n:03d}"] for n in range(5, 8)] == [1] * 3
    # What was told last is the truth, the same either way.
    assert _last_told(batched) == _last_told(one_by_one)
    assert _last_told(batched) == asyncio.run(_true_positions(batched, geography))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=5))
def test_batched_arrivals_are_told_their_true_positions_once_per_batch(
    batches: list[list[bool]], directory: Directory, geography: Geography
) -> None:
    store = _full_store(directory)
    clock = Clock()
    ctx = routing_context(store, geography, clock)

    async def run() -> None:
        n = 0
        for urgencies in batches:
            before = _notices(store)
            async with batch(store):
                for urgent in urgencies:
                    clock.advance(minutes=1)
                    await route_referral(_arrival(n, urgent, clock), ctx)  # type: ignore[arg-type]
                    n += 1
            told = _notices(store) - before
            assert all(count == 1 for count in told.values()), told
            assert _last_told(store) == await _true_positions(store, geography)

    asyncio.run(run())
