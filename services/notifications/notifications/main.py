"""Composition root of notifications."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from faststream.kafka import KafkaBroker

from aiguillage_common.health import HealthState
from aiguillage_common.provisioning import provision
from aiguillage_common.runtime import BackgroundWorker, Runtime, ServiceApp, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.directory_notices import CapacityConfirmationDue
from aiguillage_schemas.events.notifications import NotificationDeliveryFailed, NotificationIssued
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralRejected,
)
from aiguillage_schemas.events.routing_decisions import (
    RoutingDecisionEvent,
)
from notifications.adapters.directory import (
    load_recipients,
    load_templates,
    notice_topics,
    webhook_secret,
)
from notifications.adapters.email import EmailSender
from notifications.adapters.http import HttpClient
from notifications.adapters.identity import IdentityClient
from notifications.adapters.kafka import NotificationsHandler
from notifications.adapters.postgres import (
    PostgresDeliverySession,
    PostgresNotificationsUnitOfWork,
    WorkerConnection,
)
from notifications.adapters.webhook import WebhookSender
from notifications.adapters.worker import DeliveryWorker
from notifications.domain.delivery import BackoffPolicy, IdentityWaitPolicy
from notifications.domain.messages import ROUTING_EVENTS, Planner
from notifications.settings import NotificationsSettings
from notifications.use_cases.deliver import Deliverer, Sender
from notifications.use_cases.notify import CONSUMER

SERVICE = "notifications"
DESCRIPTION = "Tells centres and prescribers what happens to a referral, on their channels."


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: NotificationsSettings | None = None, health: HealthState | None = None
) -> ServiceApp:
    settings = settings or NotificationsSettings()
    outbound_topic = settings.topic(topics.NOTIFICATIONS_OUTBOUND.name)
    dead_letter_topic = settings.topic(topics.NOTIFICATIONS_DEAD_LETTER.name)
    recipients = load_recipients(settings)
    planner = Planner(
        recipients,
        load_templates(),
        timedelta(seconds=settings.reminder_before_s),
        timedelta(seconds=settings.digest_window_s),
        portal_url=settings.portal_url,
    )

    # The delivery worker needs the pool, so it is built at startup from a factory that
    # register() leaves here.
    worker_factories: list[Callable[[Runtime], BackgroundWorker]] = []

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        def uow() -> PostgresNotificationsUnitOfWork:
            return PostgresNotificationsUnitOfWork(runtime.require_pool())

        # One consumer group per source topic: a rebalance on one never pauses the others.
        sources: Sequence[tuple[topics.Topic, str, Sequence[type[Envelope]], str, object]] = (
            (
                topics.ROUTED,
                CONSUMER,
                ROUTING_EVENTS,
                settings.consumer_group,
                RoutingDecisionEvent,
            ),
            (
                topics.ACCEPTED,
                f"{CONSUMER}.accepted",
                (ReferralAccepted,),
                f"{settings.consumer_group}.accepted",
                ReferralAccepted,
            ),
            (
                topics.REJECTED,
                f"{CONSUMER}.rejected",
                (ReferralRejected,),
                f"{settings.consumer_group}.rejected",
                ReferralRejected,
            ),
            (
                topics.DIRECTORY_NOTICES,
                f"{CONSUMER}.directory",
                (CapacityConfirmationDue,),
                f"{settings.consumer_group}.directory",
                CapacityConfirmationDue,
            ),
        )
        for topic, consumer_name, accepted, group, documented in sources:
            handler = NotificationsHandler(
                uow, outbound_topic, planner, accepted, consumer_name, _now
            )
            runtime.consume(
                broker,
                consumer_name,
                handler,
                runtime.dead_letters(dead_letter_topic, consumer_name),
                topic=settings.topic(topic.name),
                group_id=group,
                documented_payload=documented,
                description=f"What to tell centres and prescribers ({topic.purpose}).",
            )
        broker.publisher(
            outbound_topic,
            schema=NotificationIssued,
            description="Notifications for centres and prescribers, via the outbox.",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered | NotificationDeliveryFailed,
            description="Messages notifications could not process, and deliveries that gave up.",
        )

        def delivery_worker(runtime: Runtime) -> BackgroundWorker:
            # One client for the webhooks and intake's identity API, keeping connections open
            # between sends; each webhook lane uses one connection at a time.
            client = HttpClient(max_connections=max(8, 2 * settings.delivery_webhook_concurrency))
            smtp_password = settings.smtp_password
            identity_secret = settings.identity_api_secret.get_secret_value()
            # Both the URL and the secret, or no identity at all: offers go out as before.
            identity = (
                IdentityClient(
                    client,
                    settings.intake_identity_url,
                    identity_secret.encode("utf-8"),
                    settings.identity_api_timeout_s,
                )
                if settings.intake_identity_url and identity_secret
                else None
            )
            email = EmailSender(
                settings.smtp_host,
                settings.smtp_port,
                settings.mail_from,
                settings.message_id_domain,
                settings.smtp_timeout_s,
                settings.smtp_username,
                smtp_password.get_secret_value() if smtp_password else None,
                settings.smtp_start_tls,
                local_hostname=settings.smtp_local_hostname,
                # One session per e-mail in flight.
                max_sessions=settings.delivery_email_concurrency,
                max_messages=settings.smtp_max_messages_per_session,
                idle_timeout_s=settings.smtp_session_idle_s,
            )
            senders: dict[str, Sender] = {
                "webhook": WebhookSender(
                    client,
                    lambda kind, rid: webhook_secret(settings, kind, rid),
                    settings.webhook_timeout_s,
                    identity=identity,
                ),
                "email": email,
            }
            own = WorkerConnection()
            deliverer = Deliverer(
                uow,
                senders,
                BackoffPolicy(
                    settings.delivery_max_attempts,
                    settings.delivery_base_delay_s,
                    settings.delivery_max_delay_s,
                ),
                dead_letter_topic,
                settings.delivery_lease_s,
                settings.delivery_batch_size,
                _now,
                identity_policy=IdentityWaitPolicy(
                    settings.identity_wait_base_delay_s,
                    settings.identity_wait_max_delay_s,
                    settings.identity_wait_max_s,
                    settings.identity_fallback_after_s,
                ),
                concurrency={
                    "email": settings.delivery_email_concurrency,
                    "webhook": settings.delivery_webhook_concurrency,
                },
                session_factory=lambda: PostgresDeliverySession(own),
                on_attempt=runtime.metrics.delivery_attempt,
                run_for_s=settings.delivery_poll_interval_s,
            )
            return DeliveryWorker(
                runtime.require_pool(),
                deliverer,
                planner,
                outbound_topic,
                settings.db_schema,
                settings.delivery_poll_interval_s,
                client,
                settings.graceful_timeout_s,
                own=own,
                closing=(email,),
            )

        worker_factories.append(delivery_worker)

    return build_app(
        SERVICE,
        settings,
        register,
        DESCRIPTION,
        lambda runtime: [factory(runtime) for factory in worker_factories],
        health,
        # Each recipient's own topic exists before anything is published to it.
        prepare=lambda runtime: provision(
            settings.kafka_bootstrap_servers, notice_topics(recipients), wait_seconds=30
        ),
    )


def run() -> None:
    settings = NotificationsSettings()
    run_service(SERVICE, settings, lambda health: create_app(settings, health))
