"""Composition root of referral-intake: settings, adapters, subscriber, app."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream import FastStream
from faststream.kafka import KafkaBroker

from aiguillage_common.consumer import ReliableConsumer, subscribe
from aiguillage_common.geography import load_geography
from aiguillage_common.runtime import Runtime, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralRejected
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from referral_intake.adapters.identity_cipher import IdentityCipher
from referral_intake.adapters.kafka import IntakeHandler, RejectionPublisher
from referral_intake.adapters.postgres import PostgresIntakeUnitOfWork
from referral_intake.settings import IntakeSettings
from referral_intake.use_cases.submit_referral import CONSUMER, Topics

SERVICE = "referral-intake"
DESCRIPTION = (
    "Checks referrals published by prescribers, keeps the identity sealed, and forwards an "
    "identity-free referral to routing; every refused input is answered on referrals.rejected."
)


def create_app(settings: IntakeSettings | None = None) -> FastStream:
    settings = settings or IntakeSettings()
    geography = load_geography()
    cipher = IdentityCipher(
        settings.identity_master_key.get_secret_value(), settings.identity_master_key_id
    )
    topic_names = Topics(
        accepted=settings.topic(topics.ACCEPTED.name), rejected=settings.topic(topics.REJECTED.name)
    )

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        handler = IntakeHandler(
            uow_factory=lambda: PostgresIntakeUnitOfWork(runtime.require_pool(), cipher),
            geography=geography,
            topics=topic_names,
            max_bytes=settings.max_message_bytes,
            today=lambda: datetime.now(UTC).date(),
        )
        consumer = ReliableConsumer(
            CONSUMER,
            handler,
            RejectionPublisher(runtime.producer, topic_names.rejected),
            runtime.retry_policy,
            settings.handler_timeout_s,
        )
        subscribe(
            broker,
            consumer,
            topic=settings.topic(topics.INTAKE.name),
            group_id=settings.consumer_group,
            documented_payload=ReferralSubmitted,
            description="Referrals submitted by prescribers.",
        )
        broker.publisher(
            topic_names.accepted,
            schema=ReferralAccepted,
            description="Identity-free referrals, via the outbox.",
        )
        broker.publisher(
            topic_names.rejected,
            schema=ReferralRejected,
            description="Refused inputs with a reason code.",
        )

    return build_app(SERVICE, settings, register, DESCRIPTION)


def run() -> None:
    settings = IntakeSettings()
    run_service(SERVICE, settings, lambda: create_app(settings))
