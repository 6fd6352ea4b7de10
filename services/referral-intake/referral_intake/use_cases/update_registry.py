"""Use case: an administrator updated a prescriber's registry entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.prescribers import PrescriberRegistryUpdated

REGISTRY_CONSUMER = "referral-intake.registry"


class RegistryUnitOfWork(UnitOfWork, Protocol):
    async def store_entry(self, event: PrescriberRegistryUpdated) -> bool:
        """Keep the entry unless a newer one is stored; True when it was kept."""
        ...


async def update_registry(
    event: PrescriberRegistryUpdated, uow_factory: Callable[[], RegistryUnitOfWork]
) -> bool:
    uow = uow_factory()
    async with uow:
        if not await uow.claim(REGISTRY_CONSUMER, event.event_id):
            return False
        return await uow.store_entry(event)
