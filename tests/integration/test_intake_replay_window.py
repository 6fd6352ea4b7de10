"""Intake's replay window on the real broker and database: measured from when a record reached the
broker (``referrals.intake`` stamps LogAppendTime), so a backlog published while intake was down
is admitted once it comes back, while a record signed far from its arrival is still refused and an
operators' replay counts from the original arrival only when the operations secret vouches for it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from aiguillage_common.provisioning import provision, set_topic_configs
from aiguillage_common.replay_headers import REPLAY_SIGNATURE_HEADER, replay_headers
from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import sign_as
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from aiguillage_schemas.signing import SIGNATURE_HEADER
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually

# Small, so the test waits seconds, not minutes; wide enough that signing a record and the broker
# appending it (both a moment apart in this test) stay inside it on a loaded machine.
WINDOW_S = 4
BACKLOG = 12
OPERATIONS_SECRET = "operations-secret-for-tests"
TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = 1  # aiokafka's ConsumerRecord.timestamp_type (0: CreateTime)


@dataclass(frozen=True)
class Arrival:
    key: str | None
    timestamp_ms: int
    timestamp_type: int


async def _arrivals(isolated: Isolated, topic: str) -> list[Arrival]:
    """Every record on ``topic`` with the time the broker gave it, read without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=isolated.endpoints.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"test-arrivals-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await isolated.kafka.partitions(topic)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        found: list[Arrival] = []
        deadline = time.monotonic() + 30
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [
                    Arrival(r.key.decode() if r.key else None, r.timestamp, r.timestamp_type)
                    for r in records
                ]
        return found
    finally:
        await consumer.stop()


