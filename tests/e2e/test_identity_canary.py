"""Canary: a made-up identity flows through all three services and leaks nowhere.

The referral is routed and notified (and a second one with the same identity is rejected), with
every service logging at DEBUG, then every log line of every service and every record of every
topic but the prescribers' own intake topic are searched for the name, the phone and the address.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.support.services import SERVICES
from tests.support.waiting import eventually


async def test_identity_appears_in_no_log_line_and_on_no_internal_topic(
    isolated: Isolated,
) -> None:
    token = uuid.uuid4().hex[:10]
    canaries = {
        "last_name": f"Canarylast{token}",
        "first_name": f"Canaryfirst{token}",
        "phone": f"07{int(token, 16) % 10**8:08d}",
        "address": f"12 rue Canary{token}",
    }
    processes = [
        isolated.service(name, **{f"{prefix}LOG_LEVEL": "DEBUG"})
        for name, (_, prefix) in SERVICES.items()
    ]
    for process in processes:
        process.start()
    await wait_started(*processes)

    referral = make_referral(1, last_name=canaries["last_name"])
    identity = referral.data.identity.model_copy(
        update={k: v for k, v in canaries.items() if k != "last_name"}
    )
    referral = referral.model_copy(
        update={"data": referral.data.model_copy(update={"identity": identity})}
    )
    rejected = referral.model_copy(
        update={
            "subject": f"{referral.subject}-bad",
            "event_id": uuid.uuid4(),
            "data": referral.data.model_copy(
                update={
                    "frame": referral.data.frame.model_copy(
                        update={"decision_date": date.today() + timedelta(days=3)}
                    )
                }
            ),
        }
    )
    intake = isolated.topic(topics.INTAKE)
    await isolated.kafka.send_event(intake, referral)
    await isolated.kafka.send_event(intake, rejected)

    await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
        lambda records: len(records) >= 2,
        timeout_s=90,
        what="the referral routed and notified",
    )
    await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.REJECTED)),
        lambda records: len(records) >= 1,
        timeout_s=60,
        what="the second referral rejected",
    )

    intake_records = await isolated.kafka.read_all(intake)
    assert any(canaries["last_name"].encode() in r.value for r in intake_records)  # it was sent

    for topic in topics.ALL_TOPICS:
        if topic is topics.INTAKE:
            continue
        for record in await isolated.kafka.read_all(isolated.topic(topic)):
            raw = record.value + repr(record.headers).encode()
            for field, canary in canaries.items():
                assert canary.encode() not in raw, f"{field} on {topic.name}"
    for process in processes:
        logs = process.logs()
        assert '"level": "debug"' in logs  # the search covers debug lines too
        for field, canary in canaries.items():
            assert canary not in logs, f"{field} in the logs of {process.name}"
