"""Use case: deliver due notifications on their channels, record every attempt, and give up cleanly.

A due delivery is leased (its next attempt is pushed past the send timeout) in a short transaction,
sent outside any transaction, and its outcome recorded in a second one. A crash between the two
loses only the lease: the delivery is due again once the lease expires and is re-sent with the same
idempotency key (webhook header, e-mail Message-ID), which is at-least-once with receiver-side
deduplication. A dead delivery is published on the dead-letter topic (through the outbox, in the
same transaction) and, when it was a primary, hands over to the recipient's next channel.
Reminders are timers in the database: firing one records its notification in the transaction that
marks it fired, so it fires once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from aiguillage_common.logging import get_logger
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.notifications import (
    NotificationDeliveryFailed,
    NotificationDeliveryFailedData,
)
from notifications.domain.delivery import (
    AttemptResult,
    BackoffPolicy,
    Decision,
    DeliveryJob,
    decide,
)
from notifications.domain.messages import Delivery, Planner, Reminder, fallback_delivery_id
from notifications.use_cases.notify import SOURCE, NotificationsUnitOfWork, record_notifications

log = get_logger("aiguillage.notifications.delivery")


class Sender(Protocol):
    async def send(self, job: DeliveryJob) -> AttemptResult: ...


class DeliveryUnitOfWork(NotificationsUnitOfWork, UnitOfWork, Protocol):
    async def lease_due(self, limit: int, lease_s: float) -> list[DeliveryJob]: ...

    async def record_attempt(
        self, job: DeliveryJob, result: AttemptResult, decision: Decision
    ) -> None: ...

    async def next_channel(self, job: DeliveryJob) -> Delivery | None:
        """The recipient's next channel after ``job``'s, other than Kafka, if any."""
        ...

    async def due_reminders(self, limit: int) -> list[Reminder]:
        """Due, pending reminders, locked and marked fired in this transaction."""
        ...


class Deliverer:
    def __init__(
        self,
        uow_factory: Callable[[], DeliveryUnitOfWork],
        senders: Mapping[str, Sender],
        policy: BackoffPolicy,
        dead_letter_topic: str,
        lease_s: float,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._uow_factory = uow_factory
        self._senders = senders
        self._policy = policy
        self._dead_letter_topic = dead_letter_topic
        self._lease_s = lease_s
        self._batch_size = batch_size
        self._clock = clock

    async def deliver_due(self) -> int:
        """Attempt one batch of due deliveries concurrently; returns how many were attempted."""
        async with self._uow_factory() as uow:
            jobs = await uow.lease_due(self._batch_size, self._lease_s)
        if jobs:
            outcomes = await asyncio.gather(
                *(self._deliver(job) for job in jobs), return_exceptions=True
            )
            # One delivery whose outcome could not be recorded (database gone) must not hide
            # the others': they are recorded; this one is due again when its lease expires.
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise failed[0]
        return len(jobs)

    async def _deliver(self, job: DeliveryJob) -> None:
        sender = self._senders.get(job.channel)
        if sender is None:
            result = AttemptResult("permanent", 0, f"no_sender_{job.channel}")
        else:
            try:
                result = await sender.send(job)
            except Exception as error:
                # A bug for this delivery (the channels classify every network failure): retrying
                # would fail the same way forever, so it is dead-lettered with the error's type.
                result = AttemptResult("permanent", 0, f"internal_{type(error).__name__}")
        decision = decide(result, job.attempts + 1, self._policy, self._clock())
        async with self._uow_factory() as uow:
            await uow.record_attempt(job, result, decision)
            fallback = None
            if decision.state == "dead" and job.fallback_for is None:
                following = await uow.next_channel(job)
                if following is not None:
                    fallback = Delivery(
                        fallback_delivery_id(job.delivery_id),
                        job.notification_id,
                        following.channel,
                        following.target,
                        following.position,
                        fallback_for=job.delivery_id,
                    )
                    await uow.add_delivery(fallback)
            if decision.state == "dead":
                event = _dead_letter(job, result, decision, fallback)
                await uow.emit(self._dead_letter_topic, event)
        fields = {
            "referral_id": job.referral_id,
            "correlation_id": str(job.correlation_id),
            "delivery_id": str(job.delivery_id),
            "recipient_kind": job.recipient_kind,
            "recipient_id": job.recipient_id,
            "channel": job.channel,
            "attempt": job.attempts + 1,
            "latency_ms": result.latency_ms,
            "error_class": result.error_class,
            "identity_release": result.identity_release,
        }
        if decision.state == "delivered":
            log.info("delivery.delivered", **fields)
        elif decision.state == "pending":
            log.warning(
                "delivery.retry_scheduled",
                next_attempt_at=decision.next_attempt_at.isoformat()
                if decision.next_attempt_at
                else None,
                **fields,
            )
        else:
            # The line an operator alerts on: a recipient was not reached on this channel.
            log.error(
                "delivery.dead_lettered",
                reason=decision.dead_reason,
                fallback_channel=fallback.channel if fallback else None,
                **fields,
            )

    async def fire_due_reminders(self, planner: Planner, outbound_topic: str) -> int:
        async with self._uow_factory() as uow:
            reminders = await uow.due_reminders(self._batch_size)
            for reminder in reminders:
                notification = planner.reminder_notification(reminder)
                await record_notifications(
                    uow,
                    (notification,),
                    reminder.reminder_id,
                    reminder.correlation_id,
                    outbound_topic,
                )
        for reminder in reminders:
            log.info(
                "reminder.fired",
                referral_id=reminder.referral_id,
                correlation_id=str(reminder.correlation_id),
                centre_id=reminder.centre_id,
            )
        return len(reminders)


def _dead_letter(
    job: DeliveryJob, result: AttemptResult, decision: Decision, fallback: Delivery | None
) -> NotificationDeliveryFailed:
    assert decision.dead_reason is not None
    return NotificationDeliveryFailed(
        event_id=uuid.uuid5(job.delivery_id, "dead-letter"),
        source=SOURCE,
        correlation_id=job.correlation_id,
        subject=job.referral_id,
        data=NotificationDeliveryFailedData(
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            recipient_kind=job.recipient_kind,
            recipient_id=job.recipient_id,
            channel=job.channel,
            reason=decision.dead_reason,
            attempts=job.attempts + 1,
            error_class=result.error_class or "unknown",
            http_status=result.http_status,
            smtp_code=result.smtp_code,
            fallback_delivery_id=fallback.delivery_id if fallback else None,
        ),
    )
