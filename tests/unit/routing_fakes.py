"""The in-memory routing store (routing.adapters.memory) with the tests' clock and context."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from aiguillage_common.geography import Geography
from aiguillage_schemas.vocabulary import ServiceCode
from routing.adapters.memory import MemoryRoutingUow, RoutingStore
from routing.domain.decision import Policy
from routing.domain.directory import Capacity, Directory
from routing.use_cases.ports import RoutingContext

__all__ = ["Clock", "InMemoryRoutingUow", "RoutingStore", "capacity_of", "routing_context"]

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class InMemoryRoutingUow(MemoryRoutingUow):
    """The in-memory adapter, rolled back when the use case raises."""


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def fresh_directory(directory: Directory, at: datetime = T0) -> Directory:
    """The seed directory stamped at ``at`` (the fixture's was stamped at load time)."""
    return dataclasses.replace(
        directory,
        capacity={
            key: dataclasses.replace(c, updated_at=at) for key, c in directory.capacity.items()
        },
    )


def routing_context(
    store: RoutingStore,
    geography: Geography,
    clock: Clock | None = None,
    policy: Policy | None = None,
    **extra: Any,
) -> RoutingContext:
    return RoutingContext(
        uow_factory=lambda: InMemoryRoutingUow(store),
        geography=geography,
        policy=policy or Policy(),
        decisions_topic="routed",
        clock=clock or Clock(),
        **extra,
    )


def capacity_of(store: RoutingStore, site_id: str, service: ServiceCode) -> Capacity:
    return store.capacity[(site_id, service)]
