"""The housing leg of a split referral as intake and notifications read it: the national
platform is a second identity holder for the housing only, offered the housing like a centre an
offer; the prescriber is told where the housing went and when a human must find it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from aiguillage_common.identity_requests import Release
from aiguillage_schemas.events.routing_decisions import (
    HousingOffered,
    HousingUpdated,
    HousingUpdatedData,
)
from aiguillage_schemas.examples import examples
from referral_intake.domain.identity_release import (
    UNCHANGED,
    Holder,
    ReferralState,
    decide_release,
    holder_after,
    housing_holder_after,
)
from tests.unit.test_notifications import notifications_planner

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def offered() -> HousingOffered:
    event = examples()["referral.housing_offered.v1"]
    assert isinstance(event, HousingOffered)
    return event


def updated(
    outcome: Literal["accepted", "declined", "timed_out", "released", "ended"],
) -> HousingUpdated:
    event = offered()
    return HousingUpdated(
        source="routing",
        correlation_id=event.correlation_id,
        subject=event.subject,
        event_id=uuid.uuid4(),
        data=HousingUpdatedData(
            prescriber_id=event.data.prescriber_id,
            prescriber_kind=event.data.prescriber_kind,
            site=event.data.site,
            outcome=outcome,
            escalated=outcome in ("declined", "timed_out"),
            explanation="-",
        ),
    )


def test_the_platform_is_a_second_holder_for_the_housing_only() -> None:
    assert holder_after(offered()) is UNCHANGED  # the care centre keeps its hold
    assert housing_holder_after(offered()) == Holder("PN-HEBERGEMENT", "offered")
    assert housing_holder_after(updated("accepted")) == Holder("PN-HEBERGEMENT", "placed")
    for outcome in ("declined", "timed_out", "released", "ended"):
        assert housing_holder_after(updated(outcome)) is None
    split = ReferralState(False, False, "HDF-ARRAS", housing_holder_centre_id="PN-HEBERGEMENT")
    assert decide_release(split, "HDF-ARRAS", True) is Release.GRANTED
    assert decide_release(split, "PN-HEBERGEMENT", True) is Release.GRANTED
    assert decide_release(split, "ARA-LYON", True) is Release.NOT_HOLDER
    ended = ReferralState(False, False, "HDF-ARRAS", housing_holder_centre_id=None)
    assert decide_release(ended, "PN-HEBERGEMENT", True) is Release.NOT_HOLDER
    cancelled = ReferralState(True, False, None, housing_holder_centre_id="PN-HEBERGEMENT")
    assert decide_release(cancelled, "PN-HEBERGEMENT", True) is Release.GONE


def test_the_platform_is_offered_the_housing_and_the_prescriber_told_each_outcome() -> None:
    planner = notifications_planner()
    plan = planner.plan(offered(), NOW)
    told = {(n.recipient_kind, n.recipient_id, n.topic) for n in plan.notifications}
    assert told == {
        ("centre", "PN-HEBERGEMENT", "referral_offered"),
        ("prescriber", "parquet-tj-lille", "referral_routed"),
    }
    offer = next(n for n in plan.notifications if n.recipient_kind == "centre")
    assert offer.deliveries  # the platform's channels (data/centre_contacts.json)
    assert "hébergement" in offer.facts["services"]
    assert not plan.cancel_reminders  # the care offer's reminder still stands

    declined = planner.plan(updated("declined"), NOW).notifications
    assert [(n.recipient_kind, n.topic) for n in declined] == [("prescriber", "referral_escalated")]
    assert "coordinateur" in declined[0].facts["reason"]
    released = planner.plan(updated("released"), NOW).notifications
    assert [(n.recipient_id, n.topic) for n in released] == [
        ("PN-HEBERGEMENT", "referral_withdrawn")
    ]
    ended = planner.plan(updated("ended"), NOW).notifications
    assert [(n.recipient_kind, n.topic) for n in ended] == [("prescriber", "path_reported")]
    assert ended[0].facts["report"] == "hébergement terminé"
    accepted = planner.plan(updated("accepted"), NOW).notifications
    assert [(n.recipient_kind, n.topic) for n in accepted] == [("prescriber", "referral_placed")]
