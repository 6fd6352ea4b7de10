"""Bounded fuzzing of intake through the real broker: thousands of mutated referrals.

Hypothesis generates the mutations (structure, types, values, bytes, keys, signatures); they are
all published to one running intake, then every record is checked to have exactly one outcome:
accepted (a referral.accepted for its subject) or rejected with a reason (a referral.rejected that
points back at its partition and offset). Every accepted record must also validate against the
published JSON Schema of its event: the server is never looser than the contract. The intake
process must still be alive, no rejection may be an unexpected ``processing_error``, and the
consumer group's lag must come back to zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_demo.samples import DEMO_CASES, make_referral
from aiguillage_demo.signing import sign_as
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.support.contracts import schema_errors
from tests.support.waiting import eventually

FUZZ_COUNT = int(os.environ.get("AIGUILLAGE_FUZZ_COUNT", "3000"))
MAX_BYTES = 16 * 1024


@dataclass(frozen=True)
class Fuzzed:
    referral_id: str  # what the record was built from (its subject unless mutated)
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    mutation: str


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "59350", "2A004", "01200", "2026-02-30", "9999-12-31", "astrology"]),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def fuzzed(draw: st.DrawFn, index: int) -> Fuzzed:
    referral_id = f"fz-{index:05d}-{draw(st.integers(0, 10**6)):06d}"
    case = draw(st.integers(0, len(DEMO_CASES) - 1))
    referral = make_referral(case, referral_id=referral_id)
    prescriber = referral.data.prescriber.prescriber_id
    document = referral.model_dump(mode="json")
    mutation = draw(
        st.sampled_from(
            ["none", "replace", "delete", "add", "bytes", "truncate", "signature", "key", "big"]
        )
    )
    paths = _paths(document)
    value: bytes
    if mutation == "replace":
        path = draw(st.sampled_from(paths))
        _parent(document, path)[path[-1]] = draw(JSON_VALUE)
    elif mutation == "delete":
        path = draw(st.sampled_from(paths))
        del _parent(document, path)[path[-1]]
    elif mutation == "add":
        containers = [p for p in paths if isinstance(_parent(document, (*p, "")), dict)]
        path = draw(st.sampled_from([(), *containers]))
        _parent(document, (*path, "x"))[draw(st.text(min_size=1, max_size=12))] = draw(JSON_VALUE)
    value = json.dumps(document).encode()
    # Positions are drawn in a fixed range, then folded onto the value: its length depends on the
    # clock (timestamps in the referral), and a bound that moves between Hypothesis's replays of
    # one case is a "flaky strategy" error.
    if mutation == "bytes":
        position = draw(st.integers(0, 10**6)) % len(value)
        value = value[:position] + draw(st.binary(min_size=1, max_size=4)) + value[position + 1 :]
    elif mutation == "truncate":
        value = value[: draw(st.integers(0, 10**6)) % len(value)]
    elif mutation == "big":
        value = value[:-1] + b', "pad": "' + b"x" * MAX_BYTES + b'"}'
    key: bytes | None = referral_id.encode()
    headers = tuple((k, v.encode()) for k, v in sign_as(prescriber, value).items())
    if mutation == "signature":
        how = draw(st.sampled_from(["unsigned", "stale", "other", "garbled"]))
        if how == "unsigned":
            headers = ()
        elif how == "stale":
            stale = sign_as(prescriber, value, timestamp=int(time.time()) - 86_400)
            headers = tuple((k, v.encode()) for k, v in stale.items())
        elif how == "other":
            headers = tuple((k, v.encode()) for k, v in sign_as("spip-974", value).items())
        else:
            headers = tuple((k, draw(st.binary(max_size=16))) for k, _ in headers)
    elif mutation == "key":
        key = draw(st.none() | st.binary(max_size=20))
    return Fuzzed(referral_id, value, key, headers, mutation)


def generate(count: int) -> list[Fuzzed]:
    """Let Hypothesis explore ``count`` inputs; every one it tries goes to the broker."""
    collected: list[Fuzzed] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,  # CI reproducible: the same inputs every run
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        collected.append(data.draw(fuzzed(len(collected))))

    collect()
    return collected


async def _committed_lag(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [TopicPartition(topic, p) for p in range(topics.INTAKE.partitions)]
        ends = await consumer.end_offsets(partitions)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
    finally:
        await consumer.stop()
        await admin.close()


async def test_thousands_of_mutated_referrals_each_end_accepted_or_rejected(
    isolated: Isolated,
) -> None:
    started = time.monotonic()
    inputs = generate(FUZZ_COUNT)
    generated_s = time.monotonic() - started
    intake_service = isolated.service(
        "referral-intake", AIGUILLAGE_INTAKE_MAX_MESSAGE_BYTES=str(MAX_BYTES)
    )
    intake_service.start()
    await wait_started(intake_service)
    intake = isolated.topic(topics.INTAKE)

    producer = AIOKafkaProducer(
        bootstrap_servers=isolated.endpoints.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=4 * MAX_BYTES,
    )
    await producer.start()
    try:
        pending = [
            await producer.send(intake, value=f.value, key=f.key, headers=list(f.headers))
            for f in inputs
        ]
        delivered = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    where = {(m.partition, m.offset): f for m, f in zip(delivered, inputs, strict=True)}
    sent_s = time.monotonic() - started

    group = f"{isolated.prefix}referral-intake"
    bootstrap = isolated.endpoints.kafka_bootstrap_servers
    await eventually(
        lambda: _committed_lag(bootstrap, group, intake),
        lambda lag: lag == 0,
        timeout_s=240,
        interval_s=1.0,
        what="intake's consumer lag back to zero",
    )
    drained_s = time.monotonic() - started
    assert intake_service.alive(), intake_service.logs()[-3000:]

    rejected = await isolated.kafka.read_all(isolated.topic(topics.REJECTED))
    accepted = await isolated.kafka.read_all(isolated.topic(topics.ACCEPTED))
    rejected_at = Counter(
        (r.json()["data"]["original_partition"], r.json()["data"]["original_offset"])
        for r in rejected
    )
    reasons = Counter(r.json()["data"]["reason"] for r in rejected)
    accepted_subjects = Counter(r.json()["subject"] for r in accepted)
    assert max(rejected_at.values()) == 1, "a record was rejected twice"
    assert max(accepted_subjects.values()) == 1, "a referral was accepted twice"
    assert "processing_error" not in reasons, reasons
    assert "retries_exhausted" not in reasons, reasons

    unanswered = []
    looser_than_schema = []
    for coordinates, fuzz in where.items():
        is_rejected = coordinates in rejected_at
        is_accepted = (
            fuzz.key is not None and fuzz.key.decode(errors="replace") in accepted_subjects
        )
        if is_rejected == is_accepted:
            unanswered.append((coordinates, fuzz.mutation, is_rejected))
        if is_accepted and not is_rejected and fuzz.value is not None:
            # What the server accepted, the published schema accepts too (strict validation).
            version = json.loads(fuzz.value)["schema_version"]
            errors = schema_errors(f"referral.submitted.v{version}", fuzz.value)
            if errors:
                looser_than_schema.append((coordinates, fuzz.mutation, errors[:3]))
    assert unanswered == [], unanswered[:20]
    assert looser_than_schema == [], looser_than_schema[:20]
    assert len(rejected) + len(accepted) == len(inputs)
    assert '"service.crashed"' not in intake_service.logs()
    print(
        f"\nfuzz: {len(inputs)} records ({dict(Counter(f.mutation for f in inputs))}); "
        f"{len(accepted)} accepted, {len(rejected)} rejected {dict(reasons)}; "
        f"generated in {generated_s:.1f}s, published by {sent_s:.1f}s, lag 0 at {drained_s:.1f}s"
    )
