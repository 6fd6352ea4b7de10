"""Throughput of one Aiguillage hop (the routing service) against raw baselines, same machine,
same run.

    ./run bench pipeline [--count N]

Prints messages per second for:
1. raw aiokafka: consume → produce → commit, one message at a time, no database;
2. raw composite: consume → asyncpg transaction running routing's exact SQL (inbox claim,
   decision insert, outbox insert) → produce → commit, one message at a time, no framework;
3. the routing service as it runs in production (FastStream, reliable consumer, outbox relay),
   as a separate process, on N accepted referrals published beforehand;
and the ratios of 3 to 1 and 2. Also the pure routing decision rate (no I/O) for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aiguillage_common.codec import encode_event
from aiguillage_common.geography import load_geography
from aiguillage_common.migrations.cli import migrate_services
from aiguillage_common.provisioning import provision
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from referral_intake.domain.admission import Admitted, admit
from routing.adapters.directory_csv import load_directory
from routing.domain.decision import decide

BOOTSTRAP = os.environ.get("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
DATABASE = os.environ.get(
    "AIGUILLAGE_DATABASE_URL", "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage"
)


def accepted_events(count: int) -> list[ReferralAccepted]:
    geography = load_geography()
    events = []
    for index in range(count):
        submitted = make_referral(index % 11, referral_id=f"bench-{uuid.uuid4().hex[:16]}")
        admitted = admit(submitted, geography, submitted.data.frame.decision_date)
        assert isinstance(admitted, Admitted)
        events.append(
            ReferralAccepted(
                source="bench",
                correlation_id=submitted.correlation_id,
                subject=submitted.subject,
                data=admitted.data,
            )
        )
    return events


async def publish(topic: str, events: list[ReferralAccepted]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        batch = [
            await producer.send(topic, encode_event(e), key=e.subject.encode()) for e in events
        ]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def raw_loop(source: str, sink: str, count: int, pool: asyncpg.Pool | None) -> float:
    """Consume → (transaction) → produce → commit, sequentially; returns messages per second."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    done = 0
    started = 0.0
    try:
        while done < count:
            record = await consumer.getone()
            if done == 0:
                started = time.perf_counter()
            if pool is not None:
                async with pool.acquire() as connection, connection.transaction():
                    await connection.execute(
                        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
                        "ON CONFLICT DO NOTHING RETURNING true",
                        "bench",
                        uuid.uuid4(),
                    )
                    await connection.execute(
                        "INSERT INTO decisions (referral_id, decision_id, outcome, site_id,"
                        " centre_id, distance_km, reason, explanation, caused_by_event_id,"
                        " correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        f"raw-{uuid.uuid4().hex[:16]}",
                        uuid.uuid4(),
                        "routed",
                        "S",
                        "C",
                        1.0,
                        None,
                        "bench",
                        uuid.uuid4(),
                        uuid.uuid4(),
                    )
                    await connection.execute(
                        "INSERT INTO outbox (event_id, topic, key, headers, payload) "
                        "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (event_id) DO NOTHING",
                        uuid.uuid4(),
                        sink,
                        "k",
                        "{}",
                        record.value,
                    )
            await producer.send_and_wait(sink, record.value, key=record.key)
            await consumer.commit(
                {TopicPartition(record.topic, record.partition): record.offset + 1}
            )
            done += 1
        return (count - 1) / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def service_rate(prefix: str, suffix: str, count: int, pool: asyncpg.Pool) -> float:
    schema = f"routing{suffix}"
    env = {
        **os.environ,
        "AIGUILLAGE_ROUTING_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "AIGUILLAGE_ROUTING_DATABASE_URL": DATABASE,
        "AIGUILLAGE_ROUTING_TOPIC_PREFIX": prefix,
        "AIGUILLAGE_ROUTING_DB_SCHEMA": schema,
        "AIGUILLAGE_ROUTING_CONSUMER_GROUP": f"{prefix}routing",
        "AIGUILLAGE_ROUTING_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aiguillage-routing"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def published() -> int:
            value = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
            )
            return int(value)

        deadline = time.monotonic() + 600
        while await pool.fetchval("SELECT count(*) FROM decisions") == 0:
            if time.monotonic() > deadline or process.returncode is not None:
                raise SystemExit("routing did not start")
            await asyncio.sleep(0.01)
        first = await pool.fetchval("SELECT min(decided_at) FROM decisions")
        while await published() < count:
            if time.monotonic() > deadline:
                raise SystemExit("routing did not finish in time")
            await asyncio.sleep(0.05)
        last = await pool.fetchval("SELECT max(published_at) FROM outbox")
        elapsed: float = (last - first).total_seconds()
        return (count - 1) / elapsed
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def decide_rate(count: int) -> float:
    geography = load_geography()
    directory = load_directory(geography)
    events = accepted_events(min(count, 2000))
    started = time.perf_counter()
    for event in events:
        decide(event.data, directory, geography)
    return len(events) / (time.perf_counter() - started)


async def main(count: int) -> None:
    token = uuid.uuid4().hex[:8]
    prefix, suffix = f"bench{token}.", f"_b{token}"
    await provision(BOOTSTRAP, prefix=prefix)
    await migrate_services(DATABASE, ["routing"], suffix)
    source = f"{prefix}{topics.ACCEPTED.name}"
    raw_sink, composite_sink = (
        f"{prefix}{topics.ROUTED.name}",
        f"{prefix}{topics.ROUTING_DEAD_LETTER.name}",
    )
    events = accepted_events(count)
    await publish(source, events)
    pool = await asyncpg.create_pool(
        DATABASE, min_size=1, max_size=2, server_settings={"search_path": f"routing{suffix}"}
    )
    assert pool is not None
    try:
        raw = await raw_loop(source, raw_sink, count, None)
        composite = await raw_loop(source, composite_sink, count, pool)
        await pool.execute("TRUNCATE decisions, outbox, processed_events")
        service = await service_rate(prefix, suffix, count, pool)
        await pool.execute(f"DROP SCHEMA routing{suffix} CASCADE")
    finally:
        await pool.close()
    pure = decide_rate(count)
    print(f"\nOne hop, {count} messages, sequential per consumer (2-core machine, same run)")
    print(f"{'pipeline':<58} {'msg/s':>9} {'vs raw':>8}")
    rows = [
        ("1. raw aiokafka consume → produce → commit", raw),
        ("2. raw composite: + asyncpg transaction (routing's SQL)", composite),
        ("3. routing service (FastStream, inbox, outbox relay)", service),
    ]
    for label, rate in rows:
        print(f"{label:<58} {rate:>9.0f} {rate / raw:>7.2f}x")
    print(f"routing service vs raw composite: {service / composite:.2f}x")
    print(f"pure routing decision, no I/O: {pure:,.0f} decisions/s")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2000)
    asyncio.run(main(parser.parse_args().count))


if __name__ == "__main__":
    run()
