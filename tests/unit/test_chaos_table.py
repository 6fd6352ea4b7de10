"""The chaos run's table on synthetic observations: a clean world reads 0 everywhere, and each
kind of damage (loss, double, gap, oversubscription, unanswered input, crash, lag) is seen."""

from __future__ import annotations

import dataclasses
import json

from bench import chaos_report as r
from bench.chaos import (
    INVALID_KINDS,
    Plan,
    Prepared,
    one_off_faults,
    prepare_inputs,
    quick_plan,
)

CENTRE, SITE = "ARA-LYON", "ARA-LYON-69"


def _routed(obs: r.Observations, index: int, referral: str) -> None:
    """Referral offered to a site: decision, hold, event, three notifications, all delivered."""
    _accepted(obs, index, referral)
    obs.decisions.append(r.Decision(referral, f"d-{referral}", "routed", f"acc-{referral}"))
    obs.holds.append(r.Hold(referral, SITE, "psychological_followup"))
    event = r.RoutingEvent(
        f"ev-{referral}", "referral.routed", referral, "spip-69", f"d-{referral}", 1, CENTRE, SITE
    )
    obs.routing_events.append(event)
    _notified(obs, referral, event.event_id, "centre", CENTRE, "referral_offered", SITE)
    _notified(obs, referral, event.event_id, "prescriber", "spip-69", "referral_routed", SITE)


def _waitlisted(obs: r.Observations, index: int, referral: str) -> None:
    _accepted(obs, index, referral)
    obs.decisions.append(r.Decision(referral, f"d-{referral}", "waitlisted", f"acc-{referral}"))
    event = r.RoutingEvent(
        f"ev-{referral}", "referral.waitlisted", referral, "spip-69", f"d-{referral}", None, CENTRE
    )
    obs.routing_events.append(event)
    _notified(obs, referral, event.event_id, "prescriber", "spip-69", "referral_waitlisted", SITE)


def _accepted(obs: r.Observations, index: int, referral: str) -> None:
    obs.inputs.append(r.Input(index, "valid", referral))
    obs.intake_records.append(r.IntakeRecord(0, index, index))
    obs.intake_stored.add(referral)
    obs.accepted.append(r.Accepted(f"acc-{referral}", referral, "spip-69"))
    _notified(obs, referral, f"acc-{referral}", "prescriber", "spip-69", "referral_received", None)


def _notified(
    obs: r.Observations,
    referral: str,
    cause: str,
    kind: str,
    recipient: str,
    topic: str,
    site: str | None,
) -> None:
    nid = f"n-{cause}-{recipient}"
    words = f"{topic} {site}"  # what the message says
    obs.notifications.append(
        r.NotificationRow(nid, referral, kind, recipient, topic, site, cause, "", words)
    )
    obs.outbound.append(
        r.Outbound(f"o-{nid}", nid, referral, kind, recipient, topic, site, "", words)
    )
    if kind == "centre":
        obs.deliveries.append(r.DeliveryRow(f"w-{nid}", nid, "webhook", "delivered"))
        path = f"/hooks/centre/{recipient}"
        obs.webhooks.append(
            r.WebhookReceipt(f"w-{nid}", 200, referral, path, topic, site, "", words)
        )
    else:
        obs.deliveries.append(r.DeliveryRow(f"k-{nid}", nid, "kafka", "delivered"))
    obs.deliveries.append(r.DeliveryRow(f"m-{nid}", nid, "email", "delivered"))
    mail = r.MailReceipt(f"<m-{nid}@demo.invalid>", referral, (f"{recipient}@x",), words, "", words)
    obs.mails.append(mail)


def _rejected(obs: r.Observations, index: int, variant: str, prescriber: str | None) -> None:
    referral = f"bad-{index}"
    obs.inputs.append(r.Input(index, variant, referral, variant))
    obs.intake_records.append(r.IntakeRecord(0, index, index))
    obs.rejections.append(r.Rejection(f"rej-{index}", referral, 0, index, variant, prescriber))
    if prescriber is not None:
        _notified(
            obs, referral, f"rej-{index}", "prescriber", prescriber, "referral_rejected", None
        )


