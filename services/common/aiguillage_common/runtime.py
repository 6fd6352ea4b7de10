"""The process around a service: pool, producer, outbox relay, FastStream app, clean shutdown.

Shutdown order matters: on SIGTERM FastStream stops the subscribers and waits (``graceful_timeout``)
for the in-flight message to finish and commit; only then are the relay, the producer and the pool
closed, so the last transaction's outbox rows are still relayed when possible (and on the next start
otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from aiguillage_common.consumer import (
    DeadLetterSink,
    Process,
    ReliableConsumer,
    RetryPolicy,
    subscribe,
    where,
)
from aiguillage_common.dead_letter import DeadLetterPublisher
from aiguillage_common.kafka import KafkaProducerAdapter
from aiguillage_common.logging import configure_logging, get_logger
from aiguillage_common.outbox import OutboxRelay
from aiguillage_common.settings import ServiceSettings


class BackgroundWorker(Protocol):
    """A service's own loop (e.g. a timer), started after the pool and relay, stopped before."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """What a service's handlers reach at run time; filled in at startup."""

    settings: ServiceSettings
    producer: KafkaProducerAdapter
    pool: asyncpg.Pool | None = None
    relay: OutboxRelay | None = None
    workers: list[BackgroundWorker] = field(default_factory=list)

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the database pool is not open yet")
        return self.pool

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(s.retry_max_attempts, s.retry_base_delay_s, s.retry_max_delay_s)

    def dead_letters(self, topic: str, consumer: str) -> DeadLetterPublisher:
        return DeadLetterPublisher(self.producer, topic, consumer)

    def consume(
        self,
        broker: KafkaBroker,
        name: str,
        process: Process,
        dead_letter: DeadLetterSink,
        *,
        topic: str,
        group_id: str,
        documented_payload: Any,
        description: str,
    ) -> None:
        """Subscribe ``process`` with the service's retry policy and handler timeout: manual
        commits after durable outcomes, dead letters with a reason (see consumer.py)."""
        consumer = ReliableConsumer(
            name, process, dead_letter, self.retry_policy, self.settings.handler_timeout_s
        )
        subscribe(
            broker,
            consumer,
            topic=topic,
            group_id=group_id,
            documented_payload=documented_payload,
            description=description,
        )


async def open_pool(settings: ServiceSettings, application: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_s,
        timeout=settings.db_command_timeout_s,
        server_settings={"search_path": settings.db_schema, "application_name": application},
    )
    assert pool is not None
    return pool


def build_app(
    service: str,
    settings: ServiceSettings,
    register: Callable[[KafkaBroker, Runtime], None],
    description: str,
    workers: Callable[[Runtime], Sequence[BackgroundWorker]] | None = None,
) -> FastStream:
    """Compose a service: ``register`` attaches its subscribers and documents its publishers."""
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"aiguillage-{service}",
        apply_types=False,
        graceful_timeout=settings.graceful_timeout_s,
        logger=logging.getLogger(f"aiguillage.faststream.{service}"),
        # FastStream's own "Received"/"Processed" lines carry no referral id; ours do.
        log_level=logging.DEBUG,
        description=description,
    )
    runtime = Runtime(
        settings=settings,
        producer=KafkaProducerAdapter(settings.kafka_bootstrap_servers, f"aiguillage-{service}"),
    )
    register(broker, runtime)
    log = get_logger(f"aiguillage.{service}")

    async def start_resources() -> None:
        runtime.pool = await open_pool(settings, f"aiguillage-{service}")
        await runtime.producer.start()
        runtime.relay = OutboxRelay(
            runtime.pool,
            runtime.producer,
            settings.db_schema,
            settings.outbox_batch_size,
            settings.outbox_poll_interval_s,
        )
        await runtime.relay.start()
        for worker in workers(runtime) if workers else ():
            await worker.start()
            runtime.workers.append(worker)
        log.info("service.resources_ready", schema=settings.db_schema)

    async def announce() -> None:
        log.info("service.started", kafka=settings.kafka_bootstrap_servers)

    async def close_resources() -> None:
        for worker in reversed(runtime.workers):
            await worker.stop()
        if runtime.relay is not None:
            await runtime.relay.stop(settings.graceful_timeout_s)
        await runtime.producer.stop()
        if runtime.pool is not None:
            await asyncio.wait_for(runtime.pool.close(), settings.graceful_timeout_s)
        log.info("service.stopped")

    return FastStream(
        broker,
        logger=logging.getLogger(f"aiguillage.faststream.app.{service}"),
        on_startup=[start_resources],
        after_startup=[announce],
        after_shutdown=[close_resources],
        specification=AsyncAPI(
            title=f"Aiguillage {service}", version="1.0.0", description=description
        ),
    )


def run_service(
    service: str, settings: ServiceSettings, app_factory: Callable[[], FastStream]
) -> None:
    configure_logging(service, settings.log_level)

    async def main() -> None:
        await app_factory().run()

    try:
        asyncio.run(main())
    except Exception as error:
        # One JSON line an operator can alert on, instead of a bare traceback on stderr.
        get_logger(f"aiguillage.{service}").critical(
            "service.crashed", error_type=type(error).__name__, at=where(error)
        )
        raise SystemExit(1) from None
