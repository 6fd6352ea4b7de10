"""CPU the Prometheus instrumentation adds per referral (aiguillage_common.metrics), in-process.

    .venv/bin/python bench/metrics_cost.py [--rounds N]

One referral, end to end, reaches these hooks (counted from a run of tests/e2e/test_metrics.py):
about five consumed batches (intake: the submission and routing's decision; routing: the accepted
referral; notifications: the accepted referral and the decision), three outbox batches (intake,
routing, notifications' issued notices), four delivery attempts and one identity release. At low
rates every batch holds one record (the worst case per referral, measured first); under a burst
a batch holds up to 200, and the per-batch cost is shared by its records. Also prints what one
scrape costs to render (the probes' SQL and Kafka round trips excluded: they run on the scrape, not
per referral).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiguillage_common.codec import Problem
from aiguillage_common.kafka import OutgoingRecord
from aiguillage_common.metrics import ServiceMetrics

BATCHES, OUTBOX_BATCHES, DELIVERIES, RELEASES = 5, 3, 4, 1
NO_PROBLEMS: list[Problem] = []


def per_referral_us(rounds: int, batch: int) -> float:
    """Microseconds of instrumentation per referral when batches hold ``batch`` records."""
    metrics = ServiceMetrics("bench")
    consumers = [metrics.consumer(f"c{i}", f"topic{i}", "dead_lettered") for i in range(BATCHES)]
    outgoing = [
        [OutgoingRecord(topic=f"out{i}", key="k", value=b"", headers={})] * batch
        for i in range(OUTBOX_BATCHES)
    ]
    started = time.process_time()
    for _ in range(rounds):
        for consumer in consumers:
            consumer.batch_done(batch, 0, NO_PROBLEMS, 0.003)
        for records in outgoing:
            metrics.produced(records)
    per_batch_part = (time.process_time() - started) / rounds / batch
    started = time.process_time()
    for _ in range(rounds):
        for _ in range(DELIVERIES):
            metrics.delivery_attempt("webhook", "delivered")
        for _ in range(RELEASES):
            metrics.identity_release("granted")
    per_referral_part = (time.process_time() - started) / rounds
    return (per_batch_part + per_referral_part) * 1e6


def render_ms(rounds: int) -> float:
    metrics = ServiceMetrics("bench")
    started = time.process_time()
    for _ in range(rounds):
        asyncio.run(metrics.render())
    return (time.process_time() - started) / rounds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    for batch in (1, 20, 200):
        cost = per_referral_us(max(rounds // batch, 100), batch)
        print(f"batches of {batch:>3} records: {cost:6.2f} µs of CPU per referral")
    print(f"one scrape rendered: {render_ms(200):.2f} ms of CPU (probes excluded)")


if __name__ == "__main__":
    main()
