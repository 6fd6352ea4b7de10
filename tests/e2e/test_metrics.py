"""Each service's ``/metrics``, scraped after a batch of referrals, counts that batch.

The three services run as real processes on the real Kafka and PostgreSQL, with the centres'
webhook receiver and SMTP sink of ``aiguillage_demo.peers`` and intake's identity API on. A batch of
referrals goes through, plus one bad record on each of three topics (a refused submission, an
unreadable accepted referral, an unreadable routing decision). The metrics must then say what the
broker and the databases say happened: records consumed per topic and outcome, records produced
per topic, dead letters and rejections by reason, deliveries by channel, identity releases by
outcome; and the state read at scrape (outbox backlog, lag, stale capacity) must be there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from routing.adapters.postgres import count_stale_sites
from tests.conftest import Isolated
from tests.e2e.test_identity_release import start_notifications_asking, start_with_identity_api
from tests.integration.test_notification_delivery import deliveries
from tests.support.services import ServiceProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

REFERRALS = 3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(process: ServiceProcess) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{process.health_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


@pytest.fixture
async def sizes(isolated: Isolated) -> AsyncIterator[Callable[[topics.Topic], Any]]:
    """How many records a topic of this test holds (its end offsets: nothing is deleted)."""
    client = AIOKafkaConsumer(bootstrap_servers=isolated.endpoints.kafka_bootstrap_servers)
    await client.start()

    async def size(topic: topics.Topic) -> int:
        name = isolated.topic(topic)
        partitions = [TopicPartition(name, p) for p in await isolated.kafka.partitions(name)]
        return sum((await client.end_offsets(partitions)).values())

    yield size
    await client.stop()


async def test_each_service_s_metrics_count_the_batch_it_handled(
    isolated: Isolated,
    hooks: WebhookReceiver,
    smtp: SmtpSink,
    sizes: Callable[[topics.Topic], Any],
) -> None:
    intake, routing, port = await start_with_identity_api(isolated)
    notifications = await start_notifications_asking(isolated, hooks, smtp, port)

    referrals = [
        make_referral(i, referral_id=f"ref-metrics{i}{isolated.suffix}") for i in range(REFERRALS)
    ]
    for referral in referrals:
        await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    # One bad record per hop: intake refuses an unsigned submission (referrals.rejected); routing
    # and notifications dead-letter an unreadable accepted referral; intake and notifications an
    # unreadable routing decision.
    for topic in (topics.INTAKE, topics.ACCEPTED, topics.ROUTED):
        await isolated.kafka.send_raw(isolated.topic(topic), b"{not json", key=b"ref-garbage")

    async def all_delivered() -> bool:
        for referral in referrals:
            rows = await deliveries(isolated, referral.subject)
            if not rows or any(r["state"] != "delivered" for r in rows):
                return False
        return True

    await eventually(
        all_delivered, lambda done: done, timeout_s=180, what="every notification delivered"
    )

    intake_schema = isolated.schema("referral-intake")
    notifications_schema = isolated.schema("notifications")

    async def mismatches() -> list[str]:
        """What the metrics say that the broker and the databases do not (empty: all agree)."""
        found: list[str] = []

        def expect(what: str, metric: float, truth: float) -> None:
            if metric != truth:
                found.append(f"{what}: metrics {metric}, truth {truth}")

        scraped = {p.name: await scrape(p) for p in (intake, routing, notifications)}
        consumed = "aiguillage_records_consumed_total"
        # Every record on an input topic, consumed once, whatever its outcome.
        for service, inputs in (
            ("referral-intake", (topics.INTAKE, topics.ROUTED)),
            ("routing", (topics.ACCEPTED,)),
            (
                "notifications",
                (topics.ROUTED, topics.ACCEPTED, topics.REJECTED),
            ),
        ):
            for topic in inputs:
                expect(
                    f"{service} consumed {topic.name}",
                    total(scraped[service], consumed, topic=isolated.topic(topic)),
                    await sizes(topic),
                )
        # What the outbox published, per topic (the bad records were not published by anyone).
        for service, topic in (
            ("referral-intake", topics.ACCEPTED),
            ("routing", topics.ROUTED),
            ("notifications", topics.NOTIFICATIONS_OUTBOUND),
        ):
            expect(
                f"{service} produced {topic.name}",
                total(
                    scraped[service],
                    "aiguillage_records_produced_total",
                    topic=isolated.topic(topic),
                ),
                await sizes(topic) - (topic is not topics.NOTIFICATIONS_OUTBOUND),
            )
        # Dead letters and rejections, against the records on the dead-letter topics.
        for service, topic in (
            ("referral-intake", topics.INTAKE_DEAD_LETTER),
            ("routing", topics.ROUTING_DEAD_LETTER),
            ("notifications", topics.NOTIFICATIONS_DEAD_LETTER),
        ):
            expect(
                f"{service} dead letters",
                total(scraped[service], "aiguillage_dead_letters_total"),
                await sizes(topic),
            )
        expect(
            "intake rejections",
            total(scraped["referral-intake"], "aiguillage_rejections_total"),
            await sizes(topics.REJECTED),
        )
        # Delivery attempts by channel and outcome, against the delivery log.
        for row in await isolated.db.fetch(
            f"SELECT channel, count(*) FILTER (WHERE outcome = 'delivered') AS delivered"
            f" FROM {notifications_schema}.delivery_attempts a"
            f" JOIN {notifications_schema}.deliveries d USING (delivery_id) GROUP BY channel"
        ):
            expect(
                f"{row['channel']} delivered",
                total(
                    scraped["notifications"],
                    "aiguillage_delivery_attempts_total",
                    channel=row["channel"],
                    outcome="delivered",
                ),
                row["delivered"],
            )
        # Identity releases by outcome, against intake's audit of them.
        for row in await isolated.db.fetch(
            f"SELECT outcome, count(*) AS n FROM {intake_schema}.identity_releases GROUP BY 1"
        ):
            expect(
                f"identity releases {row['outcome']}",
                total(
                    scraped["referral-intake"],
                    "aiguillage_identity_releases_total",
                    outcome=row["outcome"],
                ),
                row["n"],
            )
        for service, samples in scraped.items():
            expect(f"{service} outbox backlog", total(samples, "aiguillage_outbox_backlog"), 0)
            expect(f"{service} consumer lag", total(samples, "aiguillage_consumer_lag"), 0)
        return found

    found = await eventually(
        mismatches, lambda found: not found, timeout_s=60, interval_s=0.5, what="metrics"
    )
    assert found == []

    scraped = {p.name: await scrape(p) for p in (intake, routing, notifications)}
    intake_metrics, routing_metrics, notes = (
        scraped["referral-intake"],
        scraped["routing"],
        scraped["notifications"],
    )
    consumed = "aiguillage_records_consumed_total"
    # The batch itself, in numbers a reader can check against the test's input.
    intake_topic, accepted = isolated.topic(topics.INTAKE), isolated.topic(topics.ACCEPTED)
    assert total(intake_metrics, consumed, topic=intake_topic, outcome="handled") == REFERRALS
    assert total(intake_metrics, consumed, topic=intake_topic, outcome="rejected") == 1
    assert total(intake_metrics, "aiguillage_records_produced_total", topic=accepted) == REFERRALS
    assert total(routing_metrics, consumed, topic=accepted, outcome="handled") == REFERRALS
    assert total(routing_metrics, consumed, topic=accepted, outcome="dead_lettered") == 1
    assert total(notes, consumed, outcome="dead_lettered") == 2
    # The reason code of the dead letter is the one on the dead-letter topic.
    [letter] = await isolated.kafka.read_all(isolated.topic(topics.ROUTING_DEAD_LETTER))
    reason = json.loads(letter.value)["data"]["reason"]
    assert total(routing_metrics, "aiguillage_dead_letters_total", reason=reason) == 1
    # Each offer's webhook carried the identity: at least one release granted per referral.
    granted = total(intake_metrics, "aiguillage_identity_releases_total", outcome="granted")
    assert granted >= REFERRALS
    assert total(notes, "aiguillage_delivery_attempts_total", outcome="delivered") > 0
    # One latency observation per batch: at least one, at most one per record.
    batches = total(routing_metrics, "aiguillage_batch_handling_seconds_count", topic=accepted)
    assert 1 <= batches <= REFERRALS + 1
    # Read at scrape: lag per assigned partition, outbox age, stale capacity, probes answering.
    lag = series(intake_metrics, "aiguillage_consumer_lag")
    assert {row["topic"] for row in lag} >= {intake_topic, isolated.topic(topics.ROUTED)}
    for samples in scraped.values():
        assert total(samples, "aiguillage_outbox_oldest_age_seconds") == 0
        assert all(
            value == 1
            for (name, _), value in samples.items()
            if name == "aiguillage_metrics_probe_up"
        )
        assert total(samples, "process_cpu_seconds_total") > 0
    async with isolated.db.acquire() as connection:
        await connection.execute(f"SET search_path TO {isolated.schema('routing')}")
        stale = await count_stale_sites(connection, 30 * 86_400.0)  # routing's default window
        await connection.execute("RESET search_path")
    assert series(routing_metrics, "aiguillage_capacity_stale_sites")
    assert total(routing_metrics, "aiguillage_capacity_stale_sites") == stale
