"""Create every Kafka topic Aiguillage uses, with its partition count (replication factor 1) and
its topic-level configs (e.g. ``message.timestamp.type=LogAppendTime`` on ``referrals.intake``).

Idempotent: existing topics are kept; an existing topic with fewer partitions than required is an
error (Kafka cannot shrink a topic and growing one silently reshuffles keys, so a human decides).
An existing topic whose configs differ from the required ones is altered, one key at a time
(incremental alter configs), so the other configs an operator set on it (``retention.ms``…) stay.
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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

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


class ProvisioningTimeout(ProvisioningError, TimeoutError):
    """The broker did not answer, or topics got no leader, in time: waiting may fix it (a
    service provisioning at start treats it as transient and waits)."""


# IncrementalAlterConfigs (KIP-339, API key 44), which aiokafka 0.14 does not offer. Its
# ``alter_configs`` is the older AlterConfigs, which *replaces* every dynamic config of the topic:
# setting one key would silently drop an operator's ``retention.ms`` on referrals.intake.
_INCREMENTAL_ALTER_CONFIGS = 44
_OP_SET = 0


class _IncAlterConfigsResponseV0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = _INCREMENTAL_ALTER_CONFIGS
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
            ),
        ),
    )


class _IncAlterConfigsRequestV0(RequestStruct):  # type: ignore[misc]
    API_KEY = _INCREMENTAL_ALTER_CONFIGS
    API_VERSION = 0
    RESPONSE_TYPE = _IncAlterConfigsResponseV0
    SCHEMA = Schema(
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                (
                    "configs",
                    Array(
                        ("name", String("utf-8")),
                        ("config_operation", Int8),
                        ("value", String("utf-8")),
                    ),
                ),
            ),
        ),
        ("validate_only", Boolean),
    )


class _IncAlterConfigsRequest(Request[_IncAlterConfigsRequestV0]):  # type: ignore[misc]
    API_KEY = _INCREMENTAL_ALTER_CONFIGS

    def __init__(self, topic_configs: Mapping[str, Mapping[str, str]]) -> None:
        self._resources = [
            (
                int(ConfigResourceType.TOPIC),
                topic,
                [(key, _OP_SET, value) for key, value in configs.items()],
            )
            for topic, configs in topic_configs.items()
        ]

    def build(
        self, request_struct_class: type[_IncAlterConfigsRequestV0]
    ) -> _IncAlterConfigsRequestV0:
        return request_struct_class(self._resources, False)


def _failure(codes: Iterable[int], message: str) -> ProvisioningError:
    """A broker's refusal: worth waiting for when every code is one Kafka calls retriable (a
    request timed out, the controller moving, a leader not elected yet), final otherwise."""
    if all(for_code(code).retriable for code in codes):
        return ProvisioningTimeout(message)
    return ProvisioningError(message)


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
    raise ProvisioningTimeout(f"Kafka at {bootstrap} did not answer in time: {last!r}")


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


async def _topic_configs(
    admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The current value of each wanted config key, per topic (only the keys asked for)."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(keys))
        for topic, keys in wanted.items()
    ]
    current: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != _NONE:
                raise _failure(
                    [resource["error_code"]],
                    f"cannot read the configs of {resource['resource_name']}: code "
                    f"{resource['error_code']} {resource.get('error_message')}",
                )
            current[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return current


def config_drift(
    wanted: Mapping[str, Mapping[str, str]], current: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Per topic, the wanted configs whose current value differs (nothing when all match)."""
    drift: dict[str, dict[str, str]] = {}
    for topic, configs in wanted.items():
        differing = {
            key: value for key, value in configs.items() if current.get(topic, {}).get(key) != value
        }
        if differing:
            drift[topic] = differing
    return drift


