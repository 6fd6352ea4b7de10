"""The centre holding an offer receives the person's identity over its signed webhook, and
nobody else gets it: not the e-mail copy, not a log line, not an internal topic, not another centre,
not an unsigned caller, and nobody once the prescriber cancelled.

The three services run as real processes on the real Kafka and PostgreSQL; the centre's webhook
receiver and the SMTP sink are the real local peers of ``aiguillage_demo.peers``.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx

from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, sign_request
from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.integration.test_notification_delivery import (
    deliveries,
    notifications_env,
    start_notifications,
)
from tests.support.services import ServiceProcess
from tests.support.waiting import eventually

SERVICE_SECRET = "identity-api-secret-for-tests"
PATH = "/internal/v1/identity-releases"


def bound_port(intake: ServiceProcess) -> int | None:
    """The port intake's identity API chose (port 0 in tests), from its own log line."""
    for line in intake.logs().splitlines():
        if '"identity_api.listening"' in line:
            return int(json.loads(line)["port"])
    return None


async def start_with_identity_api(
    isolated: Isolated, intake_env: dict[str, str] | None = None, **routing_env: str
) -> tuple[ServiceProcess, ServiceProcess, int]:
    """Intake (its identity API on an OS-chosen port) and routing, started; and that port."""
    intake = isolated.service(
        "referral-intake",
        **(intake_env or {}),
        AIGUILLAGE_INTAKE_IDENTITY_API_PORT="0",
        AIGUILLAGE_INTAKE_IDENTITY_API_SECRET=SERVICE_SECRET,
    )
    routing = isolated.service("routing", **routing_env)
    intake.start()
    routing.start()
    await wait_started(intake, routing)
    port = await eventually(
        lambda: bound_port(intake), lambda p: p is not None, 30, what="identity API port"
    )
    assert port is not None
    return intake, routing, port


async def start_notifications_asking(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink, port: int, **env: str
) -> ServiceProcess:
    """Notifications on the test peers, asking intake's identity API on ``port`` for offers."""
    return await start_notifications(
        isolated,
        notifications_env(
            hooks,
            smtp,
            intake_identity_url=f"http://127.0.0.1:{port}{PATH}",
            identity_api_secret=SERVICE_SECRET,
            **env,
        ),
    )


async def ask(
    url: str, referral_id: str, centre_id: str, secret: str | None = SERVICE_SECRET
) -> httpx.Response:
    body = json.dumps({"referral_id": referral_id, "centre_id": centre_id}).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SERVICE_SIGNATURE_HEADER] = sign_request(secret.encode(), int(time.time()), body)
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=body, headers=headers, timeout=10)


