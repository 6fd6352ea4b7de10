"""Notifications delivered to real peers: a webhook receiver and an SMTP server run by the tests.

The notifications service runs as a real process on the real Kafka and PostgreSQL; the routing
decisions it relays are published on its input topic as routing would publish them.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiguillage_demo.peers import ReceivedMail, SmtpSink, WebhookReceiver
from aiguillage_schemas import topics
from aiguillage_schemas.events.routing_decisions import (
    ReferralPlaced,
    ReferralPlacedData,
    ReferralRouted,
    ReferralRoutedData,
    ReferralWithdrawn,
    ReferralWithdrawnData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode
from tests.conftest import WEBHOOK_SECRET as SECRET
from tests.conftest import Isolated, wait_started
from tests.support.services import ServiceProcess
from tests.support.waiting import eventually

LYON = SiteRef(
    centre_id="ARA-LYON",
    centre_name="CPCA Rhône-Alpes",
    site_id="ARA-LYON-69",
    site_commune_insee="69381",
    site_departement="69",
    address_confidential=False,
)
BORDEAUX = SiteRef(
    centre_id="NA-BORDEAUX",
    centre_name="CPCA Nouvelle-Aquitaine (Bordeaux)",
    site_id="NA-BORDEAUX-33",
    site_commune_insee="33063",
    site_departement="33",
    address_confidential=False,
)
LYON_HOOK = "/hooks/centre/ARA-LYON"
BORDEAUX_HOOK = "/hooks/centre/NA-BORDEAUX"
LYON_MAIL = "coordination@ara-lyon.cpca.demo.invalid"
BORDEAUX_MAIL = "coordination@na-bordeaux.cpca.demo.invalid"
SPIP_MAIL = "spip-69@prescripteurs.demo.invalid"


def notifications_env(
    hooks: WebhookReceiver, smtp: SmtpSink, base_delay_s: float = 0.2, **extra: str
) -> dict[str, str]:
    prefix = "AIGUILLAGE_NOTIFICATIONS_"
    env = {
        f"{prefix}WEBHOOK_URL_TEMPLATE": hooks.base_url + "/hooks/{kind}/{id}",
        f"{prefix}WEBHOOK_SECRET": SECRET,
        f"{prefix}WEBHOOK_TIMEOUT_S": "3",
        f"{prefix}SMTP_HOST": "127.0.0.1",
        f"{prefix}SMTP_PORT": str(smtp.port),
        f"{prefix}SMTP_TIMEOUT_S": "5",
        f"{prefix}DELIVERY_BASE_DELAY_S": str(base_delay_s),
        f"{prefix}DELIVERY_MAX_DELAY_S": str(base_delay_s * 4),
        f"{prefix}DELIVERY_MAX_ATTEMPTS": "5",
        f"{prefix}DELIVERY_POLL_INTERVAL_S": "0.2",
    }
    env.update({f"{prefix}{key.upper()}": value for key, value in extra.items()})
    return env


async def start_notifications(isolated: Isolated, env: dict[str, str]) -> ServiceProcess:
    process = isolated.service("notifications", **env)
    process.start()
    await wait_started(process)
    return process


def routed(
    referral_id: str, site: SiteRef = LYON, answer_by: datetime | None = None
) -> ReferralRouted:
    return ReferralRouted(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject=referral_id,
        data=ReferralRoutedData(
            decision_id=uuid.uuid4(),
            prescriber_id="spip-69",
            prescriber_kind=PrescriberKind.SPIP,
            site=site,
            services=[ServiceCode.PSYCHOLOGICAL_FOLLOWUP],
            distance_km=2.5,
            explanation="closest site offering the services",
            answer_by=answer_by,
        ),
    )


def new_ref(isolated: Isolated, label: str) -> str:
    return f"ref-{label}{isolated.suffix}-{uuid.uuid4().hex[:6]}"


async def deliveries(isolated: Isolated, referral_id: str) -> list[dict[str, Any]]:
    schema = isolated.schema("notifications")
    rows = await isolated.db.fetch(
        f"SELECT n.recipient_id, n.topic, d.delivery_id, d.channel, d.state, d.attempts,"
        f" d.fallback_for FROM {schema}.deliveries d JOIN {schema}.notifications n"
        f" USING (notification_id) WHERE n.referral_id = $1",
        referral_id,
    )
    return [dict(row) for row in rows]


async def attempts(isolated: Isolated, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
    schema = isolated.schema("notifications")
    rows = await isolated.db.fetch(
        f"SELECT attempt, outcome, http_status, smtp_code, error_class, latency_ms"
        f" FROM {schema}.delivery_attempts WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
    return [dict(row) for row in rows]


def one(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [row for row in rows if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


async def settled(isolated: Isolated, referral_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries of the referral are delivered or dead."""
    return await eventually(
        lambda: deliveries(isolated, referral_id),
        lambda rows: sum(r["state"] != "pending" for r in rows) >= count,
        timeout_s=60,
        what=f"{count} settled deliveries for {referral_id}",
    )


