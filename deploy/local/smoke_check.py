"""Check that the local infrastructure really works with the project's client libraries.

Kafka (aiokafka): admin creates an isolated topic set, a durable producer (acks=all, idempotent)
publishes, a consumer group reads with manual commits, the committed offsets are read back (by the
consumer and by the admin client), then the topics are deleted. PostgreSQL (asyncpg): connect with
AIGUILLAGE_DATABASE_URL, write and read in a transaction.

    eval "$(deploy/local/infra.sh env)"; .venv/bin/python deploy/local/smoke_check.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from aiguillage_schemas.topics import ALL_TOPICS, INTAKE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling script, not a package
from aiguillage_common.provisioning import provision

MESSAGES = 60


async def check_kafka(bootstrap: str) -> None:
    prefix = f"smoke-{uuid.uuid4().hex[:8]}-"
    topic = prefix + INTAKE.name
    t0 = time.monotonic()
    await provision(bootstrap, ALL_TOPICS, prefix)
    await provision(bootstrap, ALL_TOPICS, prefix)  # idempotent second run
    print(f"kafka: provisioned {len(ALL_TOPICS)} topics in {time.monotonic() - t0:.2f}s")

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 12}".encode())
            for i in range(MESSAGES)
        ]
    finally:
        await producer.stop()
    partitions_used = {md.partition for md in sent}
    print(f"kafka: produced {MESSAGES} (acks=all, idempotent) over partitions {partitions_used}")

    group = prefix + "group"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        t0 = time.monotonic()
        while len(received) < MESSAGES:
            if time.monotonic() - t0 > 30:
                raise RuntimeError(f"consumed only {len(received)}/{MESSAGES}")
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                received.extend(r.value for r in records if r.value is not None)
            await consumer.commit()
        print(f"kafka: consumed {len(received)} in group in {time.monotonic() - t0:.2f}s")
        ends = await consumer.end_offsets(list(consumer.assignment()))
        for tp, end in ends.items():
            committed = await consumer.committed(tp)
            if committed != end:
                raise RuntimeError(f"{tp}: committed {committed} != end {end}")
        # Explicit-offset commit path too.
        tp0 = TopicPartition(topic, 0)
        await consumer.commit({tp0: OffsetAndMetadata(ends[tp0], "smoke")})
    finally:
        await consumer.stop()
    if sorted(received) != sorted(f"v{i}".encode() for i in range(MESSAGES)):
        raise RuntimeError("consumed values differ from produced ones")

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        total = sum(om.offset for om in offsets.values())
        if total != MESSAGES:
            raise RuntimeError(f"admin sees committed total {total} != {MESSAGES}")
        groups = await admin.describe_consumer_groups([group])
        print(f"kafka: committed offsets read back (total {total}); group {len(groups)} described")
        await admin.delete_topics([prefix + t.name for t in ALL_TOPICS])
    finally:
        await admin.close()


async def check_postgres(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        version = await conn.fetchval("SHOW server_version")
        max_conn = await conn.fetchval("SHOW max_connections")
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE smoke (id int PRIMARY KEY, v text)")
            await conn.execute("INSERT INTO smoke VALUES (1, 'ok')")
            value = await conn.fetchval("SELECT v FROM smoke WHERE id = 1")
        if value != "ok":
            raise RuntimeError("postgres round trip failed")
        print(f"postgres: {version}, max_connections={max_conn}, round trip ok")
    finally:
        await conn.close()


async def main() -> None:
    bootstrap = os.environ.get("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    url = os.environ.get(
        "AIGUILLAGE_DATABASE_URL",
        "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage",
    )
    await check_kafka(bootstrap)
    await check_postgres(url)
    print("smoke check: OK")


if __name__ == "__main__":
    asyncio.run(main())