async def test_the_holding_centre_alone_receives_the_identity_over_its_webhook(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    token = uuid.uuid4().hex[:10]
    canaries = {
        "last_name": f"Releaselast{token}",
        "first_name": f"Releasefirst{token}",
        "phone": f"06{int(token, 16) % 10**8:08d}",
    }
    intake, routing, port = await start_with_identity_api(
        isolated,
        {"AIGUILLAGE_INTAKE_LOG_LEVEL": "DEBUG"},
        AIGUILLAGE_ROUTING_LOG_LEVEL="DEBUG",
    )
    url = f"http://127.0.0.1:{port}{PATH}"
    notifications = await start_notifications_asking(isolated, hooks, smtp, port, log_level="DEBUG")

    referral = make_referral(1, referral_id=f"ref-release{isolated.suffix}")
    identity = referral.data.identity.model_copy(update=canaries)
    referral = referral.model_copy(
        update={"data": referral.data.model_copy(update={"identity": identity})}
    )
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)

    rows = await eventually(
        lambda: deliveries(isolated, referral.subject),
        lambda rows: len(rows) == 6 and all(r["state"] == "delivered" for r in rows),
        timeout_s=120,
        what="every notification of the referral delivered",
    )
    offer = next(r for r in rows if r["topic"] == "referral_offered" and r["channel"] == "webhook")
    centre_id = offer["recipient_id"]

    # The centre's webhook: the offer, signed, with the person as the prescriber sent it.
    [call] = hooks.accepted()
    assert call.signature_ok
    document = call.json()
    assert document["topic"] == "referral_offered"
    assert document["recipient"] == {"kind": "centre", "id": centre_id}
    assert document["person"]["last_name"] == canaries["last_name"]
    assert document["person"]["first_name"] == canaries["first_name"]
    assert document["person"]["phone"] == canaries["phone"]
    assert document["person"]["birth_date"] == identity.birth_date.isoformat()
    schema = isolated.schema("notifications")
    recorded = await isolated.db.fetch(
        f"SELECT identity_release FROM {schema}.delivery_attempts WHERE delivery_id = $1",
        offer["delivery_id"],
    )
    # Intake may be a moment behind routing (409, offer not known yet): such tries are held,
    # never sent; the one webhook that went out is the one that was granted.
    answers = [r["identity_release"] for r in recorded]
    assert answers[-1] == "granted"
    assert all(answer == "http_409" for answer in answers[:-1]), answers

    # Direct requests: the holder yes; another centre, no signature, a wrong secret: no.
    holder = await ask(url, referral.subject, centre_id)
    assert holder.status_code == 200
    assert holder.json()["person"]["last_name"] == canaries["last_name"]
    assert (await ask(url, referral.subject, "NA-BORDEAUX-X")).status_code == 403
    assert (await ask(url, referral.subject, centre_id, secret=None)).status_code == 401
    assert (await ask(url, referral.subject, centre_id, secret="not-the-secret")).status_code == 401
    assert (await ask(url, "ref-never-submitted", centre_id)).status_code == 404

    # The prescriber cancels: nobody gets the identity any more, the former holder included.
    await isolated.cancel(referral)
    assert (await ask(url, referral.subject, centre_id)).status_code == 410

    # Every answer audited, with ids and outcomes only (401s are not: nothing in them is trusted).
    audit = await isolated.db.fetch(
        f"SELECT centre_id, outcome FROM {isolated.schema('referral-intake')}.identity_releases"
        " WHERE referral_id = $1 ORDER BY id",
        referral.subject,
    )
    outcomes = [(r["centre_id"], r["outcome"]) for r in audit]
    # The webhook's tries: as many 409s as intake was behind routing (held, above), then granted.
    tries = len(answers)
    assert outcomes[: tries - 1] == [(centre_id, "not_yet_known")] * (tries - 1)
    assert outcomes[tries - 1] == (centre_id, "granted")
    assert outcomes[-3:] == [
        (centre_id, "granted"),
        ("NA-BORDEAUX-X", "not_holder"),
        (centre_id, "gone"),
    ]

    # The e-mail copy of the offer, every log line and every internal topic: no identity.
    await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
        lambda records: any(b"referral_withdrawn" in r.value for r in records),
        timeout_s=60,
        what="the centre told of the withdrawal",
    )
    mails = [
        "\n".join((m.raw.decode("utf-8", "replace"), m.subject, m.text(), m.html()))
        for m in smtp.received
    ]
    assert any(referral.subject in mail for mail in mails)
    internal = [t for t in topics.ALL_TOPICS if t is not topics.INTAKE]
    assert topics.INTAKE_DEAD_LETTER in internal
    for topic in internal:
        for record in await isolated.kafka.read_all(isolated.topic(topic)):
            raw = record.value + repr(record.headers).encode()
            for field, canary in canaries.items():
                assert canary.encode() not in raw, f"{field} on {topic.name}"
    for process in (intake, routing, notifications):
        logs = process.logs()
        assert '"level": "debug"' in logs
        assert referral.subject in logs
        for field, canary in canaries.items():
            assert canary not in logs, f"{field} in the logs of {process.name}"
    for mail in mails:
        for field, canary in canaries.items():
            assert canary not in mail, f"{field} in an e-mail"
    assert '"identity_release.answered"' in intake.logs()