async def test_webhook_failing_twice_with_500_is_delivered_once_after_three_logged_attempts(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    hooks.scripts[LYON_HOOK] = [500, 500]
    await start_notifications(isolated, notifications_env(hooks, smtp))
    referral_id = new_ref(isolated, "hook500")
    event = routed(referral_id)
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), event)

    # Centre: webhook + e-mail copy; prescriber: kafka + e-mail copy.
    rows = await settled(isolated, referral_id, 4)
    webhook = one(rows, channel="webhook")
    assert webhook["state"] == "delivered"
    assert webhook["attempts"] == 3
    logged = await attempts(isolated, webhook["delivery_id"])
    assert [(a["outcome"], a["http_status"]) for a in logged] == [
        ("transient", 500),
        ("transient", 500),
        ("delivered", 200),
    ]
    calls = [c for c in hooks.calls if c.path == LYON_HOOK]
    assert len(calls) == 3
    assert {c.idempotency_key for c in calls} == {str(webhook["delivery_id"])}
    assert len(hooks.accepted(LYON_HOOK)) == 1
    body = calls[-1].json()
    assert body["reference"] == referral_id
    assert body["correlation_id"] == str(event.correlation_id)
    assert calls[-1].headers["x-correlation-id"] == str(event.correlation_id)
    assert all(c.signature_ok for c in calls)

    # The e-mail copies reached the coordinator and the prescriber, in French, text and HTML.
    (centre_mail,) = smtp.to(LYON_MAIL)
    assert referral_id in centre_mail.subject
    assert "proposée à votre site ARA-LYON-69" in centre_mail.text()
    assert str(event.correlation_id) in centre_mail.text()
    assert "<p>" in centre_mail.html()
    assert len(smtp.to(SPIP_MAIL)) == 1

    # The delivery log shows the three webhook attempts for an operator.
    log = await delivery_log(isolated, referral_id)
    webhook_lines = [line for line in log if " webhook " in line]
    assert len(webhook_lines) == 3
    assert [" 500 " in line for line in webhook_lines] == [True, True, False]
    assert " 200 " in webhook_lines[-1]


async def test_receiver_accepts_the_right_signature_and_rejects_a_wrong_secret(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    wrong = '{"centre:NA-BORDEAUX": "not-the-receivers-secret"}'
    await start_notifications(isolated, notifications_env(hooks, smtp, webhook_secrets=wrong))
    good, bad = new_ref(isolated, "sigok"), new_ref(isolated, "sigko")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(good, LYON))
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(bad, BORDEAUX))

    one(await settled(isolated, good, 4), channel="webhook", state="delivered")
    rows = await settled(isolated, bad, 4)
    rejected = one(rows, channel="webhook", fallback_for=None)
    assert rejected["state"] == "dead"
    assert rejected["attempts"] == 1  # 401 is permanent: never retried
    # On a loaded machine a send may time out and be repeated: same delivery, same key.
    lyon_calls = [c for c in hooks.calls if c.path == LYON_HOOK]
    assert lyon_calls
    assert all(c.signature_ok and c.status == 200 for c in lyon_calls)
    assert len({c.idempotency_key for c in lyon_calls}) == 1
    bordeaux_calls = [c for c in hooks.calls if c.path == BORDEAUX_HOOK]
    assert bordeaux_calls
    assert all(not c.signature_ok for c in bordeaux_calls)
    assert all(c.status == 401 for c in bordeaux_calls)
    assert len({c.idempotency_key for c in bordeaux_calls}) == 1


