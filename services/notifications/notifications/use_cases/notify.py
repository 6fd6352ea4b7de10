"""Use case: an event arrives; decide who is told what, and record it with its deliveries, once.

One transaction holds the inbox claim, the notifications, one delivery row per channel, the
reminder bookkeeping and the NotificationIssued events for the outbound topic. So a crash before
commit leaves nothing (the event is redelivered), and after commit everything needed to deliver is
durable: the delivery worker picks the rows up, even after a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aiguillage_common.unit_of_work import D, UnitOfWork
from aiguillage_schemas.events.notifications import NotificationIssued, NotificationIssuedData
from notifications.domain.messages import (
    Delivery,
    DigestEntry,
    InboundEvent,
    Notification,
    Planner,
    Reminder,
)
from notifications.domain.templates import Rendered

CONSUMER = "notifications"
SOURCE = "notifications"


class NotificationsUnitOfWork(UnitOfWork, Protocol):
    async def record(
        self, notification: Notification, cause_id: uuid.UUID, correlation_id: uuid.UUID
    ) -> None: ...

    async def add_delivery(self, delivery: Delivery) -> bool:
        """Record ``delivery`` unless its id is known; True when it was new."""
        ...

    async def add_to_digest(
        self, entry: DigestEntry, cause_id: uuid.UUID, correlation_id: uuid.UUID, send_at: datetime
    ) -> uuid.UUID:
        """Add ``entry`` to its recipient's open digest for that address (one whose e-mail no
        worker has started), or open one whose e-mail is due at ``send_at``; the digest's id."""
        ...

    async def digest_items(self, digest_id: uuid.UUID) -> list[dict[str, str]]:
        """The facts of the digest's entries, in order."""
        ...

    async def set_digest_email(self, digest_id: uuid.UUID, rendered: Rendered) -> None: ...

    def deferred(self, key: object, make: Callable[[], D]) -> D | None:
        """See ``PostgresUnitOfWork.deferred``: batch-wide work run once before the commit."""
        ...

    async def cancel_reminders(self, referral_id: str) -> None:
        """Cancel the referral's pending reminders (those scheduled before this call)."""
        ...

    async def schedule_reminder(self, reminder: Reminder) -> None: ...


async def notify(
    event: InboundEvent,
    uow_factory: Callable[[], NotificationsUnitOfWork],
    outbound_topic: str,
    planner: Planner,
    now: datetime,
    consumer: str = CONSUMER,
) -> list[Notification] | None:
    """Returns the notifications issued, or None when the event was already handled."""
    plan = planner.plan(event, now)
    async with uow_factory() as uow:
        if not await uow.claim(consumer, event.event_id):
            return None
        await record_notifications(
            uow, plan.notifications, event.event_id, event.correlation_id, outbound_topic
        )
        for entry in plan.digest:
            send_at = now + planner.digest_window
            digest_id = await uow.add_to_digest(
                entry, event.event_id, event.correlation_id, send_at
            )
            # A burst joins one digest many times in a batch: its e-mail is written once, when
            # the batch ends, not again for every entry.
            later = uow.deferred(_DigestEmails, lambda: _DigestEmails(uow_factory, planner))
            if later is None:
                await write_digest_email(uow, planner, digest_id, entry.topic)
            else:
                later.digests[digest_id] = entry.topic
        if plan.cancel_reminders:
            await uow.cancel_reminders(event.subject)
        if plan.reminder is not None:
            await uow.schedule_reminder(plan.reminder)
    return list(plan.notifications)


async def write_digest_email(
    uow: NotificationsUnitOfWork, planner: Planner, digest_id: uuid.UUID, topic: str
) -> None:
    items = await uow.digest_items(digest_id)
    await uow.set_digest_email(digest_id, planner.digest_email(digest_id, topic, items))


@dataclass
class _DigestEmails:
    """The digests a batch added entries to, each e-mail written once before the batch commits."""

    uow_factory: Callable[[], NotificationsUnitOfWork]
    planner: Planner
    digests: dict[uuid.UUID, str] = field(default_factory=dict)  # digest id -> topic

    async def run(self) -> None:
        async with self.uow_factory() as uow:
            for digest_id, topic in self.digests.items():
                await write_digest_email(uow, self.planner, digest_id, topic)


async def record_notifications(
    uow: NotificationsUnitOfWork,
    notifications: tuple[Notification, ...],
    cause_id: uuid.UUID,
    correlation_id: uuid.UUID,
    outbound_topic: str,
) -> None:
    for notification in notifications:
        await uow.record(notification, cause_id, correlation_id)
        # Every notification is an event on the outbound topic (the operators' audit stream of
        # what was said) and, for a recipient that integrates by events, on its own topic (its
        # Kafka channel's target), which an ACL grants to that recipient alone.
        event = issued(notification, cause_id, correlation_id)
        await uow.emit(outbound_topic, event)
        for delivery in notification.deliveries:
            if delivery.channel == "kafka":
                # Its own event id (the outbox is keyed by event id), the same notification id.
                own_id = uuid.uuid5(notification.notification_id, "issued-to-recipient")
                await uow.emit(delivery.target, event.model_copy(update={"event_id": own_id}))
            await uow.add_delivery(delivery)


def issued(
    notification: Notification, cause_id: uuid.UUID, correlation_id: uuid.UUID
) -> NotificationIssued:
    return NotificationIssued(
        event_id=uuid.uuid5(notification.notification_id, "issued"),
        source=SOURCE,
        correlation_id=correlation_id,
        subject=notification.referral_id,
        data=NotificationIssuedData(
            notification_id=notification.notification_id,
            recipient_kind=notification.recipient_kind,
            recipient_id=notification.recipient_id,
            topic=notification.topic,
            reference=notification.referral_id,
            site_id=notification.site_id,
            title=notification.title,
            body=notification.body,
            caused_by_event_id=cause_id,
        ),
    )
