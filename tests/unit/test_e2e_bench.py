"""The end-to-end benchmark's counting (bench/e2e.py): what a referral is owed, when it is
complete, and the percentiles. Pure: synthetic events and receipts, no infrastructure."""

from __future__ import annotations

import math
import uuid

from bench.e2e import (
    AcceptedFact,
    Receipt,
    RoutingFact,
    Tracker,
    load_channel_book,
    peer_deliveries,
    percentile,
    promised,
)
from notifications.domain.messages import delivery_id, notification_id

BOOK = load_channel_book()
PRESCRIBER, CENTRE = "spip-69", "ARA-LYON"


def _id() -> str:
    return str(uuid.uuid4())


def _accepted() -> AcceptedFact:
    return AcceptedFact(_id(), PRESCRIBER)


def _routed(attempt: int = 1) -> RoutingFact:
    return RoutingFact(_id(), "referral.routed", PRESCRIBER, CENTRE, attempt)


def _waitlisted() -> RoutingFact:
    return RoutingFact(_id(), "referral.waitlisted", PRESCRIBER)


def _urgent_escalation() -> RoutingFact:
    return RoutingFact(_id(), "referral.escalated", PRESCRIBER, reason="urgent_no_place")


def _topics(urgent: bool, accepted: AcceptedFact, *routing: RoutingFact) -> list[tuple[str, str]]:
    return [(t.kind, t.topic) for t in promised(urgent, accepted, routing).told]


def test_a_routed_referral_is_owed_its_receipt_the_offer_and_the_routing() -> None:
    assert _topics(False, _accepted(), _routed()) == [
        ("prescriber", "referral_received"),
        ("centre", "referral_offered"),
        ("prescriber", "referral_routed"),
    ]
    assert promised(False, _accepted(), [_routed()]).outcome == "routed"


def test_a_waiting_referral_is_owed_its_first_position_only() -> None:
    first, later = _waitlisted(), _waitlisted()
    promise = promised(False, _accepted(), [first, later])
    assert [(t.topic, t.cause) for t in promise.told[1:]] == [
        ("referral_waitlisted", first.event_id)
    ]
    assert promise.outcome == "waitlisted"


def test_an_urgent_waiting_referral_also_waits_for_its_escalation_in_either_order() -> None:
    accepted, waiting, escalation = _accepted(), _waitlisted(), _urgent_escalation()
    pending = promised(True, accepted, [waiting])
    assert pending.waiting_for == "urgent escalation (referrals.routed)"
    assert not pending.told
    for order in ([escalation, waiting], [waiting, escalation]):
        assert _topics(True, accepted, *order)[1:] == [
            ("prescriber", "referral_waitlisted"),
            ("prescriber", "referral_escalated"),
        ]
    # A standard referral is owed no escalation, and an escalation alone is no decision.
    assert len(promised(False, accepted, [waiting]).told) == 2
    assert promised(True, accepted, [escalation]).waiting_for.startswith("routing decision")


def test_unroutable_and_missing_facts() -> None:
    unroutable = RoutingFact(_id(), "referral.unroutable", PRESCRIBER, reason="x")
    assert _topics(False, _accepted(), unroutable)[1:] == [("prescriber", "referral_unroutable")]
    assert promised(False, None, [unroutable]).waiting_for.startswith("acceptance")
    assert promised(False, _accepted(), []).waiting_for.startswith("routing decision")


def test_peer_deliveries_are_the_webhook_and_emails_by_the_services_ids() -> None:
    accepted, routed = _accepted(), _routed()
    told = promised(False, accepted, [routed]).told
    deliveries = [e for t in told for e in peer_deliveries(t, BOOK)]
    # Prescribers: kafka (0, not a peer) then e-mail (1); centres: webhook (0) then e-mail (1).
    assert [(e.told.topic, e.channel) for e in deliveries] == [
        ("referral_received", "email"),
        ("referral_offered", "webhook"),
        ("referral_offered", "email"),
        ("referral_routed", "email"),
    ]
    offer = notification_id(uuid.UUID(routed.event_id), "centre", CENTRE)
    assert deliveries[1].delivery_id == str(delivery_id(offer, "webhook", 0))
    received = notification_id(uuid.UUID(accepted.event_id), "prescriber", PRESCRIBER)
    assert deliveries[0].delivery_id == str(delivery_id(received, "email", 1))


def test_a_referral_completes_at_its_last_receipt_whatever_the_order_of_facts() -> None:
    tracker = Tracker(BOOK)
    tracker.expect("r1", urgent=False)
    tracker.submitted("r1", 100.0)
    accepted, routed = _accepted(), _routed()
    expected = [
        e for t in promised(False, accepted, [routed]).told for e in peer_deliveries(t, BOOK)
    ]
    # Receipts before the events that promise them, one of them twice, and a stranger.
    for n, item in enumerate(expected[:3]):
        tracker.on_receipt(Receipt(item.delivery_id, 101.0 + n, item.channel))
    tracker.on_receipt(Receipt(expected[0].delivery_id, 150.0, "email"))
    tracker.on_receipt(Receipt(_id(), 102.0, "webhook", "answer_reminder"))
    tracker.on_accepted("r1", accepted)
    tracker.on_routing("r1", routed)
    journey = tracker.journeys["r1"]
    assert journey.complete_at is None
    assert math.isinf(journey.latency_s)
    assert tracker.missing(["r1"]) == {"email referral_routed not received": 1}
    tracker.on_receipt(Receipt(expected[3].delivery_id, 109.5, "email"))
    assert journey.complete_at == 109.5
    assert journey.latency_s == 9.5
    assert tracker.pending(["r1"]) == 0
    assert tracker.repeats == 1
    assert tracker.others() == {"webhook answer_reminder": 1}
    # Later news (a new position) changes nothing for a complete referral.
    tracker.on_routing("r1", _waitlisted())
    assert journey.complete_at == 109.5


def test_an_undecided_referral_says_what_it_waits_for() -> None:
    tracker = Tracker(BOOK)
    tracker.expect("r2", urgent=True)
    tracker.submitted("r2", 1.0)
    tracker.on_accepted("r2", _accepted())
    tracker.on_routing("r2", _waitlisted())
    assert tracker.missing(["r2"]) == {"no urgent escalation (referrals.routed)": 1}


def test_nearest_rank_percentiles_with_incomplete_referrals_last() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    with_lost = [*values[:98], math.inf, math.inf]
    assert percentile(with_lost, 95) == 95
    assert math.isinf(percentile(with_lost, 99))
