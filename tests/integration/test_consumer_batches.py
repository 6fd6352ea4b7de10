"""The shared consumer's batches on the real broker and database.

``tests/unit/test_reliable_consumer.py`` drives ``ReliableConsumer`` against a fake transaction.
Here a consumer is wired as every service wires its own (``Runtime.consume``: FastStream's batch
subscriber with manual commits, one ``shared_transaction`` per batch with its deferred inbox claims
and outbox rows, dead letters published by the service's producer), reads a real topic in a real
consumer group, and writes to a schema migrated with the platform migrations (outbox,
processed_events) plus a table of its own effects. The use case is the smallest one with every
part a real one has: it decodes the record, claims its event, writes its effect and emits an event.

What is asserted is what an operator would see: the effects, the outbox, the inbox, the records on
the dead-letter topic, the group's committed offsets, the consumer's metrics and readiness.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.migrations.runner import migrate
from aiguillage_common.provisioning import delete_groups, provision
from aiguillage_common.runtime import Runtime, open_pool, service_broker
from aiguillage_common.settings import ServiceSettings
from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.topics import Topic
from aiguillage_schemas.vocabulary import RejectionReason
from tests.conftest import Isolated
from tests.support.waiting import eventually

SERVICE = "consumer-it"
CONSUMER = "consumer-it.tallies"
# One partition each: the records of a test are one ordered batch, its dead letters one list.
SOURCE = Topic("tallies", 1, "test -> the consumer under test")
DEAD_LETTERS = Topic("tallies.dead-letter", 1, "the consumer under test -> test")
TALLIED = "tallies.applied"  # the emitted events' topic: they stay in the outbox (no relay runs)
TALLIED_IDS = uuid.UUID("0b7e4a55-5f0c-4d1e-8a53-6c1d2b9f7e10")
CANARY = "Quorvathine"  # what a bug's message may quote: never in a dead letter
TIMEOUT_S = 60.0  # generous: the machine may be loaded; a passing run waits far less


class Tally(Envelope):
    """The consumed event: add ``amount``."""

    EVENT_TYPE = "test.tally"
    SCHEMA_VERSION = 1

    event_type: Literal["test.tally"] = "test.tally"
    schema_version: Literal[1] = 1
    amount: int
    # The use case meets a bug in its last step, after it wrote its effect and emitted.
    fails_after_writing: bool = False


class Tallied(Envelope):
    """What the use case emits (through the outbox) for each tally it applies."""

    EVENT_TYPE = "test.tallied"
    SCHEMA_VERSION = 1

    event_type: Literal["test.tallied"] = "test.tallied"
    schema_version: Literal[1] = 1
    amount: int


def tallied_id(tally_id: UUID) -> UUID:
    # Derived, as the services derive theirs: a second run emits the same event.
    return uuid.uuid5(TALLIED_IDS, str(tally_id))


def tally(amount: int, *, fails_after_writing: bool = False) -> Tally:
    return Tally(
        source="test",
        correlation_id=uuid.uuid4(),
        subject=f"ref-{uuid.uuid4().hex[:12]}",
        amount=amount,
        fails_after_writing=fails_after_writing,
    )


Sent = tuple[bytes | None, bytes]  # key, value


def sent(event: Tally) -> Sent:
    return event.subject.encode(), event.model_dump_json().encode()


NOT_JSON: Sent = (b"ref-notjson", b'{"event_type": "test.tally", "amount": ')


@dataclass
class Batches:
    """The consumer under test and what a test reads of its world."""

    isolated: Isolated
    runtime: Runtime
    broker: KafkaBroker
    schema: str
    source: str
    dead_letters: str
    group: str
    application: str  # the consumer's connections' application_name
    started: bool = False

    async def start(self) -> None:
        await self.broker.start()
        self.started = True

    async def publish(self, records: list[Sent]) -> None:
        await self.isolated.kafka.send_together(self.source, records)

    async def committed(self) -> int | None:
        return (await self.isolated.kafka.committed(self.group, self.source)).get(0)

    async def committed_to(self, offset: int) -> None:
        """Until the group committed past ``offset`` records: each has a durable outcome."""
        await eventually(
            self.committed,
            lambda found: found == offset,
            TIMEOUT_S,
            what=f"the group to commit offset {offset}",
        )

    async def effects(self) -> dict[UUID, int]:
        """How many times each tally was applied."""
        rows = await self.isolated.db.fetch(
            f"SELECT event_id, count(*) AS n FROM {self.schema}.tallies GROUP BY event_id"
        )
        return {row["event_id"]: row["n"] for row in rows}

    async def outbox(self) -> set[UUID]:
        rows = await self.isolated.db.fetch(f"SELECT event_id FROM {self.schema}.outbox")
        return {row["event_id"] for row in rows}

    async def inbox(self) -> set[UUID]:
        rows = await self.isolated.db.fetch(
            f"SELECT event_id FROM {self.schema}.processed_events WHERE consumer = $1", CONSUMER
        )
        return {row["event_id"] for row in rows}

    async def dead_lettered(self) -> list[tuple[int, str, dict[str, object]]]:
        """Each dead letter: the offset it refers to, its event_type header, its body's data."""
        found = []
        for record in await self.isolated.kafka.read_all(self.dead_letters):
            data = record.json()["data"]
            found.append((data["original_offset"], record.headers["event_type"], data))
        return found

    def metric(self, name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(
            name, {"service": SERVICE, "consumer": CONSUMER, "topic": self.source, **labels}
        )
        return value or 0.0

    def batches_done(self) -> float:
        return self.metric("aiguillage_batch_handling_seconds_count")


async def apply_tally(runtime: Runtime, record: InboundRecord) -> None:
    """The use case: decode, claim, write the effect, emit; once per event."""
    event = decode_event(record.value, [Tally])  # InvalidMessage for what is not a tally
    assert isinstance(event, Tally)
    async with PostgresUnitOfWork(runtime.require_pool()) as uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return  # handled before: no effect
        await uow.connection.execute(
            "INSERT INTO tallies (event_id, amount) VALUES ($1, $2)", event.event_id, event.amount
        )
        await uow.emit(
            runtime.settings.topic(TALLIED),
            Tallied(
                event_id=tallied_id(event.event_id),
                source=SERVICE,
                correlation_id=event.correlation_id,
                subject=event.subject,
                amount=event.amount,
            ),
        )
        if event.fails_after_writing:
            raise LookupError(f"no bucket for {CANARY}")


@pytest.fixture
async def batches(isolated: Isolated) -> AsyncIterator[Batches]:
    endpoints = isolated.endpoints
    schema = f"consumer_batches{isolated.suffix}"
    async with isolated.db.acquire() as connection:
        # The platform migrations only: aiguillage_common's own migrations folder holds the
        # runner, no numbered file of its own.
        await migrate(connection, schema, "aiguillage_common")
        # No unique key: a tally applied twice shows as two rows.
        await connection.execute(
            f"CREATE TABLE {schema}.tallies (event_id uuid NOT NULL, amount int NOT NULL)"
        )
    await provision(endpoints.kafka_bootstrap_servers, [SOURCE, DEAD_LETTERS], isolated.prefix)
    settings = ServiceSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        database_url=endpoints.database_url,
        db_schema=schema,
        topic_prefix=isolated.prefix,
        consumer_group=f"{isolated.prefix}consumer-it",
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.5,
        graceful_timeout_s=5.0,
    )
    runtime = Runtime.for_service(SERVICE, settings)
    application = f"{SERVICE}{isolated.suffix}"
    runtime.pool = await open_pool(settings, application)
    await runtime.producer.start()
    broker = service_broker(settings, SERVICE)
    world = Batches(
        isolated,
        runtime,
        broker,
        schema,
        settings.topic(SOURCE.name),
        settings.topic(DEAD_LETTERS.name),
        settings.consumer_group,
        application,
    )

    async def process(record: InboundRecord) -> None:
        await apply_tally(runtime, record)

    runtime.consume(
        broker,
        CONSUMER,
        process,
        runtime.dead_letters(world.dead_letters, CONSUMER),
        topic=world.source,
        group_id=world.group,
        documented_payload=Tally,
        description="Tallies to apply once each.",
    )
    try:
        yield world
    finally:
        if world.started:
            await broker.stop()  # leaves the group, which can then be deleted
            await delete_groups(endpoints.kafka_bootstrap_servers, world.group)
        await runtime.producer.stop()
        await runtime.pool.close()
        if not os.environ.get("AIGUILLAGE_KEEP_TEST_SCHEMAS"):
            await isolated.db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("poison", ["not_json", "fails_after_writing"])
