"""Canary: a referral carrying a unique made-up name goes through all three services; the name
appears in no log line of notifications, no e-mail and no webhook call it makes."""

from __future__ import annotations

import uuid

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.integration.test_notification_delivery import (
    SPIP_MAIL,
    deliveries,
    notifications_env,
)
from tests.support.waiting import eventually


async def test_a_unique_name_never_reaches_notification_logs_emails_or_webhooks(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    canary = "Zqcanary" + uuid.uuid4().hex[:10]
    await isolated.start_all("referral-intake", "routing")
    notifications = isolated.service("notifications", **notifications_env(hooks, smtp))
    notifications.start()
    await wait_started(notifications)
    referral = make_referral(1, referral_id=f"ref-canary{isolated.suffix}", last_name=canary)
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)

    # received (prescriber), offered (centre), routed (prescriber), each on two channels
    rows = await eventually(
        lambda: deliveries(isolated, referral.subject),
        lambda rows: len(rows) == 6 and all(r["state"] == "delivered" for r in rows),
        timeout_s=90,
        what="every notification of the canary referral delivered",
    )
    assert {r["topic"] for r in rows} == {
        "referral_received",
        "referral_offered",
        "referral_routed",
    }

    logs = notifications.logs()
    # Decoded parts as well as raw bytes: a base64 body would hide the name from a raw search.
    mails = [
        "\n".join((mail.raw.decode("utf-8", "replace"), mail.subject, mail.text(), mail.html()))
        for mail in smtp.received
    ]
    calls = [call.body.decode("utf-8") for call in hooks.calls]
    # Looking in the right places: the reference is in each of them.
    assert referral.subject in logs
    assert len(mails) == 3  # received and routed to the prescriber, offered to the centre
    assert all(referral.subject in mail for mail in mails)
    assert len(calls) == 1
    assert referral.subject in calls[0]
    assert len(smtp.to(SPIP_MAIL)) == 2
    for text in (logs, *mails, *calls):
        assert canary.lower() not in text.lower()
