"""Routing on the real broker and database: the capacity race between two instances, offer
timeouts that survive a restart, and the closed loop with centres."""

from __future__ import annotations

from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.support.routing_events import (
    COURSE,
    answer,
    capacity,
    lille_cancelled,
    lille_referral,
    wait_group,
)
from tests.support.waiting import eventually

NO_FALLBACK = {"AIGUILLAGE_ROUTING_ALLOW_NEIGHBOUR_FALLBACK": "false"}


async def _set_capacity(isolated: Isolated, places: dict[str, int]) -> None:
    for site_id, total in places.items():
        await isolated.kafka.send_event(
            isolated.topic(topics.DIRECTORY_UPDATES), capacity(site_id, total)
        )
    schema = isolated.schema("routing")

    async def applied() -> dict[str, int]:
        rows = await isolated.db.fetch(
            f"SELECT site_id, places_total FROM {schema}.site_services"
            " WHERE service = $1 AND site_id = ANY($2::text[])",
            str(COURSE),
            list(places),
        )
        return {r["site_id"]: r["places_total"] for r in rows}

    await eventually(applied, lambda now: now == places, 60, 0.2, "capacity updates applied")


async def _events(isolated: Isolated) -> list[dict[str, object]]:
    """Decisions on the wire, deduplicated by event id as every consumer does (a relay killed
    between publishing and marking sent publishes the same event again)."""
    unique: dict[str, dict[str, object]] = {}
    for record in await isolated.kafka.read_all(isolated.topic(topics.ROUTED)):
        event = record.json()
        unique.setdefault(str(event["event_id"]), event)
    return list(unique.values())


async def test_two_instances_racing_for_the_last_places_never_overfill_a_site(
    isolated: Isolated,
) -> None:
    first = isolated.service("routing", **NO_FALLBACK)
    second = isolated.service("routing", **NO_FALLBACK)
    first.start()
    second.start()
    await wait_started(first, second)
    await wait_group(
        isolated.endpoints.kafka_bootstrap_servers, f"{isolated.prefix}routing", members=2
    )
    await _set_capacity(isolated, {"HDF-ARRAS-59": 3, "HDF-ARRAS-62": 2})

    referrals = [lille_referral(f"ref-race{isolated.suffix}-{i:03d}") for i in range(40)]
    for referral in referrals:
        await isolated.kafka.send_event(isolated.topic(topics.ACCEPTED), referral)

    schema = isolated.schema("routing")
    await eventually(
        lambda: isolated.count(f"SELECT count(*) FROM {schema}.decisions"),
        lambda n: n >= len(referrals),
        timeout_s=120,
        what="a decision for every referral",
    )
    sites = await isolated.db.fetch(
        f"SELECT site_id, places_total, places_held FROM {schema}.site_services"
        " WHERE places_held > 0 OR site_id LIKE 'HDF-ARRAS-%'"
    )
    assert all(r["places_held"] <= r["places_total"] for r in sites)
    held = {r["site_id"]: r["places_held"] for r in sites if r["places_held"]}
    assert held == {"HDF-ARRAS-59": 3, "HDF-ARRAS-62": 2}

    events = await eventually(
        lambda: _events(isolated),
        # Positions told again also count as events: wait for every referral's own decision.
        lambda found: {str(e["subject"]) for e in found} >= {r.subject for r in referrals},
        timeout_s=60,
        what="every decision on referrals.routed",
    )
    kinds: dict[str, set[str]] = {}
    for event in events:
        kinds.setdefault(str(event["subject"]), set()).add(str(event["event_type"]))
    assert sorted(map(sorted, kinds.values())) == sorted(
        [["referral.routed"]] * 5 + [["referral.waitlisted"]] * 35
    )
    assert set(kinds) == {r.subject for r in referrals}
    # The queue is in arrival order whichever instance handled which referral; a position told
    # to the prescriber is told again when it changes (an earlier arrival handled later goes
    # ahead), so the last one told is each referral's true rank.
    queue = await isolated.db.fetch(
        f"SELECT referral_id FROM {schema}.waitlist ORDER BY urgency_rank, arrived_at, seq"
    )
    ordered = [r["referral_id"] for r in queue]
    assert ordered == sorted(ordered)
    assert len(ordered) == 35

    def last_told(found: list[dict[str, object]]) -> dict[str, object]:
        told: dict[str, object] = {}
        for event in found:  # one referral's events are in order on its partition
            if event["event_type"] == "referral.waitlisted":
                told[str(event["subject"])] = event["data"]["position"]  # type: ignore[index]
        return told

    expected = {rid: rank for rank, rid in enumerate(ordered, start=1)}
    await eventually(
        lambda: _events(isolated),
        lambda found: last_told(found) == expected,
        timeout_s=60,
        what="every waiting referral told its true position",
    )
    # Both instances really took part in the race.
    assert all('"referral.' in p.logs() for p in (first, second))


