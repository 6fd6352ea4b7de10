"""A burst of refused records makes one digest e-mail to their prescriber, listing each, while each
rejection is still its own notice on the prescriber's topic (300 bad records once made 252 e-mails).

The notifications service runs as a real process on the real Kafka and PostgreSQL, e-mailing the
real SMTP sink of ``aiguillage_demo.peers``.
"""

from __future__ import annotations

import json
import uuid

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_lifecycle import ReferralRejected, Rejection
from aiguillage_schemas.vocabulary import RejectionReason
from tests.conftest import Isolated
from tests.integration.test_notification_delivery import (
    SPIP_MAIL,
    new_ref,
    notifications_env,
    start_notifications,
)
from tests.support.waiting import eventually


def rejected(reference: str, offset: int) -> ReferralRejected:
    return ReferralRejected(
        source="referral-intake",
        correlation_id=uuid.uuid4(),
        subject=reference,
        data=Rejection(
            reason=RejectionReason.UNKNOWN_COMMUNE,
            message="data.residence.commune_insee: no such commune (99999)",
            field_path="data.residence.commune_insee",
            original_sha256="0" * 64,
            original_topic="referrals.intake",
            original_partition=0,
            original_offset=offset,
            prescriber_id="spip-69",
        ),
    )


async def test_a_burst_of_rejections_reaches_the_prescriber_as_one_e_mail_listing_each(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    # The window is wide enough for the burst on a loaded machine; the e-mail goes when it ends.
    env = notifications_env(hooks, smtp, digest_window_s="8")
    await start_notifications(isolated, env)
    burst = [rejected(new_ref(isolated, f"bad{i}"), i) for i in range(20)]
    for event in burst:
        await isolated.kafka.send_event(isolated.topic(topics.REJECTED), event)

    references = [event.subject for event in burst]
    [mail] = await eventually(
        lambda: smtp.to(SPIP_MAIL),
        lambda mails: any(all(ref in m.text() for ref in references) for m in mails),
        timeout_s=90,
        what="one e-mail listing the 20 rejections",
    )
    assert mail.subject == "20 envois non enregistrés : corrections nécessaires"
    assert "commune inconnue" in mail.text()
    assert "no such commune" not in mail.text() + mail.html()  # the technical text stays out

    own_topic = isolated.topic(topics.notice_topic("prescriber", "spip-69"))
    notices = await eventually(
        lambda: isolated.kafka.read_all(own_topic),
        lambda records: (
            {json.loads(r.value)["data"]["reference"] for r in records} >= set(references)
        ),
        timeout_s=60,
        what="each rejection on the prescriber's own topic",
    )
    assert len(notices) == len(references)
    schema = isolated.schema("notifications")
    digests = await isolated.db.fetch(
        f"SELECT g.notification_id, d.state, count(i.*) AS items FROM {schema}.digests g"
        f" JOIN {schema}.deliveries d USING (delivery_id)"
        f" JOIN {schema}.digest_items i ON i.digest_id = g.notification_id"
        " GROUP BY g.notification_id, d.state"
    )
    assert [(row["state"], row["items"]) for row in digests] == [("delivered", 20)]
