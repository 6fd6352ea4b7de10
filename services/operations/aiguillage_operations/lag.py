"""Consumer lag per service, group, topic and partition. Pure: the adapter reads the offsets.

A service's groups are its ``consumer_group`` setting and every group named after it with a dot
(``referral-intake.routed``, ``notifications.accepted``…), so a consumer a service adds later is
listed without a change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True, order=True)
class LagRow:
    service: str
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int  # the partition's end offset (next offset to be written)

    @property
    def lag(self) -> int:
        """Records written and not yet committed by the group (all of them before a commit)."""
        return max(self.end - (self.committed or 0), 0)


def service_of(group: str, bases: Mapping[str, str]) -> str | None:
    """The service owning ``group``; ``bases`` maps a service to its consumer_group setting."""
    for service, base in bases.items():
        if group == base or group.startswith(base + "."):
            return service
    return None


def lag_rows(
    committed: Mapping[str, Mapping[TopicPartition, int]],
    ends: Mapping[TopicPartition, int],
    bases: Mapping[str, str],
) -> list[LagRow]:
    """One row per (group, partition) a service's group committed on, sorted by service, group,
    topic and partition. ``committed``: group -> partition -> committed offset (negative: none)."""
    rows = []
    for group, offsets in committed.items():
        service = service_of(group, bases)
        if service is None:
            continue
        for (topic, partition), offset in offsets.items():
            rows.append(
                LagRow(
                    service,
                    group,
                    topic,
                    partition,
                    offset if offset >= 0 else None,
                    ends.get((topic, partition), 0),
                )
            )
    return sorted(rows)


def totals(rows: list[LagRow]) -> dict[tuple[str, str], int]:
    """Total lag per (service, group)."""
    found: dict[tuple[str, str], int] = {}
    for row in rows:
        found[(row.service, row.group)] = found.get((row.service, row.group), 0) + row.lag
    return found
