"""Who is told what, on which channels, and what a delivery attempt's outcome leads to."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiguillage_common.geography import default_data_dir
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.notifications import NotificationDeliveryFailed
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
    ReferralAcceptedData,
    ReferralRejected,
    Rejection,
    RejectionError,
)
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    PathReportedData,
    ReferralEscalated,
    ReferralEscalatedData,
    ReferralPlaced,
    ReferralPlacedData,
    ReferralRouted,
    ReferralRoutedData,
    ReferralUnroutable,
    ReferralUnroutableData,
    ReferralWaitlisted,
    ReferralWaitlistedData,
    ReferralWithdrawn,
    ReferralWithdrawnData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import (
    JudicialFrame,
    PrescriberKind,
    RejectionReason,
    ServiceCode,
    Urgency,
)
from notifications.adapters.directory import load_recipients, load_templates, notice_topics
from notifications.adapters.email import build_message
from notifications.adapters.webhook import sign, verify
from notifications.domain.delivery import (
    AttemptResult,
    BackoffPolicy,
    Decision,
    DeliveryJob,
    History,
    Reclaimed,
    Settled,
    decide,
    http_result,
    smtp_result,
)
from notifications.domain.messages import (
    REPORT_LABELS,
    SERVICE_LABELS,
    TERMINATION_LABELS,
    Delivery,
    Notification,
    Planner,
    Reminder,
)
from notifications.domain.templates import TemplateError, TopicTemplate
from notifications.settings import NotificationsSettings
from notifications.use_cases.deliver import Deliverer
from notifications.use_cases.notify import notify
from tests.unit.fakes import FakeDigests, FakeStore, FakeUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
REF = "ref-unit-000001"
PRESCRIBER = "spip-69"
SITE = SiteRef(
    centre_id="ARA-LYON",
    centre_name="CPCA Rhône-Alpes",
    site_id="ARA-LYON-69",
    site_commune_insee="69381",
    site_departement="69",
    address_confidential=False,
)


def notifications_planner() -> Planner:
    settings = NotificationsSettings(
        webhook_url_template="http://hooks.test/{kind}/{id}", smtp_host="smtp.test"
    )
    return Planner(load_recipients(settings), load_templates(), timedelta(hours=24))


def _envelope(**kwargs: Any) -> dict[str, Any]:
    return {"source": "routing", "correlation_id": uuid.uuid4(), "subject": REF, **kwargs}


def routed(attempt: int = 1, answer_by: datetime | None = None) -> ReferralRouted:
    return ReferralRouted(
        **_envelope(),
        data=ReferralRoutedData(
            decision_id=uuid.uuid4(),
            prescriber_id=PRESCRIBER,
            prescriber_kind=PrescriberKind.SPIP,
            site=SITE,
            services=[ServiceCode.ADDICTION_CARE],
            distance_km=3.2,
            explanation="closest site offering the services",
            attempt=attempt,
            answer_by=answer_by,
            previous_site_id="ARA-LYON-01" if attempt > 1 else None,
        ),
    )


def path(report: str, **extra: Any) -> PathReported:
    return PathReported(
        **_envelope(),
        data=PathReportedData(
            prescriber_id=PRESCRIBER,
            prescriber_kind=PrescriberKind.SPIP,
            site=SITE,
            report=report,  # type: ignore[arg-type]
            occurred_on=date(2026, 11, 20),
            **extra,
        ),
    )


def every_event() -> list[tuple[Envelope, list[tuple[str, str, str]]]]:
    kind = PrescriberKind.SPIP
    rejection = {
        "reason": RejectionReason.MISSING_FIELD,
        "message": "data.frame is required",
        "field_path": "data.frame",
        "original_sha256": "0" * 64,
        "original_topic": "referrals.intake",
        "original_partition": 0,
        "original_offset": 1,
    }
    return [
        (
            routed(),
            [
                ("centre", "ARA-LYON", "referral_offered"),
                ("prescriber", PRESCRIBER, "referral_routed"),
            ],
        ),
        (
            routed(attempt=2),
            [
                ("centre", "ARA-LYON", "referral_offered"),
                ("prescriber", PRESCRIBER, "referral_rerouted"),
            ],
        ),
        (
            ReferralUnroutable(
                **_envelope(),
                data=ReferralUnroutableData(
                    decision_id=uuid.uuid4(),
                    prescriber_id=PRESCRIBER,
                    prescriber_kind=kind,
                    reason="no_site_offers_services",
                    explanation="none",
                ),
            ),
            [("prescriber", PRESCRIBER, "referral_unroutable")],
        ),
        (
            ReferralWaitlisted(
                **_envelope(),
                data=ReferralWaitlistedData(
                    decision_id=uuid.uuid4(),
                    prescriber_id=PRESCRIBER,
                    prescriber_kind=kind,
                    site=SITE,
                    service=ServiceCode.DISCUSSION_GROUP,
                    position=3,
                    explanation="full",
                ),
            ),
            [("prescriber", PRESCRIBER, "referral_waitlisted")],
        ),
        (
            ReferralEscalated(
                **_envelope(),
                data=ReferralEscalatedData(
                    prescriber_id=PRESCRIBER,
                    prescriber_kind=kind,
                    attempts=3,
                    reason="attempts_exhausted",
                    explanation="declined thrice",
                ),
            ),
            [("prescriber", PRESCRIBER, "referral_escalated")],
        ),
        (
            ReferralPlaced(
                **_envelope(),
                data=ReferralPlacedData(prescriber_id=PRESCRIBER, prescriber_kind=kind, site=SITE),
            ),
            [("prescriber", PRESCRIBER, "referral_placed")],
        ),
        (
            ReferralWithdrawn(
                **_envelope(),
                data=ReferralWithdrawnData(
                    prescriber_id=PRESCRIBER,
                    prescriber_kind=kind,
                    site=SITE,
                    reason="cancelled_by_prescriber",
                ),
            ),
            [("centre", "ARA-LYON", "referral_withdrawn")],
        ),
        *[
            (path(report), [("prescriber", PRESCRIBER, "path_reported")])
            for report in (
                "appointment_scheduled",
                "attended",
                "module_completed",
                "path_completed",
                "breach_suspected",
            )
        ],
        (path("no_show", justified=False), [("prescriber", PRESCRIBER, "path_reported")]),
        (
            path("path_terminated", termination_reason="excluded"),
            [("prescriber", PRESCRIBER, "path_reported")],
        ),
        (
            ReferralAccepted(
                **_envelope(source="referral-intake"),
                data=ReferralAcceptedData(
                    prescriber_id=PRESCRIBER,
                    prescriber_kind=kind,
                    judicial_frame=JudicialFrame.SURSIS_PROBATOIRE,
                    residence_commune_insee="69381",
                    residence_departement="69",
                    needed_services=[ServiceCode.ADDICTION_CARE],
                    urgency=Urgency.STANDARD,
                    language="fr",
                    interpreter_needed=False,
                ),
            ),
            [("prescriber", PRESCRIBER, "referral_received")],
        ),
        (
            ReferralRejected(
                **_envelope(source="referral-intake"),
                data=Rejection(**rejection, prescriber_id=PRESCRIBER),
            ),
            [("prescriber", PRESCRIBER, "referral_rejected")],
        ),
        (ReferralRejected(**_envelope(source="referral-intake"), data=Rejection(**rejection)), []),
    ]


@pytest.mark.parametrize(("event", "expected"), every_event())
def test_each_event_tells_its_recipients_on_their_ordered_channels(
    event: Any, expected: list[tuple[str, str, str]]
) -> None:
    plan = notifications_planner().plan(event, NOW)
    told = [(n.recipient_kind, n.recipient_id, n.topic) for n in plan.notifications]
    assert told == expected
    for notification in plan.notifications:
        channels = [d.channel for d in notification.deliveries]
        # Centres: their system (webhook) first, the coordinator's e-mail as a copy;
        # prescribers: their own topic first, e-mail as a copy (a rejection's e-mail copy goes
        # in the prescriber's digest instead).
        if notification.recipient_kind == "centre":
            assert channels == ["webhook", "email"]
        elif notification.topic == "referral_rejected":
            assert channels == ["kafka"]
            assert [e.notification_id for e in plan.digest] == [notification.notification_id]
        else:
            assert channels == ["kafka", "email"]
        assert REF in notification.body
        assert REF in notification.email_text
        assert str(event.correlation_id) in notification.email_text
        assert "$" not in notification.body + notification.email_text + notification.title
        assert notification.email_html.startswith("<!DOCTYPE html>")
    assert plan.unknown_recipients == ()


def test_email_carries_no_judicial_or_health_detail_that_authenticated_channels_carry() -> None:
    planner = notifications_planner()
    (offer, _) = planner.plan(routed(), NOW).notifications
    assert "addictologie" in offer.body
    assert "addictologie" not in offer.email_text + offer.email_html + offer.title
    (report,) = planner.plan(path("no_show", justified=False), NOW).notifications
    assert "absence non justifiée" in report.body
    assert "absence" not in report.email_text.lower() + report.title.lower()


def test_prescriber_learns_the_public_contact_of_the_site() -> None:
    (_, told) = notifications_planner().plan(routed(), NOW).notifications
    assert "01 99 00" in told.email_text


def test_same_event_plans_the_same_ids_so_redelivery_is_recognised() -> None:
    planner, event = notifications_planner(), routed()
    first, second = planner.plan(event, NOW), planner.plan(event, NOW)
    ids = lambda plan: [d.delivery_id for n in plan.notifications for d in n.deliveries]  # noqa: E731
    assert ids(first) == ids(second)
    assert len(set(ids(first))) == 4


def test_reminder_fires_before_the_answer_deadline_and_only_for_future_deadlines() -> None:
    planner = notifications_planner()
    plan = planner.plan(routed(answer_by=NOW + timedelta(days=2)), NOW)
    assert plan.reminder is not None
    assert plan.cancel_reminders
    assert plan.reminder.fire_at == NOW + timedelta(days=1)
    # A window shorter than the lead (an urgent offer): half-way, never with the offer itself.
    soon = planner.plan(routed(answer_by=NOW + timedelta(hours=2)), NOW).reminder
    assert soon is not None
    assert soon.fire_at == NOW + timedelta(hours=1)
    assert planner.plan(routed(answer_by=NOW - timedelta(hours=1)), NOW).reminder is None
    reminder = planner.reminder_notification(plan.reminder)
    assert (reminder.recipient_kind, reminder.topic) == ("centre", "answer_reminder")
    assert "24/11/2026 à 10:00" in reminder.email_text  # Paris time


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (500, "transient"), (503, "transient"),
     (408, "transient"), (429, "transient"), (400, "permanent"), (401, "permanent"),
     (404, "permanent"), (301, "permanent")],
)  # fmt: skip
def test_http_status_classification(status: int, outcome: str) -> None:
    assert http_result(status, 5).outcome == outcome


def test_smtp_4xx_is_retried_and_5xx_is_not() -> None:
    assert smtp_result(451, 3).outcome == "transient"
    assert smtp_result(550, 3).outcome == "permanent"
    # A refused session (greeting, EHLO, STARTTLS, AUTH) is never the message's fault.
    assert smtp_result(535, 3, about_message=False).outcome == "transient"
    refused = smtp_result(554, 3, about_message=False)
    assert (refused.outcome, refused.error_class) == ("transient", "smtp_554")


def test_retries_back_off_exponentially_with_jitter_then_give_up() -> None:
    policy = BackoffPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=3.0)
    failure, rng = http_result(500, 1), random.Random(7)
    delays = []
    for done_before in (0, 1, 2):
        decision = decide(failure, History(attempts=done_before), policy, NOW, rng)
        assert decision.state == "pending"
        assert decision.next_attempt_at is not None
        delays.append((decision.next_attempt_at - NOW).total_seconds())
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert 1.5 <= delays[2] <= 3.0
    assert decide(failure, History(attempts=3), policy, NOW) == Decision(
        "dead", None, "retries_exhausted", fallback="dead"
    )
    assert decide(http_result(404, 1), History(), policy, NOW).dead_reason == "permanent_failure"


def test_webhook_signature_verifies_with_the_secret_and_fails_with_another() -> None:
    body = b'{"reference":"ref-1"}'
    header = sign(b"right", 1_700_000_000, body)
    assert verify(b"right", header, body, now=1_700_000_010)
    assert not verify(b"wrong", header, body, now=1_700_000_010)
    assert not verify(b"right", header, body + b" ", now=1_700_000_010)
    assert not verify(b"right", header, body, now=1_700_009_999)  # replayed too late


def test_template_without_a_section_is_refused() -> None:
    with pytest.raises(TemplateError):
        TopicTemplate.parse("broken.txt", "[subject]\nx\n[text]\ny\n")


# The delivery worker's decisions, against an in-memory store and a scripted sender.


class FakeDeliveryUow(FakeDigests, FakeUnitOfWork):
    def __init__(self, store: FakeStore, jobs: list[DeliveryJob], copies: list[Delivery]) -> None:
        super().__init__(store)
        self._jobs, self._copies = jobs, copies

    async def record(self, notification: Notification, *_cause: Any) -> None:
        self.write("notifications", notification)

    async def add_delivery(self, delivery: Delivery) -> bool:
        # ON CONFLICT (delivery_id) DO NOTHING, as PostgreSQL does.
        known = [*self.store.rows("deliveries"), *(r for t, r in self._writes if t == "deliveries")]
        if any(d.delivery_id == delivery.delivery_id for d in known):
            return False
        self.write("deliveries", delivery)
        return True

    async def cancel_reminders(self, referral_id: str) -> None:
        return None

    async def schedule_reminder(self, reminder: Reminder) -> None:
        self.write("reminders", reminder)

    async def lease_due(
        self, limit: int, lease_s: float, worker_id: uuid.UUID
    ) -> list[DeliveryJob]:
        jobs, self._jobs[:] = self._jobs[:limit], self._jobs[limit:]
        return jobs

    async def start_attempt(
        self, job: DeliveryJob, worker_id: uuid.UUID, lease_s: float
    ) -> int | None:
        if job.delivery_id in self.store.tables.get("lost_leases", []):
            return None
        self.write("started", job.delivery_id)
        return len(self.store.rows("started")) + 1

    async def record_attempt(
        self, job: DeliveryJob, attempt_id: int, result: AttemptResult, decision: Decision
    ) -> None:
        self.write("attempts", (job.delivery_id, result, decision))

    async def settle(
        self,
        finished: Sequence[Settled],
        starting: Sequence[DeliveryJob],
        worker_id: uuid.UUID,
        lease_s: float,
    ) -> dict[uuid.UUID, int]:
        for done in finished:
            await self.record_attempt(done.job, done.attempt_id, done.result, done.decision)
        started = {}
        for job in starting:
            attempt_id = await self.start_attempt(job, worker_id, lease_s)
            if attempt_id is not None:
                started[job.delivery_id] = attempt_id
        return started

    async def next_channel(self, job: DeliveryJob) -> Delivery | None:
        return next((c for c in self._copies if c.position > job.position), None)

    async def reclaim_from_dead_workers(self, worker_id: uuid.UUID) -> list[Reclaimed]:
        return list(self.store.rows("reclaimable"))

    async def due_reminders(self, limit: int) -> list[Reminder]:
        return []


class ScriptedSender:
    def __init__(self, *results: AttemptResult) -> None:
        self.results = list(results)
        self.sent: list[DeliveryJob] = []

    async def send(self, job: DeliveryJob) -> AttemptResult:
        self.sent.append(job)
        return self.results.pop(0)


def _job(channel: str = "webhook", fallback_for: uuid.UUID | None = None) -> DeliveryJob:
    return DeliveryJob(
        delivery_id=uuid.uuid4(),
        notification_id=uuid.uuid4(),
        referral_id=REF,
        correlation_id=uuid.uuid4(),
        recipient_kind="centre",
        recipient_id="ARA-LYON",
        channel=channel,  # type: ignore[arg-type]
        target="http://hooks.test/centre/ARA-LYON",
        position=0,
        fallback_for=fallback_for,
        fallback_from_channel=None,
        attempts=0,
        topic="referral_offered",
        site_id="ARA-LYON-69",
        title="t",
        body="b",
        email_text="e",
        email_html="<h1>t</h1>",
        facts={},
    )


def _deliverer(store: FakeStore, jobs: list[DeliveryJob], sender: ScriptedSender) -> Deliverer:
    copy = Delivery(uuid.uuid4(), jobs[0].notification_id, "email", "c@x.invalid", 1)
    return Deliverer(
        lambda: FakeDeliveryUow(store, jobs, [copy]),
        {"webhook": sender, "email": sender},
        BackoffPolicy(3, 1.0, 10.0),
        "dead-letter",
        30.0,
        10,
        lambda: NOW,
    )


async def test_dead_primary_is_dead_lettered_with_reason_and_falls_back_to_next_channel() -> None:
    store, job = FakeStore(), _job()
    deliverer = _deliverer(store, [job], ScriptedSender(http_result(410, 12)))
    assert await deliverer.deliver_due() == 1
    ((_, result, decision),) = store.rows("attempts")
    assert decision.dead_reason == "permanent_failure"
    assert result.http_status == 410
    (fallback,) = store.rows("deliveries")
    assert (fallback.channel, fallback.fallback_for) == ("email", job.delivery_id)
    ((topic, event),) = store.outbox
    assert topic == "dead-letter"
    assert isinstance(event, NotificationDeliveryFailed)
    assert event.data.reason == "permanent_failure"
    assert event.data.error_class == "http_410"
    assert event.data.fallback_delivery_id == fallback.delivery_id


async def test_transient_failure_is_rescheduled_without_dead_letter() -> None:
    store, job = FakeStore(), _job()
    await _deliverer(store, [job], ScriptedSender(http_result(503, 9))).deliver_due()
    ((_, _, decision),) = store.rows("attempts")
    assert decision.state == "pending"
    assert decision.next_attempt_at is not None
    assert store.outbox == []
    assert store.rows("deliveries") == []


async def test_a_dead_fallback_does_not_fall_back_again() -> None:
    store, job = FakeStore(), _job("email", fallback_for=uuid.uuid4())
    await _deliverer(store, [job], ScriptedSender(smtp_result(550, 4))).deliver_due()
    assert store.rows("deliveries") == []
    assert len(store.outbox) == 1


def test_fallback_email_says_why_it_arrives_by_email() -> None:
    message = build_message(_job("email", fallback_for=uuid.uuid4()), "a@b.invalid", "b.invalid")
    assert message["Subject"].startswith("[Action requise]")
    assert message["Message-ID"].endswith("@b.invalid>")


async def test_notify_records_every_delivery_once() -> None:
    class Uow(FakeDeliveryUow):
        def __init__(self, store: FakeStore) -> None:
            super().__init__(store, [], [])

    store, planner, event = (
        FakeStore(),
        notifications_planner(),
        routed(answer_by=NOW + timedelta(days=2)),
    )
    assert await notify(event, lambda: Uow(store), "outbound", planner, NOW) is not None
    assert await notify(event, lambda: Uow(store), "outbound", planner, NOW) is None
    assert len(store.rows("deliveries")) == 4
    assert len(store.rows("reminders")) == 1
    # Both notices on the operators' stream; the prescriber's (Kafka channel) on its own topic.
    published = sorted(topic for topic, *_ in store.outbox)
    assert published == ["notifications.prescriber.spip-69", "outbound", "outbound"]


def test_rejection_of_a_malformed_key_is_still_told_with_an_unknown_reference() -> None:
    rejected = ReferralRejected(
        source="referral-intake",
        correlation_id=uuid.uuid4(),
        subject="ab",
        data=Rejection(
            reason=RejectionReason.NOT_JSON,
            message="the value is not JSON",
            original_sha256="0" * 64,
            original_topic="referrals.intake",
            original_partition=0,
            original_offset=1,
            prescriber_id=PRESCRIBER,
        ),
    )
    (told,) = notifications_planner().plan(rejected, NOW).notifications
    assert told.referral_id == "unknown"
    assert "format illisible" in told.email_text
    assert "- message entier : format illisible" in told.email_text


@pytest.mark.parametrize("reason", list(RejectionReason))
def test_every_rejection_reads_in_french_without_the_technical_message(
    reason: RejectionReason,
) -> None:
    technical = "data.person.birth_date: Input should be a valid date [type=date_type]"
    rejected = ReferralRejected(
        source="referral-intake",
        correlation_id=uuid.uuid4(),
        subject="ref-rejected-0001",
        data=Rejection(
            reason=reason,
            message=technical,
            field_path="data.person.birth_date",
            original_sha256="0" * 64,
            original_topic="referrals.intake",
            original_partition=0,
            original_offset=1,
            prescriber_id=PRESCRIBER,
            errors=[
                RejectionError(
                    reason=reason, message=technical, field_path="data.person.birth_date"
                ),
                RejectionError(
                    reason=RejectionReason.MISSING_FIELD,
                    message="required",
                    field_path="data.frame",
                ),
            ],
        ),
    )
    (told,) = notifications_planner().plan(rejected, NOW).notifications
    for text in (told.email_text, told.body):
        assert technical not in text
        assert str(reason) not in text.replace("data.person.birth_date", "")
        assert "- data.person.birth_date : " in text
        assert "- data.frame : information manquante" in text


class BrokenSender:
    async def send(self, job: DeliveryJob) -> AttemptResult:
        raise KeyError("a bug, not a network failure")


async def test_a_sender_bug_dead_letters_that_delivery_instead_of_stalling_the_worker() -> None:
    store, jobs = FakeStore(), [_job()]
    copy = Delivery(uuid.uuid4(), jobs[0].notification_id, "email", "c@x.invalid", 1)
    deliverer = Deliverer(
        lambda: FakeDeliveryUow(store, jobs, [copy]),
        {"webhook": BrokenSender()},
        BackoffPolicy(3, 1.0, 10.0),
        "dead-letter",
        30.0,
        10,
        lambda: NOW,
    )
    assert await deliverer.deliver_due() == 1
    ((_, result, decision),) = store.rows("attempts")
    assert result.error_class == "internal_KeyError"
    assert decision.dead_reason == "permanent_failure"


def test_channels_that_are_not_configured_are_left_out() -> None:
    bare = Planner(load_recipients(NotificationsSettings()), load_templates(), timedelta(hours=1))
    centre, prescriber = bare.plan(routed(), NOW).notifications
    assert centre.deliveries == ()  # no webhook URL, no SMTP relay: nothing to retry against
    assert [d.channel for d in prescriber.deliveries] == ["kafka"]
    assert bare.plan(routed(), NOW).unknown_recipients == ("centre:ARA-LYON",)


@settings(max_examples=60, deadline=None)
@given(
    services=st.lists(st.sampled_from(list(ServiceCode)), min_size=1, max_size=5, unique=True),
    report=st.sampled_from(
        ["no_show", "module_completed", "path_terminated", "breach_suspected", "attended"]
    ),
    module=st.sampled_from(list(ServiceCode)),
    attempt=st.integers(min_value=1, max_value=5),
)
def test_no_health_or_judicial_label_ever_reaches_an_email(
    services: list[ServiceCode], report: str, module: ServiceCode, attempt: int
) -> None:
    planner = notifications_planner()
    offer = routed(attempt=attempt).model_copy(
        update={"data": routed(attempt=attempt).data.model_copy(update={"services": services})}
    )
    extra: dict[str, Any] = {"module": module} if report == "module_completed" else {}
    if report == "path_terminated":
        extra["termination_reason"] = "excluded"
    if report == "no_show":
        extra["justified"] = False
    notifications = [
        *planner.plan(offer, NOW).notifications,
        *planner.plan(path(report, **extra), NOW).notifications,
    ]
    forbidden = [*SERVICE_LABELS.values(), *REPORT_LABELS.values(), *TERMINATION_LABELS.values()]
    for notification in notifications:
        mail = f"{notification.title}\n{notification.email_text}\n{notification.email_html}"
        assert not [label for label in forbidden if label in mail]


def test_a_recipient_id_kafka_cannot_name_a_topic_after_keeps_its_other_channels(
    tmp_path: Path,
) -> None:
    folder = tmp_path
    (folder / "centre_contacts.json").write_text('{"centres": []}', "utf-8")
    entry = {
        "prescriber_id": "spip 69 (Lyon)",
        "channels": [{"type": "kafka"}, {"type": "email", "address": "spip@x.invalid"}],
    }
    (folder / "prescribers.json").write_text(json.dumps({"prescribers": [entry]}), "utf-8")
    settings = NotificationsSettings(smtp_host="127.0.0.1")
    recipient = load_recipients(settings, folder).find("prescriber", "spip 69 (Lyon)")
    assert recipient is not None
    assert [c.type for c in recipient.channels] == ["email"]
    assert notice_topics(load_recipients(settings, folder)) == []
    assert [t.name for t in notice_topics(load_recipients(settings))] == sorted(
        f"notifications.prescriber.{p['prescriber_id']}"
        for p in json.loads((default_data_dir() / "prescribers.json").read_text("utf-8"))[
            "prescribers"
        ]
    )


def _rejected(reference: str, reason: RejectionReason) -> ReferralRejected:
    return ReferralRejected(
        source="referral-intake",
        correlation_id=uuid.uuid4(),
        subject=reference,
        data=Rejection(
            reason=reason,
            message="technical detail for the integrator",
            field_path="data.frame",
            original_sha256="0" * 64,
            original_topic="referrals.intake",
            original_partition=0,
            original_offset=1,
            prescriber_id=PRESCRIBER,
        ),
    )


def test_a_rejection_is_e_mailed_in_its_prescriber_s_digest_and_told_alone_on_kafka() -> None:
    plan = notifications_planner().plan(_rejected("ref-bad-0001", RejectionReason.NOT_JSON), NOW)
    (told,) = plan.notifications
    assert [d.channel for d in told.deliveries] == ["kafka"]
    (entry,) = plan.digest
    assert (entry.recipient_id, entry.address) == (PRESCRIBER, "spip-69@prescripteurs.demo.invalid")
    assert entry.notification_id == told.notification_id


async def test_a_burst_of_rejections_makes_one_e_mail_listing_each_then_a_new_digest() -> None:
    store, planner = FakeStore(), notifications_planner()

    def uow() -> FakeDeliveryUow:
        return FakeDeliveryUow(store, [], [])

    burst = [_rejected(f"ref-bad-{i:04d}", RejectionReason.MISSING_FIELD) for i in range(5)]
    for event in burst:
        assert await notify(event, uow, "outbound", planner, NOW) is not None
    assert await notify(burst[0], uow, "outbound", planner, NOW) is None  # a redelivery
    ((digest_id, email),) = store.rows("digest_emails")[0].items()
    assert email.subject == "5 envois non enregistrés : corrections nécessaires"
    for i, event in enumerate(burst, 1):
        assert f"{i}. Référence {event.subject} : information manquante" in email.email_text
    assert "technical detail" not in email.email_text + email.email_html
    # Each rejection is still its own notice on the prescriber's topic.
    assert len([t for t, _ in store.outbox if t == "notifications.prescriber.spip-69"]) == 5

    store.tables["open_digests"][0].clear()  # the worker started sending that e-mail
    await notify(_rejected("ref-bad-0099", RejectionReason.NOT_JSON), uow, "outbound", planner, NOW)
    later = store.rows("digest_emails")[0]
    assert len(later) == 2
    alone = next(e for d, e in later.items() if d != digest_id)
    # A digest of one reads as the rejection always did.
    assert alone.subject == "Orientation ref-bad-0099 non enregistrée : correction nécessaire"


def test_offers_and_reminders_link_to_the_offer_page_in_the_portal() -> None:
    settings = NotificationsSettings(
        webhook_url_template="http://hooks.test/{kind}/{id}", smtp_host="smtp.test"
    )
    planner = Planner(
        load_recipients(settings),
        load_templates(),
        timedelta(hours=24),
        portal_url="https://portail.aiguillage.example/",
    )
    now = datetime.now(UTC)
    plan = planner.plan(routed(answer_by=now + timedelta(days=3)), now)
    [offer] = [n for n in plan.notifications if n.topic == "referral_offered"]
    link = f"https://portail.aiguillage.example/centre/offres/{REF}"
    assert offer.facts["offer_url"] == link  # in the webhook's facts
    assert link in offer.email_text
    assert link in offer.body
    assert plan.reminder is not None
    reminder = planner.reminder_notification(plan.reminder)
    assert link in reminder.email_text
    # The prescriber's notice has no link to a centre's page.
    assert all(link not in n.email_text for n in plan.notifications if n is not offer)
    # Without a portal, the old words and no link.
    bare = notifications_planner().plan(routed(answer_by=now + timedelta(days=3)), now)
    [plain] = [n for n in bare.notifications if n.topic == "referral_offered"]
    assert "espace sécurisé" in plain.email_text
    assert "/centre/offres/" not in plain.email_text