async def test_a_poison_record_is_dead_lettered_alone_and_the_rest_of_its_batch_applied_once(
    batches: Batches, poison: str
) -> None:
    before = [tally(n) for n in range(1, 4)]
    after = [tally(n) for n in range(4, 7)]
    if poison == "not_json":
        bad, reason = NOT_JSON, RejectionReason.NOT_JSON
    else:
        # It claims its event, writes its effect and emits before it fails: the batch must be
        # redone without it, or its writes would commit with the others'.
        bad, reason = sent(tally(99, fails_after_writing=True)), RejectionReason.PROCESSING_ERROR
    records = [*map(sent, before), bad, *map(sent, after)]
    await batches.publish(records)
    await batches.start()

    await batches.committed_to(len(records))
    assert batches.batches_done() == 1  # the seven records were one batch, as meant
    good = [event.event_id for event in before + after]
    assert await batches.effects() == dict.fromkeys(good, 1)
    assert await batches.outbox() == {tallied_id(event_id) for event_id in good}
    assert await batches.inbox() == set(good)
    ((offset, event_type, data),) = await batches.dead_lettered()
    assert (offset, event_type, data["reason"]) == (3, "message.dead_lettered", str(reason))
    assert (data["original_topic"], data["consumer"]) == (batches.source, CONSUMER)
    assert CANARY not in json.dumps(data)
    assert batches.metric("aiguillage_records_consumed_total", outcome="handled") == len(good)
    assert batches.metric("aiguillage_records_consumed_total", outcome="dead_lettered") == 1


