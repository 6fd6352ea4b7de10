"""Composition root of notifications."""

from __future__ import annotations

from faststream import FastStream
from faststream.kafka import KafkaBroker

from aiguillage_common.consumer import ReliableConsumer, subscribe
from aiguillage_common.dead_letter import DeadLetterPublisher
from aiguillage_common.runtime import Runtime, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.events.notifications import NotificationIssued
from aiguillage_schemas.events.referral_lifecycle import MessageDeadLettered
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable
from notifications.adapters.kafka import NotificationsHandler
from notifications.adapters.postgres import PostgresNotificationsUnitOfWork
from notifications.settings import NotificationsSettings
from notifications.use_cases.notify import CONSUMER

SERVICE = "notifications"
DESCRIPTION = "Tells centres and prescribers what routing decided."


def create_app(settings: NotificationsSettings | None = None) -> FastStream:
    settings = settings or NotificationsSettings()
    outbound_topic = settings.topic(topics.NOTIFICATIONS_OUTBOUND.name)
    dead_letter_topic = settings.topic(topics.NOTIFICATIONS_DEAD_LETTER.name)

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        handler = NotificationsHandler(
            lambda: PostgresNotificationsUnitOfWork(runtime.require_pool()), outbound_topic
        )
        consumer = ReliableConsumer(
            CONSUMER,
            handler,
            DeadLetterPublisher(runtime.producer, dead_letter_topic, CONSUMER),
            runtime.retry_policy,
            settings.handler_timeout_s,
        )
        subscribe(
            broker,
            consumer,
            topic=settings.topic(topics.ROUTED.name),
            group_id=settings.consumer_group,
            documented_payload=ReferralRouted | ReferralUnroutable,
            description="Routing decisions.",
        )
        broker.publisher(
            outbound_topic,
            schema=NotificationIssued,
            description="Notifications for centres and prescribers, via the outbox.",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered,
            description="Messages notifications could not process, with the reason.",
        )

    return build_app(SERVICE, settings, register, DESCRIPTION)


def run() -> None:
    settings = NotificationsSettings()
    run_service(SERVICE, settings, lambda: create_app(settings))