async def test_permanently_failing_webhook_is_dead_lettered_and_falls_back_to_email(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    hooks.always[LYON_HOOK] = 404
    service = await start_notifications(isolated, notifications_env(hooks, smtp))
    referral_id = new_ref(isolated, "hook404")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))

    rows = await settled(isolated, referral_id, 5)  # 4 planned + the fallback
    dead = one(rows, channel="webhook")
    assert dead["state"] == "dead"
    fallback = one(rows, fallback_for=dead["delivery_id"])
    assert fallback["channel"] == "email"
    assert fallback["state"] == "delivered"

    mails = smtp.to(LYON_MAIL)
    assert len(mails) == 2  # the copy, then the fallback that says the system was unreachable
    (urgent,) = [m for m in mails if m.subject.startswith("[Action requise]")]
    assert "n'a pas pu être joint" in urgent.text()
    assert referral_id in urgent.text()

    dead_letters = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_DEAD_LETTER)),
        lambda records: any(r.key == referral_id for r in records),
        timeout_s=30,
        what="the dead-lettered delivery",
    )
    (letter,) = [r.json() for r in dead_letters if r.key == referral_id]
    assert letter["event_type"] == "notification.delivery_failed"
    assert letter["data"]["reason"] == "permanent_failure"
    assert letter["data"]["error_class"] == "http_404"
    assert letter["data"]["http_status"] == 404
    assert letter["data"]["fallback_delivery_id"] == str(fallback["delivery_id"])
    (line,) = [
        line
        for line in service.logs().splitlines()
        if '"delivery.dead_lettered"' in line and referral_id in line
    ]
    assert '"level": "error"' in line
    assert '"fallback_channel": "email"' in line


async def test_webhook_failing_until_retries_are_exhausted_is_dead_lettered_with_that_reason(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    hooks.always[LYON_HOOK] = 503
    env = notifications_env(hooks, smtp, delivery_max_attempts="3")
    await start_notifications(isolated, env)
    referral_id = new_ref(isolated, "hook503")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))

    rows = await settled(isolated, referral_id, 5)
    dead = one(rows, channel="webhook")
    assert dead["state"] == "dead"
    assert dead["attempts"] == 3
    assert len([c for c in hooks.calls if c.path == LYON_HOOK]) == 3
    assert one(rows, fallback_for=dead["delivery_id"])["state"] == "delivered"
    dead_letters = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_DEAD_LETTER)),
        lambda records: any(r.key == referral_id for r in records),
        timeout_s=30,
        what="the dead-lettered delivery",
    )
    (letter,) = [r.json()["data"] for r in dead_letters if r.key == referral_id]
    assert (letter["reason"], letter["error_class"], letter["attempts"]) == (
        "retries_exhausted",
        "http_503",
        3,
    )


async def test_a_cancellation_never_overtakes_the_offer_being_retried(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    hooks.scripts[LYON_HOOK] = [500]  # the offer's first call fails; its retry is ~1 s away
    await start_notifications(isolated, notifications_env(hooks, smtp, base_delay_s=1.0))
    referral_id = new_ref(isolated, "order")
    offer = routed(referral_id)
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), offer)
    await isolated.kafka.send_event(
        isolated.topic(topics.ROUTED),
        ReferralWithdrawn(
            source="routing",
            correlation_id=offer.correlation_id,
            subject=referral_id,
            data=ReferralWithdrawnData(
                prescriber_id="spip-69",
                prescriber_kind=PrescriberKind.SPIP,
                site=LYON,
                reason="cancelled_by_prescriber",
            ),
        ),
    )

    await settled(isolated, referral_id, 6)  # offer: 4 deliveries; cancellation: webhook, e-mail
    calls = [(c.json()["topic"], c.status) for c in hooks.calls if c.path == LYON_HOOK]
    assert calls == [
        ("referral_offered", 500),
        ("referral_offered", 200),
        ("referral_withdrawn", 200),
    ]
    subjects = [m.subject for m in smtp.to(LYON_MAIL)]
    assert len(subjects) == 2
    assert "annulée" in subjects[1]