def clean() -> r.Observations:
    obs = r.Observations(inputs=[])
    _routed(obs, 0, "ref-a")
    _waitlisted(obs, 1, "ref-b")
    _routed(obs, 2, "ref-c")
    _rejected(obs, 3, "not_json", "spip-69")
    _rejected(obs, 4, "bad_signature", None)
    obs.lags = {"routing": 0, "notifications": 0, "referral-intake": 0}
    obs.quiescence = r.Quiescence(True, 12.0, "idle")
    return obs


def row(obs: r.Observations, prefix: str) -> r.Row:
    found = [x for x in r.rows(obs) if x.name.startswith(prefix)]
    assert len(found) == 1, [x.name for x in r.rows(obs)]
    return found[0]


def test_a_clean_world_reads_zero_everywhere() -> None:
    report = r.rows(clean())
    assert r.failed(report) == [], r.render(report)
    text = r.render(report)
    assert "FAIL" not in text
    assert row(clean(), "missing notifications").detail.startswith("9 expected")
    assert row(clean(), "routing outcomes").detail == "routed 2, waitlisted 1"


def test_a_referral_that_vanished_at_intake_is_lost_not_undecided() -> None:
    obs = clean()
    _accepted(obs, 5, "ref-gone")
    obs.intake_stored.discard("ref-gone")
    obs.accepted = [a for a in obs.accepted if a.referral_id != "ref-gone"]
    assert row(obs, "lost").value == "1"
    assert row(obs, "  of which undecided").value == "0"
    assert r.failed(r.rows(obs))


def test_a_referral_accepted_but_never_decided_is_lost_and_undecided() -> None:
    obs = clean()
    obs.decisions = [d for d in obs.decisions if d.referral_id != "ref-b"]
    obs.routing_events = [e for e in obs.routing_events if e.referral_id != "ref-b"]
    assert row(obs, "lost").value == "1"
    assert row(obs, "  of which undecided").value == "1"
    assert "ref-b" in row(obs, "lost").detail


def test_a_decision_seen_only_on_the_topic_still_counts_as_a_decision() -> None:
    obs = clean()
    obs.decisions = [d for d in obs.decisions if d.referral_id != "ref-b"]
    assert row(obs, "lost").value == "0"


def test_a_rejected_valid_referral_is_not_lost_but_is_reported() -> None:
    obs = clean()
    obs.decisions = [d for d in obs.decisions if d.referral_id != "ref-b"]
    obs.routing_events = [e for e in obs.routing_events if e.referral_id != "ref-b"]
    obs.rejections.append(r.Rejection("rej-b", "ref-b", 0, 1, "retries_exhausted", "spip-69"))
    assert row(obs, "lost").value == "0"
    rejected = row(obs, "valid referrals rejected")
    assert (rejected.value, rejected.ok) == ("1", False)
    assert "retries_exhausted: 1" in rejected.detail


def test_two_decisions_for_one_event_or_two_sites_held_are_double_decisions() -> None:
    obs = clean()
    obs.decisions.append(r.Decision("ref-a", "d-other", "routed", "acc-ref-a"))
    assert row(obs, "double decisions").value == "1"
    obs = clean()
    obs.holds.append(r.Hold("ref-c", "ARA-VILLEURBANNE", "psychological_followup"))
    assert row(obs, "double decisions").value == "1"
    obs = clean()
    obs.routing_events.append(
        r.RoutingEvent("ev-x", "referral.routed", "ref-a", "spip-69", "d-x", 1, CENTRE, SITE)
    )
    assert row(obs, "double decisions").value == "1"


def test_a_split_housing_leg_is_not_a_double_but_two_housing_legs_are() -> None:
    obs = clean()
    platform = "PN-HEBERGEMENT-NATIONAL"
    obs.holds.append(r.Hold("ref-c", platform, "eviction_housing", national=True))
    assert row(obs, "double decisions").value == "0"  # care locally, housing at the platform
    obs.holds.append(r.Hold("ref-c", "PN-OTHER-NATIONAL", "eviction_housing", national=True))
    assert row(obs, "double decisions").value == "1"


def test_a_redelivered_decision_event_is_not_a_double() -> None:
    obs = clean()
    obs.routing_events.append(obs.routing_events[0])
    obs.decisions.append(obs.decisions[0])
    assert row(obs, "double decisions").value == "0"


def test_an_overbooked_service_counts_once_however_often_seen() -> None:
    obs = clean()
    obs.overbooked += [
        r.Overbooked(SITE, "addiction_care", 4, 5, 5),
        r.Overbooked(SITE, "addiction_care", 4, 6, 5),
    ]
    found = row(obs, "oversubscribed")
    assert (found.value, found.ok) == ("1", False)
    assert "held 6 of 4" in found.detail


