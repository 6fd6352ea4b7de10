"""Use case: remind centres of the counts they must confirm before they go stale.

Which counts are due is decided by the pure rule (``domain/reminders.py``) on a snapshot; each
reminder is then claimed and published in its own transaction: the ``capacity_reminders`` row
(primary key: site, service, as_of) and the outbox event commit together. Two routing instances,
or one restarted half-way, compute the same list; the claim lets only one of them remind, and the
event id is derived from the confirmation, so the outbox would refuse a second copy anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.directory_notices import (
    CapacityConfirmationDue,
    CapacityConfirmationDueData,
)
from routing.domain.decision import StalePolicy
from routing.domain.directory import Directory
from routing.domain.reminders import ReminderDue, ReminderKey, reminders_due, stale_outcome
from routing.use_cases.ports import SOURCE


class ReminderUnitOfWork(UnitOfWork, Protocol):
    async def open_counts(self) -> Directory:
        """Every open site with its open services and their counts."""
        ...

    async def reminded(self) -> set[ReminderKey]:
        """The confirmations already reminded among the counts on record."""
        ...

    async def claim_reminder(self, due: ReminderDue) -> bool:
        """Record the reminder unless it was already, or the count was confirmed again (or
        closed) meanwhile; True when this transaction is the one that reminds."""
        ...


@dataclass(frozen=True)
class ReminderContext:
    uow_factory: Callable[[], ReminderUnitOfWork]
    notices_topic: str
    freshness: timedelta
    window: timedelta  # reminded this long before the count goes stale
    policy: StalePolicy
    clock: Callable[[], datetime]


def reminder_event(due: ReminderDue, policy: StalePolicy, now: datetime) -> CapacityConfirmationDue:
    return CapacityConfirmationDue(
        event_id=due.event_id,
        occurred_at=now,
        source=SOURCE,
        correlation_id=uuid.uuid5(due.event_id, "correlation"),
        subject=due.site_id,
        data=CapacityConfirmationDueData(
            site_id=due.site_id,
            centre_id=due.centre_id,
            centre_name=due.centre_name,
            service=due.service,
            places_total=due.places_total,
            as_of=due.as_of,
            stale_at=due.stale_at,
            policy=stale_outcome(policy),
            reference=due.reference,
        ),
    )


async def remind_due_confirmations(ctx: ReminderContext) -> list[ReminderDue]:
    """Remind every confirmation due and not reminded yet; returns those this call reminded."""
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        directory = await uow.open_counts()
        reminded = await uow.reminded()
    sent = []
    for due in reminders_due(directory, reminded, now, ctx.freshness, ctx.window):
        async with ctx.uow_factory() as uow:
            if not await uow.claim_reminder(due):
                continue
            await uow.emit(ctx.notices_topic, reminder_event(due, ctx.policy, now))
        sent.append(due)
    return sent
