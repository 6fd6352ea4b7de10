"""Composition root of routing: directory, adapters, subscriber, app."""

from __future__ import annotations

from faststream import FastStream
from faststream.kafka import KafkaBroker

from aiguillage_common.consumer import ReliableConsumer, subscribe
from aiguillage_common.dead_letter import DeadLetterPublisher
from aiguillage_common.geography import load_geography
from aiguillage_common.runtime import Runtime, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_lifecycle import MessageDeadLettered, ReferralAccepted
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable
from routing.adapters.directory_csv import load_directory
from routing.adapters.kafka import RoutingHandler
from routing.adapters.postgres import PostgresRoutingUnitOfWork
from routing.settings import RoutingSettings
from routing.use_cases.route_referral import CONSUMER

SERVICE = "routing"
DESCRIPTION = "Chooses a CPCA site for each accepted referral and publishes the decision."


def create_app(settings: RoutingSettings | None = None) -> FastStream:
    settings = settings or RoutingSettings()
    geography = load_geography()
    directory = load_directory(geography)
    decisions_topic = settings.topic(topics.ROUTED.name)
    dead_letter_topic = settings.topic(topics.ROUTING_DEAD_LETTER.name)

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        handler = RoutingHandler(
            lambda: PostgresRoutingUnitOfWork(runtime.require_pool()),
            directory,
            geography,
            decisions_topic,
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
            topic=settings.topic(topics.ACCEPTED.name),
            group_id=settings.consumer_group,
            documented_payload=ReferralAccepted,
            description="Identity-free referrals accepted by intake.",
        )
        broker.publisher(
            decisions_topic,
            schema=ReferralRouted | ReferralUnroutable,
            description="Routing decisions, via the outbox.",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered,
            description="Messages routing could not process, with the reason.",
        )

    return build_app(SERVICE, settings, register, DESCRIPTION)


def run() -> None:
    settings = RoutingSettings()
    run_service(SERVICE, settings, lambda: create_app(settings))