def test_a_gap_anywhere_on_the_way_to_the_recipient_is_a_missing_notification() -> None:
    obs = clean()
    obs.webhooks = obs.webhooks[1:]  # ref-a's offer never reached the centre's receiver
    found = row(obs, "missing notifications")
    assert found.value == "1"
    assert "1 delivered but not received" in found.detail

    obs = clean()
    mail = next(d for d in obs.deliveries if d.channel == "email")
    obs.deliveries[obs.deliveries.index(mail)] = dataclasses.replace(mail, state="pending")
    found = row(obs, "missing notifications")
    assert found.value == "1"
    assert "1 not delivered" in found.detail

    obs = clean()
    obs.notifications = [n for n in obs.notifications if n.topic != "referral_waitlisted"]
    found = row(obs, "missing notifications")
    assert found.value == "1"
    assert "1 never recorded" in found.detail

    obs = clean()
    obs.outbound = obs.outbound[1:]
    assert "1 not on notifications.outbound" in row(obs, "missing notifications").detail


def test_a_decision_that_never_left_the_database_leaves_its_notifications_missing() -> None:
    obs = clean()
    dropped = {e.event_id for e in obs.routing_events if e.referral_id == "ref-c"}
    obs.routing_events = [e for e in obs.routing_events if e.referral_id != "ref-c"]
    obs.notifications = [n for n in obs.notifications if n.cause not in dropped]
    found = row(obs, "missing notifications")
    assert found.value == "2"  # the centre's offer and the prescriber's "routed"
    assert row(obs, "lost").value == "0"


def test_a_dead_primary_with_a_delivered_fallback_is_not_missing() -> None:
    obs = clean()
    webhook = next(d for d in obs.deliveries if d.channel == "webhook")
    obs.deliveries.remove(webhook)
    obs.deliveries += [
        dataclasses.replace(webhook, state="dead"),
        r.DeliveryRow("fb", webhook.notification_id, "email", "delivered", webhook.delivery_id),
    ]
    obs.mails.append(r.MailReceipt("<fb@demo.invalid>", "ref-a", ("c@x",), "[Action requise]"))
    assert row(obs, "missing notifications").value == "0"


def test_the_same_key_twice_is_a_repeat_two_keys_for_one_effect_a_double() -> None:
    obs = clean()
    obs.webhooks.append(obs.webhooks[0])
    obs.mails.append(obs.mails[0])
    found = row(obs, "doubled effects")
    assert found.value == "0"
    assert "webhook 1, e-mail 1" in found.detail

    obs = clean()
    obs.webhooks.append(dataclasses.replace(obs.webhooks[0], key="another-delivery-id"))
    found = row(obs, "doubled effects")
    assert (found.value, found.ok) == ("1", False)
    assert "webhook 1" in found.detail

    obs = clean()  # two accepted events with different ids: "received" told twice
    first = obs.notifications[0]
    obs.notifications.append(dataclasses.replace(first, notification_id="n-again", cause="c2"))
    assert row(obs, "doubled effects").value == "1"


def test_every_invalid_input_is_answered_exactly_once() -> None:
    obs = clean()
    obs.rejections = [x for x in obs.rejections if x.event_id != "rej-4"]
    found = row(obs, "invalid inputs")
    assert (found.value, found.ok) == ("1", False)
    assert "1 unanswered" in found.detail

    obs = clean()
    obs.rejections.append(dataclasses.replace(obs.rejections[0], event_id="rej-3-again"))
    assert "1 answered twice" in row(obs, "invalid inputs").detail

    obs = clean()  # the same rejection published twice (relay re-send): one answer
    obs.rejections.append(obs.rejections[0])
    found = row(obs, "invalid inputs")
    assert found.value == "0"
    assert "1 repeats with one event id" in found.detail


def test_an_input_sent_twice_by_the_producer_needs_one_answer_per_record() -> None:
    obs = clean()
    obs.intake_records.append(r.IntakeRecord(1, 9, 4))  # input 4 again, at another offset
    assert row(obs, "invalid inputs").value == "1"
    obs.rejections.append(r.Rejection("rej-4b", "bad-4", 1, 9, "bad_signature"))
    assert row(obs, "invalid inputs").value == "0"


