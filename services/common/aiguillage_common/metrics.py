"""Prometheus metrics of a service, served at ``GET /metrics`` next to ``/health/*``.

Every metric is named ``aiguillage_…`` and carries the label ``service``; docs/operations-metrics.md
lists them with their labels and meaning, and deploy/prometheus/alerts.yml alerts on them.

Two kinds, chosen for the per-referral CPU budget:

- counters and the latency histogram are updated where the work happens, once per batch (one
  ``inc(n)`` per outcome, one ``observe`` per batch) on label children resolved when the consumer is
  built, so a record costs no label lookup;
- what describes a state (outbox backlog and age, consumer lag, stale capacity) is read when
  Prometheus scrapes, by the ``/metrics`` handler itself (one bounded probe each), never by a loop
  running between scrapes.

The domain cores know nothing of this: the composition roots hand each adapter or use case the
callback it reports to (see ``runtime.build_app`` and each service's ``main.py``).
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import prometheus_client
from aiokafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram

from aiguillage_common.codec import Problem
from aiguillage_common.kafka import OutgoingRecord
from aiguillage_common.logging import get_logger

log = get_logger("aiguillage.metrics")

# The ``_created`` series double every counter's output and nothing here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
PROBE_TIMEOUT_S = 2.0

RECORDS_CONSUMED = Counter(
    "aiguillage_records_consumed",
    "Records a consumer finished with, by outcome: handled (its effect committed), duplicate "
    "(its event was handled before: no effect), dead_lettered (set aside on the service's "
    "dead-letter topic), rejected (answered on referrals.rejected).",
    ("service", "consumer", "topic", "outcome"),
)
RECORDS_PRODUCED = Counter(
    "aiguillage_records_produced",
    "Records published to Kafka from the service's outbox, by topic.",
    ("service", "topic"),
)
BATCH_SECONDS = Histogram(
    "aiguillage_batch_handling_seconds",
    "Time to bring one consumed batch to a durable outcome (its transaction committed and its "
    "dead letters published), waits for an unavailable dependency included.",
    ("service", "consumer", "topic"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
DEAD_LETTERS = Counter(
    "aiguillage_dead_letters",
    "Records set aside on a dead-letter topic, by consumer, source topic and reason code.",
    ("service", "consumer", "topic", "reason"),
)
REJECTIONS = Counter(
    "aiguillage_rejections",
    "Inputs refused and answered on referrals.rejected (prescribers' mistakes), by reason code.",
    ("service", "consumer", "topic", "reason"),
)
OUTBOX_BACKLOG = Gauge(
    "aiguillage_outbox_backlog",
    "Outbox rows committed and not yet published to Kafka (read at scrape).",
    ("service",),
)
OUTBOX_OLDEST_AGE = Gauge(
    "aiguillage_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row; 0 when none waits (read at scrape).",
    ("service",),
)
CONSUMER_LAG = Gauge(
    "aiguillage_consumer_lag",
    "Records on a partition not yet committed by the consumer group: high watermark minus the "
    "committed offset (read at scrape, for the partitions this process is assigned).",
    ("service", "group", "topic", "partition"),
)
DELIVERY_ATTEMPTS = Counter(
    "aiguillage_delivery_attempts",
    "Notification delivery attempts, by channel and outcome: delivered, retry (a transient "
    "failure, tried again later), identity_held (waiting for intake to release the identity), "
    "failed (given up on this channel: dead-lettered, a fallback channel may take over).",
    ("service", "channel", "outcome"),
)
IDENTITY_RELEASES = Counter(
    "aiguillage_identity_releases",
    "Answers of intake's identity API: granted, or the refusal (not_holder, unknown, gone, "
    "not_yet_known, bad_signature, malformed, unavailable, internal).",
    ("service", "outcome"),
)
CAPACITY_STALE_SITES = Gauge(
    "aiguillage_capacity_stale_sites",
    "Open sites with at least one open service whose capacity was not confirmed within the "
    "freshness window (read at scrape).",
    ("service",),
)
PROBE_UP = Gauge(
    "aiguillage_metrics_probe_up",
    "1 when the scrape-time probe answered within its timeout at the last scrape, else 0 (its "
    "gauges then keep their previous values).",
    ("service", "probe"),
)

# Every family this module defines, for the test that keeps alerts and dashboards in step.
FAMILIES = (
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
    BATCH_SECONDS,
    DEAD_LETTERS,
    REJECTIONS,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    CONSUMER_LAG,
    DELIVERY_ATTEMPTS,
    IDENTITY_RELEASES,
    CAPACITY_STALE_SITES,
    PROBE_UP,
)

Probe = Callable[[], Awaitable[None]]


class ConsumerMetrics:
    """What one ``ReliableConsumer`` reports after each batch (its ``BatchObserver``)."""

    def __init__(self, service: str, consumer: str, topic: str, set_aside: str) -> None:
        labels = (service, consumer, topic)
        self._handled = RECORDS_CONSUMED.labels(*labels, "handled")
        self._duplicate = RECORDS_CONSUMED.labels(*labels, "duplicate")
        self._set_aside = RECORDS_CONSUMED.labels(*labels, set_aside)
        self._seconds = BATCH_SECONDS.labels(*labels)
        self._reasons = DEAD_LETTERS if set_aside == "dead_lettered" else REJECTIONS
        self._labels = labels

    def batch_done(
        self, records: int, duplicates: int, set_aside: Sequence[Problem], seconds: float
    ) -> None:
        self._seconds.observe(seconds)
        handled = records - duplicates - len(set_aside)
        if handled > 0:
            self._handled.inc(handled)
        if duplicates:
            self._duplicate.inc(duplicates)
        if set_aside:
            self._set_aside.inc(len(set_aside))
            for problem in set_aside:  # rare: no cache
                self._reasons.labels(*self._labels, str(problem.reason)).inc()


@dataclass
class ServiceMetrics:
    """One service's metrics: the callbacks its parts report to, and the probes run at scrape."""

    service: str
    probes: dict[str, Probe] = field(default_factory=dict)
    # Label children by their label values: a dict lookup instead of ``labels()`` (a lock and
    # a validation) on every delivery attempt, identity answer and outbox batch.
    _children: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def _child(self, family: Any, *values: str) -> Any:
        key = (family._name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(self.service, *values)
        return child

    def consumer(self, consumer: str, topic: str, set_aside: str) -> ConsumerMetrics:
        return ConsumerMetrics(self.service, consumer, topic, set_aside)

    def produced(self, records: Sequence[OutgoingRecord]) -> None:
        """The outbox relay published ``records`` (one ``inc`` per topic of the batch)."""
        for topic, count in Tally(record.topic for record in records).items():
            self._child(RECORDS_PRODUCED, topic).inc(count)

    def delivery_attempt(self, channel: str, outcome: str) -> None:
        self._child(DELIVERY_ATTEMPTS, channel, outcome).inc()

    def identity_release(self, outcome: str) -> None:
        self._child(IDENTITY_RELEASES, outcome).inc()

    def add_probe(self, name: str, probe: Probe) -> None:
        self.probes[name] = probe

    async def render(self) -> bytes:
        """Run the probes (concurrently, each bounded), then the exposition of every metric."""
        if self.probes:
            await asyncio.gather(*(self._run(name, probe) for name, probe in self.probes.items()))
        return prometheus_client.generate_latest(REGISTRY)

    async def _run(self, name: str, probe: Probe) -> None:
        up = PROBE_UP.labels(self.service, name)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await probe()
        except Exception as error:
            up.set(0)
            log.debug("metrics.probe_failed", probe=name, error_type=type(error).__name__)
        else:
            up.set(1)


async def render_idle() -> bytes:
    """Before a service's app exists (waiting for its infrastructure): process metrics only."""
    return prometheus_client.generate_latest(REGISTRY)


# One statement, on the partial index of unpublished rows: cheap whatever the outbox's size.
_OUTBOX_SQL = (
    "SELECT count(*) AS backlog,"
    " coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age"
    " FROM outbox WHERE published_at IS NULL"
)


def outbox_probe(service: str, pool: Callable[[], asyncpg.Pool | None]) -> Probe:
    async def probe() -> None:
        current = pool()
        if current is None:
            raise ConnectionError("no pool yet")
        row = await current.fetchrow(_OUTBOX_SQL)
        assert row is not None
        OUTBOX_BACKLOG.labels(service).set(row["backlog"])
        OUTBOX_OLDEST_AGE.labels(service).set(float(row["age"]))

    return probe


@dataclass
class LagProbe:
    """Lag of the partitions this process's consumers are assigned, from their own clients:
    the high watermark of the last fetch (no request) minus the group's committed offset (one
    request per partition, concurrently), or the fetch position before any commit."""

    service: str
    consumers: list[tuple[str, Any]] = field(default_factory=list)  # (group, subscriber)
    _shown: set[tuple[str, str, str, str]] = field(default_factory=set)

    def watch(self, group: str, subscriber: Any) -> None:
        self.consumers.append((group, subscriber))

    async def __call__(self) -> None:
        found = await asyncio.gather(
            *(self._lags(group, subscriber) for group, subscriber in self.consumers)
        )
        shown: set[tuple[str, str, str, str]] = set()
        for lags in found:
            for labels, lag in lags:
                CONSUMER_LAG.labels(*labels).set(lag)
                shown.add(labels)
        for gone in self._shown - shown:  # partitions revoked since: no stale series
            CONSUMER_LAG.remove(*gone)
        self._shown = shown

    async def _lags(
        self, group: str, subscriber: Any
    ) -> list[tuple[tuple[str, str, str, str], int]]:
        client = getattr(subscriber, "consumer", None)  # None until the subscriber started
        if client is None:
            return []
        partitions: Iterable[TopicPartition] = sorted(client.assignment())
        rows = []
        for partition in partitions:
            high = client.highwater(partition)
            if high is None:  # not fetched yet
                continue
            rows.append((partition, high))
        committed = await asyncio.gather(*(client.committed(tp) for tp, _ in rows))
        lags = []
        for (partition, high), done in zip(rows, committed, strict=True):
            if done is None:
                done = await client.position(partition)
            labels = (self.service, group, partition.topic, str(partition.partition))
            lags.append((labels, max(high - done, 0)))
        return lags


def stale_capacity_probe(service: str, count: Callable[[], Awaitable[int]]) -> Probe:
    """Routing's sites whose capacity went stale (for the capacity-stale alert); ``count`` is
    routing's own query (routing.adapters.postgres.count_stale_sites)."""

    async def probe() -> None:
        CAPACITY_STALE_SITES.labels(service).set(await count())

    return probe
