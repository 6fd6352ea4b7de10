"""Reads the offsets ``aiguillage lag`` needs: every group's committed offsets (admin API) and
the end offset of each partition they consume (a consumer without a group, never committing)."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aiguillage_common.cli import CONNECT_TIMEOUT_S, bounded
from aiguillage_operations.lag import LagRow, lag_rows, service_of

CLIENT_ID = "aiguillage-lag"


async def read_lag(
    bootstrap_servers: str, bases: Mapping[str, str]
) -> tuple[list[LagRow], list[str]]:
    """The lag rows, and every group of the services (with or without committed offsets)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=int(CONNECT_TIMEOUT_S * 2000),
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(CONNECT_TIMEOUT_S * 2000),
    )
    try:
        await bounded(f"Kafka at {bootstrap_servers}", admin.start(), CONNECT_TIMEOUT_S * 2)
        await bounded(f"Kafka at {bootstrap_servers}", consumer.start(), CONNECT_TIMEOUT_S * 2)
        groups = sorted(
            str(listed[0])
            for listed in await admin.list_consumer_groups()
            if service_of(str(listed[0]), bases) is not None
        )
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {
                (tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            }
        partitions = sorted({TopicPartition(*tp) for found in committed.values() for tp in found})
        ends = await consumer.end_offsets(partitions) if partitions else {}
        ends_by = {(tp.topic, tp.partition): n for tp, n in ends.items()}
        return lag_rows(committed, ends_by, bases), groups
    finally:
        await consumer.stop()
        await admin.close()