async def test_smtp_refusing_then_accepting_delivers_the_email_once(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    smtp.refuse_next = 2  # 451 twice: the first two e-mail attempts are refused
    await start_notifications(isolated, notifications_env(hooks, smtp))
    referral_id = new_ref(isolated, "smtp451")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))

    rows = await settled(isolated, referral_id, 4)
    mail_rows = [r for r in rows if r["channel"] == "email"]
    assert {r["state"] for r in mail_rows} == {"delivered"}
    tries = [await attempts(isolated, r["delivery_id"]) for r in mail_rows]
    codes = sorted(a["smtp_code"] for logged in tries for a in logged)
    assert codes == [250, 250, 451, 451]
    assert smtp.refused == 2
    assert len(smtp.to(LYON_MAIL)) == 1
    assert len(smtp.to(SPIP_MAIL)) == 1


async def test_killed_while_a_retry_is_pending_completes_after_restart_without_duplicate(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    hooks.scripts[LYON_HOOK] = [503]
    # A retry some seconds away, so that the kill surely lands while it is pending.
    env = notifications_env(hooks, smtp, base_delay_s=4.0)
    service = await start_notifications(isolated, env)
    referral_id = new_ref(isolated, "killretry")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))

    def retry_pending(rows: list[dict[str, Any]]) -> bool:
        webhook = [r for r in rows if r["channel"] == "webhook"]
        mails = [r for r in rows if r["channel"] == "email"]
        return (
            len(webhook) == 1
            and webhook[0]["attempts"] == 1
            and webhook[0]["state"] == "pending"
            and len(mails) == 2
            and all(r["state"] == "delivered" for r in mails)
        )

    await eventually(
        lambda: deliveries(isolated, referral_id),
        retry_pending,
        timeout_s=60,
        what="a webhook retry pending after one failure",
    )
    service.kill()
    assert len(hooks.calls) == 1
    service.start()
    await wait_started(service)

    rows = await settled(isolated, referral_id, 4)
    webhook = one(rows, channel="webhook")
    assert webhook["state"] == "delivered"
    assert [a["http_status"] for a in await attempts(isolated, webhook["delivery_id"])] == [
        503,
        200,
    ]
    assert hooks.accepted_per_key() == {str(webhook["delivery_id"]): 1}
    message_ids = [mail.message_id for mail in smtp.received]
    assert len(message_ids) == 2
    assert len(set(message_ids)) == 2