async def test_an_unanswered_offer_is_rerouted_after_routing_restarts(isolated: Isolated) -> None:
    routing = isolated.service(
        "routing",
        AIGUILLAGE_ROUTING_OFFER_TIMEOUT_S="4",
        AIGUILLAGE_ROUTING_TIMER_POLL_INTERVAL_S="0.2",
    )
    routing.start()
    await wait_started(routing)
    referral = lille_referral(f"ref-timeout{isolated.suffix}")
    await isolated.kafka.send_event(isolated.topic(topics.ACCEPTED), referral)
    first = await eventually(
        lambda: _events(isolated), lambda found: len(found) == 1, 60, 0.2, "the first offer"
    )
    assert first[0]["data"]["attempt"] == 1  # type: ignore[index]
    routing.kill()  # the deadline passes while routing is down
    routing.start()
    await wait_started(routing)
    events = await eventually(
        lambda: _events(isolated), lambda found: len(found) >= 2, 60, 0.2, "the re-route"
    )
    second = events[1]["data"]
    assert events[1]["event_type"] == "referral.routed"
    assert second["attempt"] == 2  # type: ignore[index]
    assert second["previous_site_id"] == first[0]["data"]["site"]["site_id"]  # type: ignore[index]
    assert second["site"]["site_id"] != second["previous_site_id"]  # type: ignore[index]


async def test_centres_answer_decline_cancel_and_a_stranger_is_dead_lettered(
    isolated: Isolated,
) -> None:
    routing = isolated.service("routing", **NO_FALLBACK)
    routing.start()
    await wait_started(routing)
    await _set_capacity(isolated, {"HDF-ARRAS-59": 1, "HDF-ARRAS-62": 1})
    accepted_topic = isolated.topic(topics.ACCEPTED)
    responses = isolated.topic(topics.CENTRE_RESPONSES)
    placed, declined, waiting = (
        lille_referral(f"ref-{name}{isolated.suffix}") for name in ("placed", "declined", "waiting")
    )
    # One after the other: they sit on different partitions, and the order decides who waits.
    for count, referral in enumerate((placed, declined, waiting), start=1):
        await isolated.kafka.send_event(accepted_topic, referral)
        await eventually(
            lambda: _events(isolated), lambda e, n=count: len(e) == n, 60, 0.2, "a decision"
        )
    events = {str(e["subject"]): e for e in await _events(isolated)}
    assert events[waiting.subject]["event_type"] == "referral.waitlisted"
    site_of = {s: events[s]["data"]["site"]["site_id"] for s in (placed.subject, declined.subject)}  # type: ignore[index]

    # A centre speaking for a referral offered to another centre is refused, with the reason.
    await isolated.kafka.send_event(responses, answer(placed.subject, "HDF-CREIL-80", "accepted"))
    dead = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ROUTING_DEAD_LETTER)),
        lambda found: len(found) == 1,
        60,
        0.2,
        "the stranger's answer dead-lettered",
    )
    assert dead[0].json()["data"]["reason"] == "not_offered_to_sender"
    assert dead[0].key == placed.subject

    await isolated.kafka.send_event(
        responses, answer(placed.subject, site_of[placed.subject], "accepted")
    )
    await isolated.kafka.send_event(
        responses, answer(declined.subject, site_of[declined.subject], "declined", "not_eligible")
    )

    # The decline frees a place: the referral already waiting gets it; the declined one has no
    # untried site with room, so it waits in turn.
    def routed(found: list[dict[str, object]], subject: str) -> bool:
        kinds = [x["event_type"] for x in found if x["subject"] == subject]
        return bool(kinds) and kinds[-1] == "referral.routed"

    await eventually(
        lambda: _events(isolated), lambda e: routed(e, waiting.subject), 60, 0.2, "loop events"
    )
    await isolated.kafka.send_event(
        accepted_topic,
        lille_cancelled(placed.subject, placed.correlation_id),
    )
    final = await eventually(
        lambda: _events(isolated),
        lambda e: (
            routed(e, declined.subject) and any(x["event_type"] == "referral.withdrawn" for x in e)
        ),
        60,
        0.2,
        "withdrawal and re-offer",
    )
    # One referral's events share a key, hence a partition, hence an order.
    story: dict[str, list[str]] = {}
    for event in final:
        story.setdefault(str(event["subject"]), []).append(str(event["event_type"]))
    assert story[placed.subject] == ["referral.routed", "referral.placed", "referral.withdrawn"]
    # Both wait for Lille's place, in arrival order; whichever is behind is told its position
    # again when the other one moves. The declined one may not go back to the site it declined,
    # so the waiting one takes that place, and the declined one the cancelled referral's.
    assert story[declined.subject][:2] == ["referral.routed", "referral.waitlisted"]
    assert set(story[declined.subject][2:-1]) <= {"referral.waitlisted"}
    assert story[declined.subject][-1] == "referral.routed"
    assert set(story[waiting.subject][:-1]) == {"referral.waitlisted"}
    assert story[waiting.subject][-1] == "referral.routed"
    by_subject = {str(e["subject"]): e for e in final}  # the last event of each referral
    withdrawn = by_subject[placed.subject]["data"]
    assert withdrawn["site"]["site_id"] == site_of[placed.subject]  # type: ignore[index]
    reoffer = by_subject[declined.subject]["data"]
    assert reoffer["site"]["site_id"] == site_of[placed.subject]  # type: ignore[index]
    assert reoffer["attempt"] == 2  # type: ignore[index]
    assert by_subject[waiting.subject]["data"]["site"]["site_id"] == site_of[declined.subject]  # type: ignore[index]
