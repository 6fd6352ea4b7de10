"""Talk to the real broker from tests: publish raw records, read a topic from the beginning."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aiguillage_demo.signing import centre_topic_key, sender_of, sign_as, sign_with
from aiguillage_schemas.envelope import Envelope


@dataclass(frozen=True)
class Received:
    key: str | None
    value: bytes
    headers: dict[str, str]
    partition: int
    offset: int

    def json(self) -> Any:
        return json.loads(self.value)


class Kafka:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        signed_by: str | None = None,
        signing_key: str | None = None,
    ) -> None:
        """``signed_by``: a demo prescriber id whose test secret signs ``value`` as it is;
        ``signing_key``: a demo key id (a centre's or the portal's) that does."""
        assert self._producer is not None
        headers = list(headers or [])
        if signed_by is not None:
            headers += [(k, v.encode()) for k, v in sign_as(signed_by, value or b"").items()]
        if signing_key is not None:
            headers += [(k, v.encode()) for k, v in sign_with(signing_key, value or b"").items()]
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def send_together(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes]], partition: int = 0
    ) -> None:
        """Publish ``records`` (key, value) as one record batch on ``partition``: a consumer
        fetches them together and handles them as one batch, however loaded the machine (sent
        one by one, they may reach a running consumer in several fetches)."""
        assert self._producer is not None
        batch = self._producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise AssertionError("the records do not fit in one record batch")
        delivered = await self._producer.send_batch(batch, topic, partition=partition)
        await delivered

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """The offsets ``group`` has committed on ``topic``, by partition (none: absent)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }

    async def send_event(self, topic: str, event: Envelope) -> None:
        """Prescribers' events (submission, amendment, cancellation) and centres' (answers,
        path reports, directory updates) go signed, as in production."""
        await self.send_raw(
            topic,
            event.model_dump_json().encode(),
            key=event.subject.encode(),
            headers=[("correlation_id", str(event.correlation_id).encode())],
            signed_by=sender_of(event),
            signing_key=centre_topic_key(event),
        )

    async def partitions(self, topic: str) -> list[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] != 0:
            raise AssertionError(f"topic {topic} is not readable: {described['error_code']}")
        return sorted(p["partition"] for p in described["partitions"])

    async def read_all(self, topic: str, idle_s: float = 0.5) -> list[Received]:
        """Every record currently on ``topic``, read without a consumer group."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
        )
        await consumer.start()
        records: list[Received] = []
        try:
            partitions = [TopicPartition(topic, p) for p in await self.partitions(topic)]
            consumer.assign(partitions)
            end = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
                for items in batch.values():
                    records.extend(
                        Received(
                            item.key.decode() if item.key else None,
                            item.value or b"",
                            {k: v.decode(errors="replace") for k, v in item.headers},
                            item.partition,
                            item.offset,
                        )
                        for item in items
                    )
        finally:
            await consumer.stop()
        return records
