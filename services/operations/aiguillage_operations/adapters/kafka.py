"""Kafka side of the dead-letter tool: read dead-letter topics, read a record back, publish a copy.

Reading uses a plain consumer without a group (assign + seek, never a commit): an operator's
listing must not move any service's offsets nor join any group, and must see every dead letter
from the start of the topic each time.

Publishing uses aiokafka directly, not the services' ``KafkaProducerAdapter``: a replay must put
back the original bytes exactly, and that adapter takes a text key and text headers, whereas a
dead-lettered record may have no key, or a header that is not UTF-8 (the ``bad_header`` case).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from aiguillage_operations.domain import (
    Coordinates,
    DeadLetter,
    ReplayPlan,
    SourceRecord,
    read_dead_letter,
)
from aiguillage_operations.use_cases import Scan, SourceUnavailable

CLIENT_ID = "aiguillage-dead-letters"


class ScanStalled(RuntimeError):
    """The broker stopped returning records before the end offsets were reached."""


class KafkaDeadLetters:
    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str = "",
        timeout_s: float = 15.0,
        stall_s: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._prefix = topic_prefix
        self._timeout_s = timeout_s
        self._stall_s = stall_s
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # The admin client answers "which partitions does this topic have"; a consumer only
        # knows the topics it was asked to fetch already.
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id=CLIENT_ID,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await admin.start()
        except BaseException:
            await admin.close()
            raise
        self._admin = admin
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{CLIENT_ID}-{uuid.uuid4().hex[:6]}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    @property
    def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("KafkaDeadLetters is not started")
        return self._consumer

    async def _partitions(self, topic: str) -> list[TopicPartition] | None:
        """The topic's partitions, or None when it does not exist."""
        if self._admin is None:
            raise RuntimeError("KafkaDeadLetters is not started")
        described: list[dict[str, Any]] = await self._admin.describe_topics([topic])
        if not described or described[0]["error_code"] != 0:
            return None
        return sorted(TopicPartition(topic, p["partition"]) for p in described[0]["partitions"])

    async def scan(self, names: Sequence[str]) -> Scan:
        consumer = self._reader
        assigned: list[TopicPartition] = []
        missing: list[str] = []
        for name in names:
            partitions = await self._partitions(self._prefix + name)
            if partitions is None:
                missing.append(name)
            else:
                assigned.extend(partitions)
        if not assigned:
            return Scan([], missing)
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        end = await consumer.end_offsets(assigned)
        found: list[DeadLetter] = []
        pending = set(assigned)
        last_progress = time.monotonic()
        while True:
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
            if not pending:
                break
            batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                *pending, timeout_ms=500
            )
            if any(batch.values()):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._stall_s:
                raise ScanStalled(
                    f"no progress reading {', '.join(sorted({tp.topic for tp in pending}))} "
                    f"for {self._stall_s:.0f} s"
                )
            for tp, records in batch.items():
                name = tp.topic.removeprefix(self._prefix)
                found.extend(
                    read_dead_letter(
                        name,
                        Coordinates(tp.topic, tp.partition, record.offset),
                        record.timestamp,
                        record.value,
                        {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers},
                    )
                    for record in records
                    if record.offset < end[tp]  # a dead letter arriving now is for the next run
                )
        return Scan(found, missing)

    async def records_with_key(self, name: str, key: str) -> list[SourceRecord] | None:
        """Every record of topic ``name`` (without the prefix) whose key is ``key``, in offset
        order; None when the topic does not exist. Only the key's partition is read: the
        producers key these topics by referral id with the default partitioner, as the services
        rely on for ordering."""
        consumer = self._reader
        partitions = await self._partitions(self._prefix + name)
        if partitions is None:
            return None
        wanted = key.encode("utf-8")
        number = murmur2(wanted) & 0x7FFFFFFF
        tp = partitions[number % len(partitions)]
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[SourceRecord] = []
        last_progress = time.monotonic()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            if batch.get(tp):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._stall_s:
                raise ScanStalled(f"no progress reading {tp.topic} for {self._stall_s:.0f} s")
            found.extend(
                SourceRecord(
                    location=Coordinates(tp.topic, tp.partition, record.offset),
                    timestamp_ms=record.timestamp,
                    key=record.key,
                    value=record.value,
                    headers=tuple((h, value or b"") for h, value in record.headers),
                )
                for record in batch.get(tp, [])
                if record.key == wanted and record.offset < end
            )
        return found

    async def fetch(self, location: Coordinates) -> SourceRecord:
        consumer = self._reader
        partitions = await self._partitions(location.topic)
        tp = TopicPartition(location.topic, location.partition)
        if partitions is None or tp not in partitions:
            raise SourceUnavailable(f"{location.topic}:{location.partition} does not exist")
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if location.offset < first:
            raise SourceUnavailable(
                f"{location} is no longer on the topic: retention removed it "
                f"(the partition now starts at offset {first})"
            )
        if location.offset >= end:
            raise SourceUnavailable(
                f"{location} is beyond the end of the partition (offset {end}): "
                "was the topic recreated?"
            )
        consumer.seek(tp, location.offset)
        deadline = time.monotonic() + self._stall_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset != location.offset:
                    raise SourceUnavailable(f"{location} was removed from the topic (compaction?)")
                return SourceRecord(
                    location=location,
                    timestamp_ms=record.timestamp,
                    key=record.key,
                    value=record.value,
                    headers=tuple((name, value or b"") for name, value in record.headers),
                )
        raise SourceUnavailable(f"{location} could not be read within {self._stall_s:.0f} s")

    async def publish(self, plan: ReplayPlan) -> Coordinates:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=CLIENT_ID,
                acks="all",  # durable before it is recorded as replayed
                enable_idempotence=True,
                request_timeout_ms=int(self._timeout_s * 1000),
            )
            await producer.start()
            self._producer = producer
        metadata = await asyncio.wait_for(
            self._producer.send_and_wait(
                plan.topic,
                value=plan.value,
                key=plan.key,
                partition=plan.partition,
                headers=list(plan.headers),
            ),
            timeout=self._timeout_s * 2,
        )
        return Coordinates(plan.topic, metadata.partition, metadata.offset)
