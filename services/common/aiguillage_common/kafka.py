"""Kafka adapters shared by the services: a durable producer, event headers, and a tolerant parser.

Publishing goes through our own aiokafka producer rather than FastStream's so that the outbox relay
can pipeline a batch and wait for every acknowledgement before marking rows as sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from aiguillage_schemas.envelope import Envelope

BAD_HEADERS_MARKER = "x-aiguillage-bad-headers"


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str]


def event_headers(event: Envelope) -> dict[str, str]:
    """Routing metadata in headers, so consumers and operators can filter without parsing bodies."""
    return {
        "content-type": "application/json",
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "schema_version": str(event.schema_version),
        "correlation_id": str(event.correlation_id),
        "source": event.source,
    }


MAX_BATCH_BYTES = 512 * 1024


class KafkaProducerAdapter:
    """An idempotent, acks=all producer: a sent record is on every in-sync replica."""

    def __init__(self, bootstrap_servers: str, client_id: str, timeout_s: float = 15.0) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._started: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds a producer to the running loop, so it is created here, not in __init__.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            # aiokafka sends one batch per partition per request and makes send() wait while a
            # partition's batch is full: at the 16 KiB default a relay batch of a few hundred
            # records on one topic went out as a dozen sequential round trips. Under the broker's
            # 1 MiB message.max.bytes.
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await producer.start()
        except BaseException:
            # A producer that failed to bootstrap still holds a client and tasks: close it, so
            # that waiting for the broker and trying again leaks nothing.
            await producer.stop()
            raise
        self._started = producer

    @property
    def started(self) -> bool:
        return self._started is not None

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when a broker answers a metadata request now (readiness probe)."""
        if self._started is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._started.client.fetch_all_metadata()
        except Exception:
            return False
        return True

    async def stop(self) -> None:
        if self._started is not None:
            await self._started.stop()
            self._started = None

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise RuntimeError("the producer is not started")
        return self._started

    async def publish(self, record: OutgoingRecord) -> None:
        await self.publish_batch([record])

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> None:
        """Send every record, then wait for all acknowledgements; raises if any failed."""
        deliveries = [
            await self._producer.send(
                record.topic,
                value=record.value,
                key=record.key.encode("utf-8"),
                headers=[(k, v.encode("utf-8")) for k, v in record.headers.items()],
            )
            for record in records
        ]
        await asyncio.wait_for(asyncio.gather(*deliveries), timeout=self._timeout_s)


async def tolerant_parser(
    records: tuple[ConsumerRecord[Any, Any], ...], original: Callable[[Any], Awaitable[Any]]
) -> Any:
    """FastStream's parser decodes headers as UTF-8 and raises before our handler otherwise.

    A producer that sends a binary header must not stall the partition: undecodable headers are
    dropped and the record flagged, and the handler dead-letters it with a reason.
    """
    return await original(tuple(_with_utf8_headers(record) for record in records))


def _with_utf8_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    if all(_is_utf8(value) for _, value in record.headers):
        return record
    headers = [(k, v) for k, v in record.headers if _is_utf8(v)]
    headers.append((BAD_HEADERS_MARKER, b"1"))
    return dataclasses.replace(record, headers=headers)


def _is_utf8(value: bytes | None) -> bool:
    try:
        (value or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