async def test_records_published_again_change_nothing_and_are_not_dead_lettered(
    batches: Batches,
) -> None:
    # A producer that resends after a lost acknowledgement, or a copy replayed: the same
    # events (same ids) come again, in a batch that also holds new ones.
    first = [tally(n) for n in range(1, 6)]
    await batches.publish([*map(sent, first[:2]), NOT_JSON, *map(sent, first[2:])])
    await batches.start()
    await batches.committed_to(6)
    assert len(await batches.dead_lettered()) == 1  # the record that is not JSON

    fresh = [tally(10), tally(20)]
    again = [first[0], fresh[0], *first[1:4], fresh[1], first[4]]
    await batches.publish([sent(event) for event in again])

    await batches.committed_to(6 + len(again))
    assert batches.batches_done() == 2
    applied = [event.event_id for event in first + fresh]
    assert await batches.effects() == dict.fromkeys(applied, 1)
    assert await batches.outbox() == {tallied_id(event_id) for event_id in applied}
    assert await batches.inbox() == set(applied)
    assert [offset for offset, _, _ in await batches.dead_lettered()] == [2]  # none new
    assert batches.metric("aiguillage_records_consumed_total", outcome="duplicate") == len(first)
    assert batches.metric("aiguillage_records_consumed_total", outcome="handled") == len(applied)


async def test_a_batch_whose_connection_is_lost_before_its_commit_waits_then_applies_once(
    batches: Batches,
) -> None:
    """PostgreSQL drops the consumer's connection after the batch wrote everything but its
    outbox rows (deferred to the end): nothing may be dead-lettered, lost or applied twice."""
    events = [tally(n) for n in range(1, 6)]
    async with batches.isolated.db.acquire() as blocker, blocker.transaction():
        # Holds the batch's last write (the outbox rows, written right before the commit).
        await blocker.execute(f"LOCK TABLE {batches.schema}.outbox IN SHARE MODE")
        await batches.publish([sent(event) for event in events])
        await batches.start()
        first = await blocked_at_the_outbox(batches)
        await blocker.execute("SELECT pg_terminate_backend($1)", first)

        # The consumer waits for the database (readiness names it) and tries the batch again.
        await eventually(
            lambda: dict(batches.runtime.health.consumers_waiting),
            lambda waiting: waiting == {CONSUMER: "database"},
            TIMEOUT_S,
            what="the consumer to wait for the database",
        )
        await blocked_at_the_outbox(batches, other_than=first)  # tried again, waits again
        assert await batches.committed() is None
        assert await batches.dead_lettered() == []
    # The lock is released: the retried batch commits.

    await batches.committed_to(len(events))
    ids = [event.event_id for event in events]
    assert await batches.effects() == dict.fromkeys(ids, 1)
    assert await batches.outbox() == {tallied_id(event_id) for event_id in ids}
    assert await batches.inbox() == set(ids)
    assert await batches.dead_lettered() == []
    assert batches.runtime.health.consumers_waiting == {}


async def blocked_at_the_outbox(batches: Batches, other_than: int | None = None) -> int:
    """The process id of the consumer's connection waiting for the lock on the outbox (another
    than ``other_than``: one terminated may still be listed for a moment)."""

    async def waiting() -> list[int]:
        rows = await batches.isolated.db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO outbox%'",
            batches.application,
        )
        return [row["pid"] for row in rows if row["pid"] != other_than]

    pids = await eventually(
        waiting, lambda found: len(found) == 1, TIMEOUT_S, what="the batch to wait for the outbox"
    )
    return pids[0]
