"""Each prescriber reads its own notices on a topic of its own, which a broker ACL can grant to it
alone: one prescriber's consumer never sees another's notices (the shared notifications.outbound is
for operators).

The notifications service runs as a real process on the real Kafka and PostgreSQL.
"""

from __future__ import annotations

import json

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_schemas import topics
from aiguillage_schemas.events.routing_decisions import ReferralRouted
from aiguillage_schemas.vocabulary import PrescriberKind
from tests.conftest import Isolated
from tests.integration.test_notification_delivery import (
    BORDEAUX,
    new_ref,
    notifications_env,
    routed,
    start_notifications,
)
from tests.support.kafka_io import Received
from tests.support.waiting import eventually


def referral_from(referral_id: str, prescriber_id: str) -> ReferralRouted:
    event = routed(referral_id)
    data = event.data.model_copy(
        update={"prescriber_id": prescriber_id, "prescriber_kind": PrescriberKind.PARQUET}
    )
    return event.model_copy(update={"data": data})


def notices(records: list[Received]) -> list[dict[str, object]]:
    return [json.loads(record.value)["data"] for record in records]


async def test_each_prescriber_reads_its_own_notices_and_none_of_another_s(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    await start_notifications(isolated, notifications_env(hooks, smtp))
    lyon_ref, lille_ref = new_ref(isolated, "spip"), new_ref(isolated, "lille")
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), routed(lyon_ref))
    lille = referral_from(lille_ref, "parquet-tj-lille")
    lille = lille.model_copy(update={"data": lille.data.model_copy(update={"site": BORDEAUX})})
    await isolated.kafka.send_event(isolated.topic(topics.ROUTED), lille)

    spip_topic = isolated.topic(topics.notice_topic("prescriber", "spip-69"))
    lille_topic = isolated.topic(topics.notice_topic("prescriber", "parquet-tj-lille"))
    spip = await eventually(
        lambda: isolated.kafka.read_all(spip_topic),
        lambda records: any(n["reference"] == lyon_ref for n in notices(records)),
        timeout_s=60,
        what="spip-69's notice on its own topic",
    )
    theirs = await eventually(
        lambda: isolated.kafka.read_all(lille_topic),
        lambda records: any(n["reference"] == lille_ref for n in notices(records)),
        timeout_s=60,
        what="parquet-tj-lille's notice on its own topic",
    )
    assert {n["recipient_id"] for n in notices(spip)} == {"spip-69"}
    assert {n["recipient_id"] for n in notices(theirs)} == {"parquet-tj-lille"}
    assert all(n["reference"] != lille_ref for n in notices(spip))
    assert all(n["reference"] != lyon_ref for n in notices(theirs))
    # The centres' notices (offers) never reach a prescriber's topic.
    assert all(n["recipient_kind"] == "prescriber" for n in notices(spip) + notices(theirs))

    # The operators' stream still carries everything, each notice once there.
    outbound = notices(
        await eventually(
            lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
            lambda records: (
                {("spip-69", lyon_ref), ("parquet-tj-lille", lille_ref)}
                <= {(n["recipient_id"], n["reference"]) for n in notices(records)}
            ),
            timeout_s=60,
            what="both notices on the operators' stream",
        )
    )
    ids = [n["notification_id"] for n in outbound]
    assert len(ids) == len(set(ids))