class AnswerHeldSmtp(SmtpSink):
    """Takes in the message for ``address``, then holds its 250 until ``release`` is set: killed
    in between, the sender has handed the message over without learning it."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    def accept(self, mail: ReceivedMail) -> str | Awaitable[str]:
        answer = super().accept(mail)
        if self.address in mail.rcpt_tos and not self.release.is_set():
            self.holding.set()
            return self._held(answer)
        return answer

    async def _held(self, answer: str | Awaitable[str]) -> str:
        await self.release.wait()
        return answer if isinstance(answer, str) else await answer


async def test_killed_mid_email_resends_that_email_once_at_restart_and_nothing_else(
    isolated: Isolated, hooks: WebhookReceiver
) -> None:
    smtp = AnswerHeldSmtp(LYON_MAIL)
    await smtp.start()
    try:
        # SMTP timeout 60 s: the lease (2 x 60 + 5 s) outlasts the test, so only reclaiming the
        # dead process's attempt at restart can make the interrupted e-mail due in time.
        env = notifications_env(hooks, smtp, smtp_timeout_s="60")
        service = await start_notifications(isolated, env)
        referral_id = new_ref(isolated, "killmail")
        await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(referral_id))
        await asyncio.wait_for(smtp.holding.wait(), 60)
        schema = isolated.schema("notifications")
        in_flight = await isolated.db.fetchval(
            f"SELECT a.delivery_id FROM {schema}.delivery_attempts a"
            f" JOIN {schema}.deliveries d USING (delivery_id)"
            f" WHERE a.outcome = 'started' AND d.target = $1",
            LYON_MAIL,
        )
        assert in_flight is not None  # recorded as started before it was sent
        # The other deliveries go on in other lanes meanwhile: killed while one of them is in
        # flight too, that one would be repeated as well (up to DELIVERY_EMAIL_CONCURRENCY
        # e-mails may be). Only the held e-mail is in flight at the kill.
        await eventually(
            lambda: deliveries(isolated, referral_id),
            lambda rows: (
                len(rows) == 4
                and all(r["state"] == "delivered" for r in rows if r["delivery_id"] != in_flight)
            ),
            timeout_s=60,
            what="every other delivery done while the e-mail is held",
        )

        service.kill()
        smtp.release.set()
        service.start()
        await wait_started(service)
        rows = await eventually(
            lambda: deliveries(isolated, referral_id),
            lambda rows: len(rows) == 4 and all(r["state"] == "delivered" for r in rows),
            timeout_s=60,
            what="every delivery done after the restart, long before the lease would expire",
        )
        assert [a["outcome"] for a in await attempts(isolated, in_flight)] == [
            "interrupted",
            "delivered",
        ]
        assert one(rows, delivery_id=in_flight)["attempts"] == 1
        # The e-mail in flight at the kill arrives twice, with one Message-ID; nothing else twice.
        received = Counter(mail.message_id for mail in smtp.received)
        assert received == {
            f"<{in_flight}@aiguillage.demo.invalid>": 2,
            **{
                f"<{r['delivery_id']}@aiguillage.demo.invalid>": 1
                for r in rows
                if r["channel"] == "email" and r["delivery_id"] != in_flight
            },
        }
        assert hooks.accepted_per_key() == {str(one(rows, channel="webhook")["delivery_id"]): 1}
        assert '"delivery.interrupted"' in service.logs()
    finally:
        smtp.release.set()
        await smtp.stop()


async def test_answer_reminder_fires_once_and_not_after_the_centre_accepted(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    # Remind 1 h before the deadline: a deadline 20 s away, shorter than that, is reminded of
    # half-way through (messages.reminder_time), one 2 h away is due in an hour and is cancelled
    # by the placement that comes first.
    env = notifications_env(hooks, smtp, reminder_before_s="3600")
    await start_notifications(isolated, env)
    now = datetime.now(UTC)
    urgent, placed = new_ref(isolated, "remind"), new_ref(isolated, "placed")
    await isolated.kafka.send_event(
        isolated.topic(topics.ROUTED), routed(urgent, answer_by=now + timedelta(seconds=20))
    )
    offer = routed(placed, answer_by=now + timedelta(hours=2))
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), offer)
    await isolated.kafka.send_event(
        isolated.topic(topics.ROUTED),
        ReferralPlaced(
            source="routing",
            correlation_id=offer.correlation_id,
            subject=placed,
            data=ReferralPlacedData(
                prescriber_id="spip-69", prescriber_kind=PrescriberKind.SPIP, site=LYON
            ),
        ),
    )

    rows = await settled(isolated, urgent, 6)  # offer (2 + 2 channels) + reminder (2 channels)
    reminder_rows = [r for r in rows if r["topic"] == "answer_reminder"]
    assert {(r["channel"], r["state"]) for r in reminder_rows} == {
        ("webhook", "delivered"),
        ("email", "delivered"),
    }
    reminder_calls = [c for c in hooks.calls if c.json()["topic"] == "answer_reminder"]
    assert [c.json()["reference"] for c in reminder_calls] == [urgent]
    (mail,) = [m for m in smtp.to(LYON_MAIL) if m.subject.startswith("Rappel")]
    assert urgent in mail.subject

    schema = isolated.schema("notifications")
    states = await eventually(
        lambda: isolated.db.fetch(
            f"SELECT referral_id, state FROM {schema}.reminders ORDER BY referral_id"
        ),
        lambda rows: {r["referral_id"]: r["state"] for r in rows}.get(placed) == "cancelled",
        timeout_s=60,
        what="the placed referral's reminder cancelled",
    )
    assert {r["referral_id"]: r["state"] for r in states} == {
        urgent: "fired",
        placed: "cancelled",
    }


async def delivery_log(isolated: Isolated, referral_id: str) -> list[str]:
    """The operators' CLI, ``aiguillage-notifications-log``, run as they would."""
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aiguillage-notifications-log"),
        referral_id,
        "--database-url",
        isolated.endpoints.database_url,
        "--schema",
        isolated.schema("notifications"),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0
    return output.decode().splitlines()
