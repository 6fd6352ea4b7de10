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
    deliveries,
    notifications_env,
    one,
    routed,
    settled,
)
from tests.support.waiting import eventually

IDENTITY_ATTEMPTS = (
    "SELECT a.outcome, a.error_class, a.identity_release FROM {schema}.delivery_attempts a"
    " WHERE a.delivery_id = $1 ORDER BY a.id"
)


async def identity_attempts(isolated: Isolated, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
    schema = isolated.schema("notifications")
    rows = await isolated.db.fetch(IDENTITY_ATTEMPTS.format(schema=schema), delivery_id)
    return [dict(row) for row in rows]


async def test_refused_identity_sends_the_offer_without_it_and_an_absent_intake_holds_it_back(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    intake = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_IDENTITY_API_PORT="0",
        AIGUILLAGE_INTAKE_IDENTITY_API_SECRET=SERVICE_SECRET,
    )
    intake.start()
    await wait_started(intake)
    port = bound_port(intake)
    assert port is not None
    notifications = isolated.service(
        "notifications",
        **notifications_env(hooks, smtp),
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
        rows = await settled(isolated, referral_id, 4)
        webhook = one(rows, channel="webhook")
        assert webhook["state"] == "delivered"
        logged = await identity_attempts(isolated, webhook["delivery_id"])
        assert [(a["outcome"], a["identity_release"]) for a in logged] == [("delivered", reason)]
        [call] = [c for c in hooks.accepted(LYON_HOOK) if c.json()["reference"] == referral_id]
        assert call.signature_ok
        assert "person" not in call.json()

    # Intake gone: the offer is held back (transient, retried), never sent without the identity;
    # when its retries run out it falls back to the e-mail channel, which never carries it.
    assert intake.terminate() == 0
    held = f"ref-held{isolated.suffix}"
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(held))
    rows = await eventually(
        lambda: deliveries(isolated, held),
        lambda rows: any(r["channel"] == "webhook" and r["state"] == "dead" for r in rows),
        timeout_s=90,
        what="the held-back webhook delivery to give up",
    )
    webhook = one(rows, channel="webhook", fallback_for=None)
    logged = await identity_attempts(isolated, webhook["delivery_id"])
    assert len(logged) == 5  # DELIVERY_MAX_ATTEMPTS in notifications_env
    assert {(a["outcome"], a["error_class"]) for a in logged} == {
        ("transient", "identity_unavailable")
    }
    assert all(a["identity_release"] for a in logged)  # why, e.g. 'connecterror'
    assert not [c for c in hooks.calls if c.json()["reference"] == held]
    await eventually(
        lambda: deliveries(isolated, held),
        lambda rows: any(r["fallback_for"] is not None and r["state"] == "delivered" for r in rows),
        timeout_s=60,
        what="the e-mail fallback delivered",
    )
    assert any(held in mail.subject for mail in smtp.to(LYON_MAIL))
