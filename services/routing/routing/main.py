"""Composition root of routing: geography, policy, adapters, subscribers, timer, app."""

from __future__ import annotations

from datetime import timedelta

from faststream.kafka import KafkaBroker

from aiguillage_common.consumer import Process
from aiguillage_common.geography import load_geography
from aiguillage_common.health import HealthState
from aiguillage_common.metrics import stale_capacity_probe
from aiguillage_common.runtime import BackgroundWorker, Runtime, ServiceApp, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.events.centres import (
    CapacityUpdated,
    OfferAnswered,
    PathReport,
    ServiceClosed,
    ServiceOpened,
    SiteAdded,
    SiteClosed,
)
from aiguillage_schemas.events.directory_notices import CapacityConfirmationDue
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralCancelled,
)
from aiguillage_schemas.events.routing_decisions import (
    RoutingDecisionEvent,
)
from routing.adapters.kafka import (
    CentreResponsesHandler,
    DirectoryHandler,
    RoutingHandler,
    SenderCheck,
)
from routing.adapters.postgres import PostgresRoutingUnitOfWork, count_stale_sites
from routing.adapters.reminders import CapacityReminder, PostgresReminderUnitOfWork
from routing.adapters.senders_file import load_senders
from routing.adapters.workers import ConfirmationWatch, DirectorySeeder, OfferTimer
from routing.settings import RoutingSettings
from routing.use_cases.capacity_reminders import ReminderContext, remind_due_confirmations
from routing.use_cases.offer_timeouts import expire_one_offer
from routing.use_cases.ports import CONSUMER, RoutingContext

SERVICE = "routing"
DESCRIPTION = (
    "Chooses a CPCA site for each accepted referral, keeps capacity and waiting lists, and runs "
    "the closed loop with centres (offers, answers, timeouts, path reports)."
)


def create_app(
    settings: RoutingSettings | None = None, health: HealthState | None = None
) -> ServiceApp:
    settings = settings or RoutingSettings()
    geography = load_geography()
    # Read once at start: a malformed registry or secrets setting stops routing here.
    senders = load_senders(settings.senders_file)
    secrets = settings.secrets()
    decisions_topic = settings.topic(topics.ROUTED.name)
    dead_letter_topic = settings.topic(topics.ROUTING_DEAD_LETTER.name)
    notices_topic = settings.topic(topics.DIRECTORY_NOTICES.name)
    contexts: list[RoutingContext] = []

    def context(runtime: Runtime) -> RoutingContext:
        if not contexts:
            contexts.append(
                RoutingContext(
                    uow_factory=lambda: PostgresRoutingUnitOfWork(runtime.require_pool()),
                    geography=geography,
                    policy=settings.policy(),
                    decisions_topic=decisions_topic,
                    offer_timeout=timedelta(seconds=settings.offer_timeout_s),
                    urgent_offer_timeout=timedelta(seconds=settings.urgent_offer_timeout_s),
                    min_offer_window=timedelta(seconds=settings.min_offer_window_s),
                    max_attempts=settings.max_attempts,
                    reservation_retries=settings.reservation_retries,
                    escalate_urgent_waits=settings.escalate_urgent_waits,
                )
            )
        return contexts[0]

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        ctx = context(runtime)
        # For the capacity-stale alert: counted when Prometheus scrapes, not on a timer.
        runtime.metrics.add_probe(
            "capacity_stale",
            stale_capacity_probe(
                SERVICE,
                lambda: count_stale_sites(runtime.require_pool(), settings.capacity_freshness_s),
            ),
        )
        check = SenderCheck(
            ctx,
            senders,
            secrets,
            settings.replay_window_s,
            settings.operations_secret.get_secret_value().encode("utf-8"),
        )
        inbound: tuple[tuple[str, Process, topics.Topic, str, object, str], ...] = (
            (
                CONSUMER,
                RoutingHandler(ctx),
                topics.ACCEPTED,
                "",
                ReferralAccepted | ReferralCancelled,
                "Identity-free referrals accepted by intake, and prescribers' cancellations.",
            ),
            (
                CONSUMER + ".centres",
                CentreResponsesHandler(ctx, check),
                topics.CENTRE_RESPONSES,
                ".centres",
                OfferAnswered | PathReport,
                "Centres' answers to offers and path reports.",
            ),
            (
                CONSUMER + ".directory",
                DirectoryHandler(ctx, check),
                topics.DIRECTORY_UPDATES,
                ".directory",
                CapacityUpdated | ServiceOpened | ServiceClosed | SiteAdded | SiteClosed,
                "Directory updates: capacity, services and sites opened or closed.",
            ),
        )
        for name, handler, topic, group_suffix, payload, description in inbound:
            runtime.consume(
                broker,
                name,
                handler,
                runtime.dead_letters(dead_letter_topic, name),
                topic=settings.topic(topic.name),
                # One group per topic: a rebalance on one input never pauses the others.
                group_id=settings.consumer_group + group_suffix,
                documented_payload=payload,
                description=description,
            )
        broker.publisher(
            decisions_topic,
            schema=RoutingDecisionEvent,
            description="Routing decisions and path events, via the outbox (a split referral's "
            "housing leg: referral.housing_offered, referral.housing_updated).",
        )
        broker.publisher(
            notices_topic,
            schema=CapacityConfirmationDue,
            description="Reminders to centres: counts to confirm before they go stale, via the "
            "outbox (key: site id).",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered,
            description="Messages routing could not process, with the reason.",
        )

    def workers(runtime: Runtime) -> list[BackgroundWorker]:
        ctx = context(runtime)
        reminders = ReminderContext(
            uow_factory=lambda: PostgresReminderUnitOfWork(runtime.require_pool()),
            notices_topic=notices_topic,
            freshness=timedelta(seconds=settings.capacity_freshness_s),
            window=timedelta(seconds=settings.stale_reminder_s),
            policy=settings.stale_capacity,
            clock=ctx.clock,
        )
        seeders: list[BackgroundWorker] = []
        if settings.seed_directory_if_empty:
            seeders.append(
                DirectorySeeder(runtime.require_pool(), geography, settings.seed_path_months)
            )
        return [
            *seeders,
            OfferTimer(lambda: expire_one_offer(ctx), settings.timer_poll_interval_s),
            ConfirmationWatch(
                runtime.require_pool(),
                timedelta(seconds=settings.capacity_freshness_s),
                timedelta(seconds=settings.stale_reminder_s),
                settings.confirmation_check_interval_s,
            ),
            CapacityReminder(
                lambda: remind_due_confirmations(reminders),
                settings.capacity_reminder_interval_s,
            ),
        ]

    return build_app(SERVICE, settings, register, DESCRIPTION, workers, health)


def run() -> None:
    settings = RoutingSettings()
    run_service(SERVICE, settings, lambda health: create_app(settings, health))