async def set_topic_configs(
    admin: AIOKafkaAdminClient, topic_configs: Mapping[str, Mapping[str, str]]
) -> None:
    """Set each given key on each topic, leaving every other config of the topic as it is."""
    if not topic_configs:
        return
    # aiokafka has no public way to send a request it does not wrap; any broker takes topic
    # configs (KRaft forwards them to the controller).
    response = await admin._send_request(_IncAlterConfigsRequest(topic_configs))
    failed = [r for r in response.to_object()["responses"] if r["error_code"] != _NONE]
    if failed:
        raise _failure(
            [r["error_code"] for r in failed],
            "altering topic configs failed: "
            + "; ".join(
                f"{r['resource_name']}: code {r['error_code']} {r.get('error_message')}"
                for r in failed
            ),
        )


async def _enforce_configs(
    admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]], deadline: float
) -> None:
    """Bring existing topics to the wanted configs; a topic already right is not touched."""
    wanted = {topic: configs for topic, configs in wanted.items() if configs}
    if not wanted:
        return
    drift = config_drift(wanted, await _topic_configs(admin, wanted))
    await set_topic_configs(admin, drift)
    # The controller has the change when the call returns, the broker applies it a moment later:
    # wait, so a record published once provisioning returned gets the new config.
    while drift:
        if time.monotonic() >= deadline:
            raise ProvisioningTimeout(f"topic configs still not in force: {drift}")
        await asyncio.sleep(0.2)
        drift = config_drift(drift, await _topic_configs(admin, drift))


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

    Topics are created with their configs; existing topics get the configs they lack.

    Raises ``ProvisioningError`` if an existing topic has fewer partitions than required, if the
    broker refuses a creation or a config, or if the broker does not answer within
    ``wait_seconds``.
    """
    chosen = list(topics)
    wanted: dict[str, int] = {prefix + t.name: t.partitions for t in chosen}
    configs: dict[str, dict[str, str]] = {prefix + t.name: dict(t.configs) for t in chosen}
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
                [
                    NewTopic(n, wanted[n], REPLICATION_FACTOR, topic_configs=configs[n])
                    for n in missing
                ]
            )
            failures: list[str] = []
            codes: list[int] = []
            raced: list[str] = []
            for err in response.to_object()["topic_errors"]:
                code = err["error_code"]
                if code == _TOPIC_ALREADY_EXISTS:  # created concurrently by someone else
                    raced.append(err["topic"])
                elif code != _NONE:
                    codes.append(code)
                    failures.append(f"{err['topic']}: code {code} {err.get('error_message')}")
            if failures:
                raise _failure(codes, "topic creation failed: " + "; ".join(failures))
            if raced:
                _check_partitions(wanted, await _partition_counts(admin, raced))
        pending = await _leaderless(admin, names)
        while pending:
            if time.monotonic() >= deadline:
                raise ProvisioningTimeout(f"topics still without leaders: {', '.join(pending)}")
            await asyncio.sleep(0.2)
            pending = await _leaderless(admin, pending)
        # Every topic, not only the existing ones: one created concurrently by someone else (or
        # by an older version of this module) may lack them. Done once the topics are known to
        # every broker, so describing them cannot answer "unknown topic".
        await _enforce_configs(admin, configs, deadline)
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


async def delete_groups(bootstrap: str, prefix: str) -> list[str]:
    """Delete the consumer groups whose id starts with ``prefix`` (a demo run's), with their
    committed offsets; returns the ids deleted. A group that still has members is left alone
    (the broker refuses: code 68), as is one gone meanwhile. Without this, every demo run left
    its groups in ``__consumer_offsets`` until the broker's offsets retention (7 days)."""
    if not prefix:
        raise ProvisioningError("refusing to delete consumer groups without a prefix")
    admin = await _start_admin(bootstrap, time.monotonic() + 30)
    deleted: list[str] = []
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
        for group in groups:
            # aiokafka 0.14 does not wrap DeleteGroups (API key 42): sent to the group's
            # coordinator, the only broker that may delete it.
            coordinator = await admin.find_coordinator(group)
            response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
            deleted += [name for name, code in response.results if code == _NONE]
    finally:
        await admin.close()
    return deleted


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
