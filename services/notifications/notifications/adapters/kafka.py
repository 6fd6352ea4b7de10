"""Kafka side of notifications: decode what routing and intake publish, hand it to the use case."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.logging import get_logger
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.directory_notices import CapacityConfirmationDue
from notifications.domain.messages import InboundEvent, Planner
from notifications.use_cases.notify import NotificationsUnitOfWork, notify

log = get_logger("aiguillage.notifications")


class NotificationsHandler:
    def __init__(
        self,
        uow_factory: Callable[[], NotificationsUnitOfWork],
        outbound_topic: str,
        planner: Planner,
        accepted: Sequence[type[Envelope]],
        consumer: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._uow_factory = uow_factory
        self._outbound_topic = outbound_topic
        self._planner = planner
        self._accepted = accepted
        self._consumer = consumer
        self._clock = clock

    async def __call__(self, record: InboundRecord) -> None:
        event: InboundEvent = decode_event(record.value, self._accepted)  # type: ignore[assignment]
        issued = await notify(
            event,
            self._uow_factory,
            self._outbound_topic,
            self._planner,
            self._clock(),
            self._consumer,
        )
        # A capacity reminder's subject is a site id, not a referral id: logged as what it is.
        about = "site_id" if isinstance(event, CapacityConfirmationDue) else "referral_id"
        if issued is None:
            log.info("notification.duplicate_ignored", **{about: event.subject})
            return
        if not issued:
            log.info("notification.nobody_to_tell", **{about: event.subject})
        for notification in issued:
            fields = {
                about: event.subject,
                "recipient_kind": notification.recipient_kind,
                "recipient_id": notification.recipient_id,
                "topic": notification.topic,
            }
            channels = [d.channel for d in notification.deliveries]
            if channels:
                log.info("notification.issued", channels=channels, **fields)
            else:
                # Only on the outbound topic: the recipient is unknown or none of its channels
                # is configured. An operator must fix the directory or the settings.
                log.warning("notification.no_channel", **fields)
