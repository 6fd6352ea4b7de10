"""Composition root of referral-intake: settings, adapters, subscriber, app."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.kafka import KafkaBroker

from aiguillage_common.geography import load_geography
from aiguillage_common.health import HealthState
from aiguillage_common.runtime import BackgroundWorker, Runtime, ServiceApp, build_app, run_service
from aiguillage_schemas import topics
from aiguillage_schemas.events.prescribers import PrescriberEntry, PrescriberRegistryUpdated
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralRejected,
)
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, ReferralSubmittedV1
from aiguillage_schemas.events.routing_decisions import (
    RoutingDecisionEvent,
)
from referral_intake.adapters.identity_api import IdentityApi
from referral_intake.adapters.identity_cipher import IdentityCipher
from referral_intake.adapters.kafka import (
    HolderHandler,
    IntakeHandler,
    RegistryHandler,
    RejectionPublisher,
)
from referral_intake.adapters.postgres import (
    PostgresHoldersUnitOfWork,
    PostgresIntakeUnitOfWork,
    PostgresRegistry,
    PostgresRegistryUnitOfWork,
    PostgresReleaseStore,
)
from referral_intake.adapters.registry_file import load_registry_file
from referral_intake.settings import IntakeSettings
from referral_intake.use_cases.identity_release import ROUTED_CONSUMER
from referral_intake.use_cases.submit_referral import CONSUMER, Topics
from referral_intake.use_cases.update_registry import REGISTRY_CONSUMER

SERVICE = "referral-intake"
DESCRIPTION = (
    "Checks referrals published by prescribers, keeps the identity sealed, and forwards an "
    "identity-free referral to routing; every refused input is answered on referrals.rejected."
)


def create_app(
    settings: IntakeSettings | None = None, health: HealthState | None = None
) -> ServiceApp:
    settings = settings or IntakeSettings()
    geography = load_geography()
    registry_file = load_registry_file(settings.registry_file)
    secrets = settings.secrets()
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
            registry=_LazyRegistry(runtime, registry_file, settings.registry_cache_s),
            secrets=secrets,
            replay_window_s=settings.replay_window_s,
            flag_outside_jurisdiction=settings.jurisdiction_policy == "flag",
            operations_secret=settings.operations_secret.get_secret_value().encode("utf-8"),
        )
        rejections = RejectionPublisher(runtime.producer, topic_names.rejected)
        runtime.consume(
            broker,
            CONSUMER,
            handler,
            rejections,
            topic=settings.topic(topics.INTAKE.name),
            group_id=settings.consumer_group,
            documented_payload=ReferralSubmitted
            | ReferralSubmittedV1
            | ReferralAmended
            | ReferralCancellationRequested,
            description="Referrals submitted, amended (referral.amended) or cancelled "
            "(referral.cancellation_requested) by prescribers; signed (see docs/intake.md).",
            set_aside="rejected",
        )
        runtime.consume(
            broker,
            REGISTRY_CONSUMER,
            RegistryHandler(lambda: PostgresRegistryUnitOfWork(runtime.require_pool())),
            rejections,
            topic=settings.topic(topics.PRESCRIBERS_REGISTRY.name),
            # Its own group: a registry update must reach this service even while the referral
            # consumers rebalance, and must not make them rebalance.
            group_id=f"{settings.consumer_group}.registry",
            documented_payload=PrescriberRegistryUpdated,
            description="Prescriber registry updates; they override the registry file.",
            set_aside="rejected",
        )
        dead_letter_topic = settings.topic(topics.INTAKE_DEAD_LETTER.name)
        runtime.consume(
            broker,
            ROUTED_CONSUMER,
            HolderHandler(lambda: PostgresHoldersUnitOfWork(runtime.require_pool())),
            # Not referrals.rejected: a bad routing event is no prescriber's business.
            runtime.dead_letters(dead_letter_topic, ROUTED_CONSUMER),
            topic=settings.topic(topics.ROUTED.name),
            # Its own group: following routing must never pause or rebalance admissions.
            group_id=f"{settings.consumer_group}.routed",
            documented_payload=RoutingDecisionEvent,
            description="Routing decisions, read to know which centre holds each referral and "
            "so may receive the identity (docs/intake.md).",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered,
            description="Routing events intake could not read, with a reason.",
        )
        broker.publisher(
            topic_names.accepted,
            schema=ReferralAccepted | ReferralCancelled,
            description="Identity-free referrals and their cancellations, via the outbox.",
        )
        broker.publisher(
            topic_names.rejected,
            schema=ReferralRejected,
            description="Refused inputs with a reason code.",
        )

    def workers(runtime: Runtime) -> list[BackgroundWorker]:
        secret = settings.identity_api_secret.get_secret_value()
        if not secret:
            return []  # no identity API: nobody outside intake can read an identity
        return [
            IdentityApi(
                PostgresReleaseStore(runtime.require_pool(), cipher),
                secret.encode("utf-8"),
                settings.identity_api_host,
                settings.identity_api_port,
                settings.identity_api_window_s,
                settings.identity_api_timeout_s,
                on_answer=runtime.metrics.identity_release,
            )
        ]

    return build_app(SERVICE, settings, register, DESCRIPTION, workers, health)


class _LazyRegistry:
    """The pool exists only once the app started; handlers run only after that."""

    def __init__(
        self, runtime: Runtime, from_file: dict[str, PrescriberEntry], cache_s: float
    ) -> None:
        self._runtime = runtime
        self._from_file = from_file
        self._cache_s = cache_s
        self._registry: PostgresRegistry | None = None

    async def by_key_id(self, key_id: str) -> PrescriberEntry | None:
        if self._registry is None:
            self._registry = PostgresRegistry(
                self._runtime.require_pool(), self._from_file, self._cache_s
            )
        return await self._registry.by_key_id(key_id)


def run() -> None:
    settings = IntakeSettings()
    run_service(SERVICE, settings, lambda health: create_app(settings, health))
