"""Session infrastructure and per-test isolation on the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from aiguillage_common.migrations.cli import SERVICES, WEB, migrate_services
from aiguillage_common.pool import create_pool
from aiguillage_common.provisioning import provision, unprovision
from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_cancellation
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from tests.support import infra
from tests.support.kafka_io import Kafka
from tests.support.services import PIPELINE, ServiceProcess, service_env
from tests.support.waiting import eventually

# Every process a test may run, each with its own schema per test: the pipeline and the portal.
MIGRATED = {**SERVICES, **WEB}
WEBHOOK_SECRET = "s3cret-for-tests"  # what the test receivers and notifications share


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    """A real SMTP server on an OS-chosen port, in the test's event loop."""
    sink = SmtpSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    """A real HTTP receiver for centres' webhooks, checking signatures with WEBHOOK_SECRET."""
    receiver = WebhookReceiver(WEBHOOK_SECRET.encode())
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="session")
def endpoints() -> Iterator[infra.Endpoints]:
    try:
        found, containers = infra.resolve()
    except Exception as error:  # never skip: missing infrastructure fails the run
        pytest.fail(f"Kafka/PostgreSQL unavailable: {error}", pytrace=False)
    yield found
    for container in containers:
        container.stop()  # type: ignore[attr-defined]


@dataclass
class Isolated:
    """One test's private world: its own topics (prefix) and its own schemas (suffix)."""

    endpoints: infra.Endpoints
    prefix: str
    suffix: str
    kafka: Kafka
    db: asyncpg.Pool
    tmp: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def topic(self, topic: topics.Topic) -> str:
        return f"{self.prefix}{topic.name}"

    def schema(self, service: str) -> str:
        return MIGRATED[service][1] + self.suffix

    def service(self, name: str, **extra: str) -> ServiceProcess:
        process = ServiceProcess(
            name,
            service_env(
                name,
                self.endpoints.kafka_bootstrap_servers,
                self.endpoints.database_url,
                self.prefix,
                self.suffix,
                MIGRATED[name][1],
                extra,
            ),
            self.tmp / name,
        )
        self.processes.append(process)
        return process

    async def start_all(self, *names: str) -> list[ServiceProcess]:
        started = [self.service(name) for name in names or PIPELINE]
        for process in started:
            process.start()
        await wait_started(*started)
        return started

    async def cancel(self, referral: ReferralSubmitted) -> None:
        """The prescriber cancels ``referral``; returns once intake has recorded it."""
        await self.kafka.send_event(self.topic(topics.INTAKE), make_cancellation(referral))
        table = f"{self.schema('referral-intake')}.referrals"
        await eventually(
            lambda: self.db.fetchval(
                f"SELECT status FROM {table} WHERE referral_id = $1", referral.subject
            ),
            lambda status: status == "cancelled",
            timeout_s=60,
            what=f"{referral.subject} cancelled",
        )

    async def count(self, sql: str, *args: object) -> int:
        value = await self.db.fetchval(sql, *args)
        return int(value or 0)

    @asynccontextmanager
    async def schema_pool(
        self, schema: str, max_size: int = 1, application_name: str | None = None
    ) -> AsyncIterator[asyncpg.Pool]:
        """A pool on ``schema`` made as the services make theirs (``aiguillage_common.pool``),
        so their adapters use it as in production; ``application_name`` names its sessions."""
        settings = {"search_path": schema}
        if application_name is not None:
            settings["application_name"] = application_name
        pool = await create_pool(
            self.endpoints.database_url,
            min_size=1,
            max_size=max_size,
            server_settings=settings,
        )
        try:
            yield pool
        finally:
            await pool.close()


async def wait_started(*processes: ServiceProcess, timeout_s: float = 90.0) -> None:
    """Until each process's own /health/ready answers 200 (this run's, not an earlier one's)."""

    async def ready() -> list[str]:
        for process in processes:
            if not process.alive():
                raise AssertionError(f"{process.name} exited:\n{process.logs()[-4000:]}")
        return [p.name for p in processes if not await p.ready()]

    await eventually(ready, lambda pending: not pending, timeout_s, 0.1, "services to be ready")


@pytest.fixture
async def isolated(endpoints: infra.Endpoints, tmp_path: Path) -> AsyncIterator[Isolated]:
    token = uuid.uuid4().hex[:8]
    prefix, suffix = f"t{token}.", f"_t{token}"
    await provision(endpoints.kafka_bootstrap_servers, prefix=prefix)
    await migrate_services(endpoints.database_url, list(MIGRATED), suffix)
    kafka = Kafka(endpoints.kafka_bootstrap_servers)
    await kafka.start()
    pool = await asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=4)
    assert pool is not None
    world = Isolated(endpoints, prefix, suffix, kafka, pool, tmp_path)
    try:
        yield world
    finally:
        for process in world.processes:
            process.kill()
        await kafka.stop()
        if not os.environ.get("AIGUILLAGE_KEEP_TEST_TOPICS"):
            await unprovision(endpoints.kafka_bootstrap_servers, prefix)
        if not os.environ.get("AIGUILLAGE_KEEP_TEST_SCHEMAS"):
            async with pool.acquire() as connection:
                for service in MIGRATED:
                    await connection.execute(
                        f"DROP SCHEMA IF EXISTS {world.schema(service)} CASCADE"
                    )
        await asyncio.wait_for(pool.close(), 10)
