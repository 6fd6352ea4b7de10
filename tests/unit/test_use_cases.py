"""Use cases against in-memory units of work: one effect per event, whatever the redeliveries."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.geography import Geography
from aiguillage_demo.samples import make_referral
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
    ReferralRejected,
    Rejection,
)
from aiguillage_schemas.events.referral_submitted import Identity, ReferralSubmitted
from aiguillage_schemas.events.routing_decisions import ReferralRouted
from aiguillage_schemas.vocabulary import RejectionReason
from notifications.domain.messages import Notification
from notifications.use_cases.notify import notify
from referral_intake.adapters.registry_file import load_registry_file
from referral_intake.domain.admission import Admitted
from referral_intake.use_cases.submit_referral import Outcome, Topics, submit_referral
from routing.domain.directory import Directory
from routing.domain.referral import ReferralState
from routing.use_cases.route_referral import route_referral
from tests.unit.fakes import FakeDigests, FakeStore, FakeUnitOfWork
from tests.unit.routing_fakes import RoutingStore, fresh_directory, routing_context
from tests.unit.test_notifications import notifications_planner

TODAY = date(2026, 11, 22)
REGISTRY = load_registry_file()
TOPICS = Topics(accepted="accepted", rejected="rejected")
CONFLICT = Rejection(
    reason=RejectionReason.CONFLICTING_DUPLICATE,
    message="conflict",
    original_sha256="0" * 64,
    original_topic="intake",
    original_partition=0,
    original_offset=7,
)


class FakeIntakeUow(FakeUnitOfWork):
    async def stored_fingerprint(self, referral_id: str) -> str | None:
        return next((fp for rid, fp in self.store.rows("referrals") if rid == referral_id), None)

    async def add_referral(
        self,
        event: ReferralSubmitted,
        admitted: Admitted,
        identity: Identity,
        outside_jurisdiction: bool,
    ) -> None:
        self.write("referrals", (event.subject, admitted.fingerprint))


class FakeNotificationsUow(FakeDigests, FakeUnitOfWork):
    async def record(self, notification: Notification, *_cause: Any) -> None:
        self.write("notifications", notification)

    async def add_delivery(self, delivery: Any) -> None:
        self.write("deliveries", delivery)

    async def cancel_reminders(self, referral_id: str) -> int:
        return 0

    async def schedule_reminder(self, reminder: Any) -> None:
        self.write("reminders", reminder)


async def _submit(store: FakeStore, event: ReferralSubmitted, geography: Geography) -> Outcome:
    return await submit_referral(
        event,
        CONFLICT,
        lambda: FakeIntakeUow(store),
        geography,
        TOPICS,
        TODAY,
        REGISTRY[event.data.prescriber.prescriber_id],
        flag_outside_jurisdiction=False,
    )


async def test_intake_admits_once_per_event_and_per_content(geography: Geography) -> None:
    store = FakeStore()
    referral = make_referral(0, today=TODAY)
    assert await _submit(store, referral, geography) == Outcome.ACCEPTED
    assert await _submit(store, referral, geography) == Outcome.DUPLICATE  # redelivery
    resubmitted = referral.model_copy(update={"event_id": referral.correlation_id})
    assert await _submit(store, resubmitted, geography) == Outcome.DUPLICATE  # same content
    assert len(store.rows("referrals")) == 1
    assert [type(e) for _, e in store.outbox] == [ReferralAccepted]
    accepted = store.outbox[0][1]
    assert accepted.subject == referral.subject
    assert referral.data.identity.last_name not in accepted.model_dump_json()


async def test_intake_rejects_a_reused_id_with_other_content(geography: Geography) -> None:
    store = FakeStore()
    first = make_referral(0, referral_id="ref-shared-000001", today=TODAY)
    other = make_referral(1, referral_id="ref-shared-000001", today=TODAY)
    await _submit(store, first, geography)
    assert await _submit(store, other, geography) == Outcome.CONFLICTING_DUPLICATE
    rejected = [e for topic, e in store.outbox if topic == "rejected"]
    assert len(rejected) == 1
    assert isinstance(rejected[0], ReferralRejected)
    assert rejected[0].data.reason == "conflicting_duplicate"


async def test_intake_raises_invalid_before_touching_storage(geography: Geography) -> None:
    store = FakeStore()
    bad = make_referral(0, today=TODAY)
    bad = bad.model_copy(
        update={
            "data": bad.data.model_copy(
                update={
                    "frame": bad.data.frame.model_copy(update={"decision_date": date(2030, 1, 1)})
                }
            )
        }
    )
    with pytest.raises(InvalidMessage) as caught:
        await _submit(store, bad, geography)
    assert isinstance(caught.value.problem, Problem)
    assert caught.value.problem.reason == "future_date"
    assert store.commits == 0


async def _accepted(geography: Geography, case: int) -> ReferralAccepted:
    store = FakeStore()
    await _submit(store, make_referral(case, today=TODAY), geography)
    event = store.outbox[0][1]
    assert isinstance(event, ReferralAccepted)
    return event


async def test_routing_decides_and_publishes_once(
    geography: Geography, directory: Directory
) -> None:
    store = RoutingStore(fresh_directory(directory))
    accepted = await _accepted(geography, 1)

    async def route() -> ReferralState | None:
        return await route_referral(accepted, routing_context(store, geography))

    first = await route()
    assert first is not None
    assert first.status == "offered"
    assert await route() is None
    assert len(store.decisions) == 1
    assert len(store.outbox) == 1
    routed = store.outbox[0][1]
    assert isinstance(routed, ReferralRouted)
    assert routed.correlation_id == accepted.correlation_id


async def test_notifications_tell_centre_and_prescriber_once(
    geography: Geography, directory: Directory
) -> None:
    routing_store, store = RoutingStore(fresh_directory(directory)), FakeStore()
    accepted = await _accepted(geography, 1)
    await route_referral(accepted, routing_context(routing_store, geography))
    routed = routing_store.outbox[0][1]
    assert isinstance(routed, ReferralRouted)
    planner, now = notifications_planner(), routed.occurred_at
    issued = await notify(routed, lambda: FakeNotificationsUow(store), "outbound", planner, now)
    assert issued is not None
    again = await notify(routed, lambda: FakeNotificationsUow(store), "outbound", planner, now)
    assert again is None
    kinds = sorted(n.recipient_kind for n in store.rows("notifications"))
    assert kinds == ["centre", "prescriber"]
    # Each notice once on the operators' stream, the prescriber's once more on its own topic.
    assert sorted(topic for topic, _ in store.outbox) == [
        "notifications.prescriber.spip-69",
        "outbound",
        "outbound",
    ]