async def _topic_configs(bootstrap: str, topic: str, *names: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        wanted = ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(names))
        (response,) = await admin.describe_configs([wanted])
    finally:
        await admin.close()
    (resource,) = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def _send_signed(
    isolated: Isolated,
    referral: ReferralSubmitted,
    signed_at: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Publish ``referral`` signed by its prescriber at ``signed_at``; returns the headers."""
    value = referral.model_dump_json().encode()
    prescriber = referral.data.prescriber.prescriber_id
    headers = {**sign_as(prescriber, value, signed_at), **(extra or {})}
    await isolated.kafka.send_raw(
        isolated.topic(topics.INTAKE),
        value,
        referral.subject.encode(),
        [(name, text.encode()) for name, text in headers.items()],
    )
    return headers


async def _operator_replay(
    isolated: Isolated, referral: ReferralSubmitted, secret: str
) -> dict[str, str]:
    """What the operators' tool publishes for a referral that first reached the broker an hour
    ago (signed then), vouched for with ``secret``."""
    an_hour_ago = int(time.time()) - 3600
    value = referral.model_dump_json().encode()
    original = f"{isolated.topic(topics.INTAKE)}:0:42"
    vouched = replay_headers(
        secret.encode(), original, (an_hour_ago + 1) * 1000, value, int(time.time())
    )
    return await _send_signed(isolated, referral, an_hour_ago, vouched)


async def _wall_clock() -> float:
    return time.time()


async def test_a_backlog_published_while_intake_was_down_is_admitted(isolated: Isolated) -> None:
    bootstrap = isolated.endpoints.kafka_bootstrap_servers
    intake = isolated.topic(topics.INTAKE)
    assert await _topic_configs(bootstrap, intake, TIMESTAMP_TYPE) == {
        TIMESTAMP_TYPE: "LogAppendTime"
    }

    # Intake is down: prescribers keep publishing, each record signed as it is sent.
    backlog = [make_referral(i) for i in range(BACKLOG)]
    for referral in backlog:
        await isolated.kafka.send_event(intake, referral)
    # Signed a minute before it reached the broker: a captured record published again.
    stale = make_referral(BACKLOG)
    await _send_signed(isolated, stale, int(time.time()) - 60)
    # The operators put back a referral first published an hour ago; and someone without the
    # operations secret tries the same.
    replayed = make_referral(BACKLOG + 1)
    replay = await _operator_replay(isolated, replayed, OPERATIONS_SECRET)
    forged = make_referral(BACKLOG + 2)
    await _operator_replay(isolated, forged, "not-the-operations-secret")

    arrivals = await _arrivals(isolated, intake)
    assert len(arrivals) == BACKLOG + 3
    assert {a.timestamp_type for a in arrivals} == {LOG_APPEND_TIME}
    # Time passes beyond the window after the last arrival, before intake reads anything: measured
    # against the time it reads them, every record would be refused.
    deadline = max(a.timestamp_ms for a in arrivals) / 1000 + WINDOW_S + 1
    await eventually(
        _wall_clock,
        lambda now: now > deadline,
        timeout_s=WINDOW_S + 60,
        interval_s=0.2,
        what="the replay window to pass since the last record reached the broker",
    )

    process = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_REPLAY_WINDOW_S=str(WINDOW_S),
        AIGUILLAGE_OPERATIONS_SECRET=OPERATIONS_SECRET,
    )
    process.start()
    await wait_started(process)

    async def outcomes() -> tuple[list[str | None], list[tuple[str | None, str]]]:
        accepted = await isolated.kafka.read_all(isolated.topic(topics.ACCEPTED))
        rejected = await isolated.kafka.read_all(isolated.topic(topics.REJECTED))
        return [r.key for r in accepted], [(r.key, r.json()["data"]["reason"]) for r in rejected]

    accepted, rejected = await eventually(
        outcomes,
        lambda seen: len(seen[0]) + len(seen[1]) >= BACKLOG + 3,
        timeout_s=120,
        interval_s=0.5,
        what="every record on referrals.intake accepted or rejected",
    )
    assert sorted(rejected) == sorted(
        [(stale.subject, "replayed_message"), (forged.subject, "replayed_message")]
    )
    assert sorted(k or "" for k in accepted) == sorted(
        [r.subject for r in backlog] + [replayed.subject]
    )

    logs = process.logs()
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert events.count("referral.operator_replay") == 1
    assert events.count("referral.replay_headers_unverified") == 1
    for secret in (
        OPERATIONS_SECRET,
        replay[REPLAY_SIGNATURE_HEADER].split("v1=")[1],
        replay[SIGNATURE_HEADER],
    ):
        assert secret not in logs


async def test_provisioning_gives_an_existing_intake_topic_log_append_time(
    isolated: Isolated,
) -> None:
    bootstrap = isolated.endpoints.kafka_bootstrap_servers
    intake = isolated.topic(topics.INTAKE)
    # As on a broker provisioned before this change, with a retention an operator added since.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await set_topic_configs(
            admin, {intake: {TIMESTAMP_TYPE: "CreateTime", "retention.ms": "604800000"}}
        )
    finally:
        await admin.close()
    await eventually(  # the broker applies a config change a moment after it is accepted
        lambda: _topic_configs(bootstrap, intake, TIMESTAMP_TYPE),
        lambda configs: configs == {TIMESTAMP_TYPE: "CreateTime"},
        timeout_s=30,
        what="the intake topic back to CreateTime",
    )

    await provision(bootstrap, prefix=isolated.prefix)
    await provision(bootstrap, prefix=isolated.prefix)  # idempotent: nothing left to change

    assert await _topic_configs(bootstrap, intake, TIMESTAMP_TYPE, "retention.ms") == {
        TIMESTAMP_TYPE: "LogAppendTime",
        "retention.ms": "604800000",  # incremental: the operator's setting is kept
    }
    # A producer can no longer choose the time: the broker stamps the arrival over it.
    sent_at = time.time()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(intake, b"{}", b"ts-check", timestamp_ms=1_000_000_000_000)
    finally:
        await producer.stop()
    (arrival,) = await _arrivals(isolated, intake)
    assert arrival.timestamp_type == LOG_APPEND_TIME
    assert arrival.timestamp_ms / 1000 >= sent_at - 1  # not 2001
