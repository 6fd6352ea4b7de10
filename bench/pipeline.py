"""Throughput of one Aiguillage hop (the routing service) against raw baselines, same machine,
same run.

    ./run bench pipeline [--count N]

Prints messages per second for:
1. raw aiokafka: consume → produce → commit, one message at a time, no database;
2. raw composite: consume → routing's own use case and SQL on asyncpg (inbox claim, directory
   read, atomic reservation, decision record, outbox rows) → produce → commit, one message at a
   time, no framework (no FastStream, no reliable consumer, no relay);
3. the routing service as it runs in production (FastStream, reliable consumer, outbox relay),
   as a separate process, on N accepted referrals published beforehand;
and the ratios of 3 to 1 and 2. (The pure decision rate is in ``bench/routing_year.py``.)
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
from aiguillage_common.geography import Geography, load_geography
from aiguillage_common.migrations.cli import migrate_services
from aiguillage_common.provisioning import provision, unprovision
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from referral_intake.domain.admission import Admitted, admit
from routing.adapters.directory_csv import load_directory
from routing.adapters.postgres import PostgresRoutingUnitOfWork
from routing.adapters.postgres import seed_directory as seed_rows
from routing.settings import RoutingSettings
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import route_referral

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


async def raw_loop(source: str, sink: str, count: int, context: RoutingContext | None) -> float:
    """Consume → (routing's use case) → produce → commit, sequentially; returns msg/s."""
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
            if context is not None:
                event = ReferralAccepted.model_validate_json(record.value or b"")
                await route_referral(event, context)
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


async def seed_directory(pool: asyncpg.Pool, geography: Geography) -> None:
    async with pool.acquire() as connection:
        await seed_rows(connection, load_directory(geography))


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
        geography = load_geography()
        await seed_directory(pool, geography)
        context = RoutingContext(
            uow_factory=lambda: PostgresRoutingUnitOfWork(pool),
            geography=geography,
            policy=RoutingSettings().policy(),
            decisions_topic=composite_sink,
        )
        composite = await raw_loop(source, composite_sink, count, context)
        # The service starts from the same state: fresh schema, seeded directory.
        await pool.execute(f"DROP SCHEMA routing{suffix} CASCADE")
        await migrate_services(DATABASE, ["routing"], suffix)
        await seed_directory(pool, geography)
        service = await service_rate(prefix, suffix, count, pool)
        await pool.execute(f"DROP SCHEMA routing{suffix} CASCADE")
    finally:
        await pool.close()
        await unprovision(BOOTSTRAP, prefix)
    print(f"\nOne hop, {count} messages, sequential per consumer (2-core machine, same run)")
    print(f"{'pipeline':<58} {'msg/s':>9} {'vs raw':>8}")
    rows = [
        ("1. raw aiokafka consume → produce → commit", raw),
        ("2. raw composite: + routing's use case and SQL, no framework", composite),
        ("3. routing service (FastStream, inbox, outbox relay)", service),
    ]
    for label, rate in rows:
        print(f"{label:<58} {rate:>9.0f} {rate / raw:>7.2f}x")
    print(f"routing service vs raw composite: {service / composite:.2f}x")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2000)
    asyncio.run(main(parser.parse_args().count))


if __name__ == "__main__":
    run()