def test_an_unexpected_exit_a_dead_letter_and_a_lag_each_fail_the_run() -> None:
    obs = clean()
    obs.exits.append(r.Exit("routing", 1, 30.0))
    obs.dead_letters.append(r.DeadLetter("p.routing.dead-letter", "processing_error", "ref-a"))
    obs.lags["notifications"] = 3
    obs.lags["referral-intake.routed"] = None
    failed = {x.name for x in r.failed(r.rows(obs))}
    assert failed == {
        "services that exited on their own",
        "dead letters (internal topics)",
        "consumer lag notifications",
        "consumer lag referral-intake.routed",
    }
    assert "routing 1x (exit 1)" in row(obs, "services that exited").detail


def test_quiescence_is_reported_but_not_a_must_be_zero_row() -> None:
    obs = clean()
    obs.quiescence = r.Quiescence(False, 600.0, "cap")
    found = row(obs, "time to quiescence")
    assert (found.ok, found.must_be_zero) == (False, False)
    assert r.failed(r.rows(obs)) == []


def test_inputs_and_schedule_follow_the_seed() -> None:
    plan = Plan(count=2000, seed=7)
    first, again = prepare_inputs(plan), prepare_inputs(plan)

    def content(prepared: Prepared) -> object:
        try:  # occurred_at is the time of preparation: compare the rest
            document = json.loads(prepared.value)
        except ValueError:
            return prepared.value
        return document.get("data", document) if isinstance(document, dict) else document

    assert [(p.item, p.key, content(p)) for p in first] == [
        (p.item, p.key, content(p)) for p in again
    ]
    invalid = [p.item for p in first if p.item.variant != "valid"]
    assert len(invalid) == 100
    assert {i.variant for i in invalid} == set(INVALID_KINDS)
    assert one_off_faults(plan) == one_off_faults(Plan(count=2000, seed=7))
    assert one_off_faults(plan) != one_off_faults(Plan(count=2000, seed=8))
    kinds = [f.kind for f in one_off_faults(plan)]
    assert sorted(kinds) == ["broker_kill", "pg_stop", "second_routing", "sigstop"]
    quick = [f.kind for f in one_off_faults(quick_plan(seed=7))]
    assert sorted(quick) == ["kill", "kill", "kill", "pg_stop"]


def test_rejections_of_unreadable_inputs_are_not_one_effect_told_twice() -> None:
    obs = clean()
    for index in (7, 8):  # both refused before their subject could be read: reference "unknown"
        obs.inputs.append(r.Input(index, "not_json", None, "not_json"))
        obs.intake_records.append(r.IntakeRecord(0, index, index))
        obs.rejections.append(r.Rejection(f"rej-{index}", "unknown", 0, index, "not_json", "p"))
        nid, corr = f"n-rej-{index}", f"corr-{index}"
        obs.notifications.append(
            r.NotificationRow(
                nid, "unknown", "prescriber", "p", "referral_rejected", None, "x", corr
            )
        )
        obs.outbound.append(
            r.Outbound(
                f"o-{index}", nid, "unknown", "prescriber", "p", "referral_rejected", None, corr
            )
        )
        obs.mails.append(r.MailReceipt(f"<m-{index}@d>", "unknown", ("p@x",), "Rejet", corr))
    assert row(obs, "doubled effects").value == "0"
    obs.mails.append(r.MailReceipt("<m-other@d>", "unknown", ("p@x",), "Rejet", "corr-7"))
    assert row(obs, "doubled effects").value == "1"


def test_a_waiting_referral_told_a_new_position_is_told_something_new() -> None:
    obs = clean()
    first = next(n for n in obs.notifications if n.topic == "referral_waitlisted")
    moved = dataclasses.replace(first, notification_id="n-moved", cause="ev-moved", said="pos 2")
    obs.notifications.append(moved)
    obs.outbound.append(
        r.Outbound(
            "o-moved", "n-moved", "ref-b", "prescriber", "spip-69", moved.topic, SITE, "", "pos 2"
        )
    )
    obs.mails.append(r.MailReceipt("<m-moved@d>", "ref-b", ("spip-69@x",), "w", "", "pos 2"))
    assert row(obs, "doubled effects").value == "0"
    obs.mails.append(r.MailReceipt("<m-again@d>", "ref-b", ("spip-69@x",), "w", "", "pos 2"))
    assert row(obs, "doubled effects").value == "1"
