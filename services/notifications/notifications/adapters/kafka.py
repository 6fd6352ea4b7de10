"""Kafka side of notifications: decode routing decisions and hand them to the use case."""

from __future__ import annotations

from collections.abc import Callable

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable
from notifications.use_cases.notify import NotificationsUnitOfWork, notify

log = get_logger("aiguillage.notifications")


class NotificationsHandler:
    def __init__(
        self, uow_factory: Callable[[], NotificationsUnitOfWork], outbound_topic: str
    ) -> None:
        self._uow_factory = uow_factory
        self._outbound_topic = outbound_topic

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, (ReferralRouted, ReferralUnroutable))
        assert isinstance(event, ReferralRouted | ReferralUnroutable)
        issued = await notify(event, self._uow_factory, self._outbound_topic)
        if issued is None:
            log.info("notification.duplicate_ignored", referral_id=event.subject)
            return
        for notification in issued:
            log.info(
                "notification.issued",
                referral_id=event.subject,
                recipient_kind=notification.recipient_kind,
                recipient_id=notification.recipient_id,
                topic=notification.topic,
            )
