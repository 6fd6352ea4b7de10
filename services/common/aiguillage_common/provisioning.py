"""Create every Kafka topic Aiguillage uses, with its partition count (replication factor 1).

Idempotent: existing topics are kept; an existing topic with fewer partitions than required is an
error (Kafka cannot shrink a topic and growing one silently reshuffles keys, so a human decides).
After creation it waits until every partition has a leader, so producers can publish at once.

    python -m aiguillage_common.provisioning [--bootstrap HOST:PORT] [--prefix P] [--timeout S]

Tests that want an isolated topic set call ``await provision(bootstrap, prefix="t-1234-")``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from aiguillage_schemas.topics import ALL_TOPICS, Topic

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
BOOTSTRAP_ENV = "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS"
REPLICATION_FACTOR = 1

# Kafka error codes handled here (see org.apache.kafka.common.protocol.Errors).
_NONE = 0
_UNKNOWN_TOPIC_OR_PARTITION = 3
_LEADER_NOT_AVAILABLE = 5
_TOPIC_ALREADY_EXISTS = 36


class ProvisioningError(RuntimeError):
    """A topic cannot be brought to the required shape, or the broker does not answer."""


async def _start_admin(bootstrap: str, deadline: float) -> AIOKafkaAdminClient:
    """Connect, retrying until ``deadline``: a broker that is still booting refuses connections."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="aiguillage-provision-topics",
            request_timeout_ms=15_000,
        )
        try:
            await admin.start()
        except KafkaError as exc:  # KafkaConnectionError while the broker boots
            last = exc
            await admin.close()
            await asyncio.sleep(0.5)
            continue
        return admin
    raise ProvisioningError(f"Kafka at {bootstrap} did not answer in time: {last!r}")


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists (absent topics are left out)."""
    described: list[dict[str, Any]] = await admin.describe_topics(names)
    counts: dict[str, int] = {}
    for topic in described:
        if topic["error_code"] == _NONE:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _leaderless(admin: AIOKafkaAdminClient, names: list[str]) -> list[str]:
    """Names of topics that are unknown yet or have a partition without a leader."""
    described: list[dict[str, Any]] = await admin.describe_topics(names)
    seen = {t["topic"] for t in described}
    pending = [n for n in names if n not in seen]
    for topic in described:
        if topic["error_code"] != _NONE or any(
            p["error_code"] != _NONE or p["leader"] < 0 for p in topic["partitions"]
        ):
            pending.append(topic["topic"])
    return pending


def _check_partitions(wanted: Mapping[str, int], existing: Mapping[str, int]) -> None:
    too_small = {
        name: (existing[name], partitions)
        for name, partitions in wanted.items()
        if name in existing and existing[name] < partitions
    }
    if too_small:
        detail = ", ".join(f"{n} has {have} < {need}" for n, (have, need) in too_small.items())
        raise ProvisioningError(
            f"existing topics have fewer partitions than required: {detail}. "
            "Grow them deliberately (kafka-topics --alter --partitions) or recreate them."
        )


async def provision(
    bootstrap: str,
    topics: Iterable[Topic] = ALL_TOPICS,
    prefix: str = "",
    *,
    wait_seconds: float = 60.0,
) -> None:
    """Create the missing topics (``prefix`` + name) and wait until all of them have leaders.

    Raises ``ProvisioningError`` if an existing topic has fewer partitions than required, if the
    broker refuses a creation, or if the broker does not answer within ``wait_seconds``.
    """
    wanted: dict[str, int] = {prefix + t.name: t.partitions for t in topics}
    if not wanted:
        return
    names = sorted(wanted)
    deadline = time.monotonic() + wait_seconds
    admin = await _start_admin(bootstrap, deadline)
    try:
        existing = await _partition_counts(admin, names)
        _check_partitions(wanted, existing)
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, wanted[n], REPLICATION_FACTOR) for n in missing]
            )
            failures: list[str] = []
            raced: list[str] = []
            for err in response.to_object()["topic_errors"]:
                code = err["error_code"]
                if code == _TOPIC_ALREADY_EXISTS:  # created concurrently by someone else
                    raced.append(err["topic"])
                elif code != _NONE:
                    failures.append(f"{err['topic']}: code {code} {err.get('error_message')}")
            if failures:
                raise ProvisioningError("topic creation failed: " + "; ".join(failures))
            if raced:
                _check_partitions(wanted, await _partition_counts(admin, raced))
        pending = await _leaderless(admin, names)
        while pending:
            if time.monotonic() >= deadline:
                raise ProvisioningError(f"topics still without leaders: {', '.join(pending)}")
            await asyncio.sleep(0.2)
            pending = await _leaderless(admin, pending)
    finally:
        await admin.close()


async def unprovision(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a test's or a benchmark's private
    set); returns the names deleted. A broker keeps files open for every partition, so isolated
    sets that are never deleted end by exhausting its file descriptors."""
    if not prefix:
        raise ProvisioningError("refusing to delete topics without a prefix")
    admin = await _start_admin(bootstrap, time.monotonic() + 30)
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return names


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP,
        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument("--prefix", default="", help="prepended to every topic name")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the broker (default 60)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        asyncio.run(provision(args.bootstrap, prefix=args.prefix, wait_seconds=args.timeout))
    except (ProvisioningError, KafkaConnectionError, KafkaError) as exc:
        print(f"provisioning: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(f"{args.prefix}{t.name}({t.partitions})" for t in ALL_TOPICS)
    print(f"provisioning: ok on {args.bootstrap}: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
