"""PostgreSQL side of notifications: the record of every notification decided."""

from __future__ import annotations

from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable
from notifications.domain.messages import Notification


class PostgresNotificationsUnitOfWork(PostgresUnitOfWork):
    async def record(
        self, notification: Notification, cause: ReferralRouted | ReferralUnroutable
    ) -> None:
        await self.connection.execute(
            "INSERT INTO notifications (notification_id, referral_id, recipient_kind,"
            " recipient_id, topic, site_id, title, body, caused_by_event_id, correlation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            notification.notification_id,
            notification.referral_id,
            notification.recipient_kind,
            notification.recipient_id,
            notification.topic,
            notification.site_id,
            notification.title,
            notification.body,
            cause.event_id,
            cause.correlation_id,
        )
