"""Use case: a routing decision arrives; record and publish who is told what, once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.notifications import NotificationIssued, NotificationIssuedData
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable
from notifications.domain.messages import Notification, notifications_for

CONSUMER = "notifications"
SOURCE = "notifications"


class NotificationsUnitOfWork(UnitOfWork, Protocol):
    async def record(
        self, notification: Notification, cause: ReferralRouted | ReferralUnroutable
    ) -> None: ...


async def notify(
    event: ReferralRouted | ReferralUnroutable,
    uow_factory: Callable[[], NotificationsUnitOfWork],
    outbound_topic: str,
) -> list[Notification] | None:
    """Returns the notifications issued, or None when the event was already handled."""
    planned = notifications_for(event)
    async with uow_factory() as uow:
        if not await uow.claim(CONSUMER, event.event_id):
            return None
        for notification in planned:
            await uow.record(notification, event)
            await uow.emit(outbound_topic, _issued(notification, event))
    return planned


def _issued(
    notification: Notification, cause: ReferralRouted | ReferralUnroutable
) -> NotificationIssued:
    return NotificationIssued(
        event_id=uuid.uuid5(notification.notification_id, "issued"),
        source=SOURCE,
        correlation_id=cause.correlation_id,
        subject=cause.subject,
        data=NotificationIssuedData(
            notification_id=notification.notification_id,
            recipient_kind=notification.recipient_kind,
            recipient_id=notification.recipient_id,
            topic=notification.topic,
            reference=notification.referral_id,
            site_id=notification.site_id,
            title=notification.title,
            body=notification.body,
            caused_by_event_id=cause.event_id,
        ),
    )
