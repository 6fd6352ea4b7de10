"""Notifications when intake refuses or cannot answer an identity request, on the real Kafka,
PostgreSQL, webhook receiver and SMTP sink, with intake and notifications as real processes.

Routing decisions are published on ``referrals.routed`` as routing would publish them, so that a
decision can name a referral intake closed, or never saw.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.e2e.test_identity_release import PATH, SERVICE_SECRET, bound_port
from tests.integration.test_notification_delivery import (
    LYON_HOOK,
    LYON_MAIL,
    delivery_log,
    notifications_env,
    one,
    routed,
)
from tests.support.services import free_port
from tests.support.waiting import eventually

IDENTITY_ATTEMPTS = (
    "SELECT a.outcome, a.error_class, a.identity_release FROM {schema}.delivery_attempts a"
    " WHERE a.delivery_id = $1 ORDER BY a.id"
)
CENTRE_OFFER = (
    "SELECT d.delivery_id, d.channel, d.state, d.attempts, d.identity_waits, d.fallback_for,"
    " d.fallback_reason FROM {schema}.deliveries d JOIN {schema}.notifications n"
    " USING (notification_id) WHERE n.referral_id = $1 AND n.topic = 'referral_offered'"
    " AND n.recipient_kind = 'centre'"
)
# Held tries every 0.2-0.5 s, the e-mail fallback with the first one, and a maximum wait the test
# never reaches: the schedule is the production one, only faster.
IDENTITY_WAITS = {
    "AIGUILLAGE_NOTIFICATIONS_IDENTITY_WAIT_BASE_DELAY_S": "0.2",
    "AIGUILLAGE_NOTIFICATIONS_IDENTITY_WAIT_MAX_DELAY_S": "0.5",
    "AIGUILLAGE_NOTIFICATIONS_IDENTITY_WAIT_MAX_S": "600",
    "AIGUILLAGE_NOTIFICATIONS_IDENTITY_FALLBACK_AFTER_S": "0",
}
OLD_ATTEMPT_BUDGET = 5  # DELIVERY_MAX_ATTEMPTS in notifications_env


async def identity_attempts(isolated: Isolated, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
    schema = isolated.schema("notifications")
    rows = await isolated.db.fetch(IDENTITY_ATTEMPTS.format(schema=schema), delivery_id)
    return [dict(row) for row in rows]


async def centre_offer(isolated: Isolated, referral_id: str) -> list[dict[str, Any]]:
    schema = isolated.schema("notifications")
    rows = await isolated.db.fetch(CENTRE_OFFER.format(schema=schema), referral_id)
    return [dict(row) for row in rows]


def primary_webhook(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [r for r in rows if r["channel"] == "webhook" and r["fallback_for"] is None]
    return found[0] if found else None


async def test_refused_identity_sends_the_offer_without_it_and_an_absent_intake_holds_it_back(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    port = free_port()
    intake = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_IDENTITY_API_PORT=str(port),
        AIGUILLAGE_INTAKE_IDENTITY_API_SECRET=SERVICE_SECRET,
    )
    intake.start()
    await wait_started(intake)
    await eventually(lambda: bound_port(intake), lambda p: p == port, 30, what="identity API port")
    notifications = isolated.service(
        "notifications",
        **notifications_env(hooks, smtp),
        **IDENTITY_WAITS,
        AIGUILLAGE_NOTIFICATIONS_INTAKE_IDENTITY_URL=f"http://127.0.0.1:{port}{PATH}",
        AIGUILLAGE_NOTIFICATIONS_IDENTITY_API_SECRET=SERVICE_SECRET,
    )
    notifications.start()
    await wait_started(notifications)

    # A referral the prescriber cancelled, then (late) offered: 410, the offer goes without it.
    referral = make_referral(1, referral_id=f"ref-gone{isolated.suffix}")
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    await isolated.cancel(referral)
    never_seen = f"ref-unseen{isolated.suffix}"
    for referral_id in (referral.subject, never_seen):
        await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))

    for referral_id, reason in ((referral.subject, "gone"), (never_seen, "unknown")):
        # Wait for the state asserted (the webhook settled), not for a number of rows: other
        # deliveries of the offer settle in any order, and more may be added (a fallback).
        rows = await eventually(
            lambda rid=referral_id: centre_offer(isolated, rid),
            lambda rows: (w := primary_webhook(rows)) is not None and w["state"] != "pending",
            timeout_s=90,
            what=f"the offer's webhook for {referral_id} settled",
        )
        webhook = primary_webhook(rows)
        assert webhook is not None
        assert webhook["state"] == "delivered"
        logged = await identity_attempts(isolated, webhook["delivery_id"])
        assert (logged[-1]["outcome"], logged[-1]["identity_release"]) == ("delivered", reason)
        # Intake slow to answer on a loaded machine holds the offer back; it is never sent
        # without an answer, so any earlier try was held and posted nothing.
        assert {(a["outcome"], a["error_class"]) for a in logged[:-1]} <= {
            ("held", "identity_unavailable")
        }
        [call] = [c for c in hooks.accepted(LYON_HOOK) if c.json()["reference"] == referral_id]
        assert call.signature_ok
        assert "person" not in call.json()

    # Intake gone, longer than the old attempt budget: the offer is held back, never sent
    # without the identity and never given up on; the centre learns of it by e-mail meanwhile.
    held = make_referral(2, referral_id=f"ref-held{isolated.suffix}")
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), held)
    await eventually(
        lambda: isolated.count(
            f"SELECT count(*) FROM {isolated.schema('referral-intake')}.referrals"
            " WHERE referral_id = $1",
            held.subject,
        ),
        lambda n: n == 1,
        timeout_s=60,
        what="intake to record the referral",
    )
    assert intake.terminate() == 0
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(held.subject))

    def waiting_with_fallback_sent(rows: list[dict[str, Any]]) -> bool:
        webhook = primary_webhook(rows)
        return (
            webhook is not None
            and webhook["identity_waits"] > OLD_ATTEMPT_BUDGET + 3
            and any(r["fallback_for"] is not None and r["state"] == "delivered" for r in rows)
        )

    rows = await eventually(
        lambda: centre_offer(isolated, held.subject),
        waiting_with_fallback_sent,
        timeout_s=90,
        what="the webhook held past the old attempt budget and the e-mail fallback sent",
    )
    webhook = primary_webhook(rows)
    assert webhook is not None
    assert (webhook["state"], webhook["attempts"]) == ("pending", 0)
    fallback = one(rows, fallback_for=webhook["delivery_id"])
    assert (fallback["channel"], fallback["fallback_reason"]) == ("email", "identity_wait")
    assert one(rows, channel="email", fallback_for=None)["state"] == "delivered"  # the copy
    logged = await identity_attempts(isolated, webhook["delivery_id"])
    assert {(a["outcome"], a["error_class"]) for a in logged} == {("held", "identity_unavailable")}
    assert all(a["identity_release"] for a in logged)  # why, e.g. 'connecterror'
    assert not [c for c in hooks.calls if c.json()["reference"] == held.subject]
    mails = [m for m in smtp.to(LYON_MAIL) if held.subject in m.subject]
    assert sorted(m.subject.startswith("[Identité à suivre]") for m in mails) == [False, True]
    assert '"delivery.identity_held"' in notifications.logs()
    # What an operator sees: the held tries, and the webhook still waiting, held since when.
    log = await delivery_log(isolated, held.subject)
    webhook_lines = [line for line in log if " webhook " in line and "referral_offered" in line]
    assert sum(" held " in line and "identity_unavail" in line for line in webhook_lines) >= 5
    (waiting,) = [line for line in webhook_lines if " next " in line]
    assert " held x" in waiting
    assert waiting.rstrip().endswith("pending")

    # Intake back (same port): the held offer goes with the person, once.
    intake.start()
    await wait_started(intake)
    rows = await eventually(
        lambda: centre_offer(isolated, held.subject),
        lambda rows: (w := primary_webhook(rows)) is not None and w["state"] != "pending",
        timeout_s=90,
        what="the held webhook settled once intake answers",
    )
    webhook = primary_webhook(rows)
    assert webhook is not None
    assert (webhook["state"], webhook["attempts"]) == ("delivered", 1)
    logged = await identity_attempts(isolated, webhook["delivery_id"])
    assert (logged[-1]["outcome"], logged[-1]["identity_release"]) == ("delivered", "granted")
    assert {a["outcome"] for a in logged[:-1]} == {"held"}
    [call] = [c for c in hooks.accepted(LYON_HOOK) if c.json()["reference"] == held.subject]
    assert call.signature_ok
    assert call.json()["person"]["last_name"] == held.data.identity.last_name
    # Asked for with every held try, the fallback exists once and was sent once.
    assert len([r for r in rows if r["fallback_for"] is not None]) == 1
    assert len([m for m in smtp.to(LYON_MAIL) if held.subject in m.subject]) == 2
