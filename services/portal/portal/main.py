"""Composition root of the portal: projection consumers, signed outbox, web server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
from faststream.kafka import KafkaBroker

from aiguillage_common.geography import load_geography
from aiguillage_common.health import HealthState
from aiguillage_common.logging import get_logger
from aiguillage_common.runtime import BackgroundWorker, Runtime, ServiceApp, build_app, run_service
from aiguillage_operations.timeline_read import Database, Places
from aiguillage_schemas import topics
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    DIRECTORY_UPDATES,
    CapacityUpdated,
    OfferAnswered,
    PathReport,
)
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralRejected,
)
from aiguillage_schemas.events.routing_decisions import ReferralRouted
from portal.adapters.console import dead_letters, referrals
from portal.adapters.console.indicators import IndicatorPages, IndicatorQueries
from portal.adapters.console.network import DirectoryReader, NetworkPages
from portal.adapters.console.reference import load_territory
from portal.adapters.identity import IdentityClient
from portal.adapters.kafka import ProjectionHandler
from portal.adapters.postgres import PortalStore, PortalUnitOfWork
from portal.adapters.secret_box import SecretBox
from portal.adapters.seed import seed_directory
from portal.adapters.server import WebServer
from portal.adapters.signing import record_signer
from portal.adapters.web import WebDeps, create_web_app
from portal.domain.capacity import FreshnessPolicy
from portal.domain.projection import ROUTING_EVENTS
from portal.domain.security import SessionPolicy, ThrottlePolicy
from portal.settings import PortalSettings
from portal.use_cases.centre_actions import Topics

SERVICE = "portal"
DESCRIPTION = "The web portal of centres, prescribers and operators; publishes signed answers."
CONSUMER = "portal"
log = get_logger("aiguillage.portal")


def _now() -> datetime:
    return datetime.now(UTC)


class _Seeder:
    """Sites and capacities from the reference data, before the first page is served."""

    def __init__(self, store: PortalStore) -> None:
        self._store = store

    async def start(self) -> None:
        await seed_directory(self._store, load_geography(), _now())
        sealed = await self._store.seal_clear_totp_secrets()
        if sealed:
            log.info("portal.totp_secrets_sealed", count=sealed)

    async def stop(self) -> None:
        return None


class _Closing:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._client.aclose()


def create_app(
    settings: PortalSettings | None = None, health: HealthState | None = None
) -> ServiceApp:
    settings = settings or PortalSettings()
    dead_letter_topic = settings.topic(topics.PORTAL_DEAD_LETTER.name)
    targets = Topics(
        centre_responses=settings.topic(topics.CENTRE_RESPONSES.name),
        directory_updates=settings.topic(topics.DIRECTORY_UPDATES.name),
    )
    secret = settings.signing_secret.get_secret_value().encode("utf-8")

    def register(broker: KafkaBroker, runtime: Runtime) -> None:
        def uow() -> PortalUnitOfWork:
            return PortalUnitOfWork(runtime.require_pool())

        sources: Sequence[tuple[topics.Topic, str, Sequence[type[Envelope]], object]] = (
            (topics.ROUTED, CONSUMER, ROUTING_EVENTS, ReferralRouted),
            (topics.ACCEPTED, f"{CONSUMER}.accepted", (ReferralAccepted,), ReferralAccepted),
            (topics.REJECTED, f"{CONSUMER}.rejected", (ReferralRejected,), ReferralRejected),
            (
                topics.DIRECTORY_UPDATES,
                f"{CONSUMER}.directory",
                DIRECTORY_UPDATES,
                CapacityUpdated,
            ),
        )
        for topic, name, accepted, documented in sources:
            runtime.consume(
                broker,
                name,
                ProjectionHandler(uow, accepted, name),
                runtime.dead_letters(dead_letter_topic, name),
                topic=settings.topic(topic.name),
                group_id=f"{settings.consumer_group}{name.removeprefix(CONSUMER)}",
                documented_payload=documented,
                description=f"The portal's projection ({topic.purpose}).",
            )
        broker.publisher(
            targets.centre_responses,
            schema=OfferAnswered | PathReport,
            description="Centre staff's answers and path reports, signed with the portal's key.",
        )
        broker.publisher(
            targets.directory_updates,
            schema=CapacityUpdated,
            description="Capacity confirmed or changed by centre staff, signed.",
        )
        broker.publisher(
            dead_letter_topic,
            schema=MessageDeadLettered,
            description="Messages the portal's projection could not read.",
        )

    # Checked before anything starts: without the key no account could sign in.
    box = SecretBox(settings.totp_key.get_secret_value())

    def workers(runtime: Runtime) -> list[BackgroundWorker]:
        if not secret:
            # Routing refuses unsigned records: say so at start, not at the first refusal.
            log.warning("portal.unsigned", detail="AIGUILLAGE_PORTAL_SIGNING_SECRET is not set")
        pool = runtime.require_pool()
        store = PortalStore(pool, box)
        client = httpx.AsyncClient()
        freshness = FreshnessPolicy(
            timedelta(seconds=settings.capacity_freshness_s),
            timedelta(seconds=settings.capacity_reminder_s),
        )
        territory = load_territory()  # the map's geometry, built once
        network = NetworkPages(
            DirectoryReader(pool, settings.console_routing_schema),
            territory,
            freshness,
            lambda: PortalUnitOfWork(pool),
            targets,
            _now,
        )
        indicators = IndicatorPages(
            IndicatorQueries(pool, settings.console_routing_schema), territory, _now
        )
        deps = WebDeps(
            store=store,
            uow_factory=lambda: PortalUnitOfWork(pool),
            identity=IdentityClient(
                client,
                settings.intake_identity_url,
                settings.identity_api_secret.get_secret_value().encode("utf-8"),
                settings.identity_api_timeout_s,
            ),
            topics=targets,
            session_policy=SessionPolicy(
                timedelta(seconds=settings.session_idle_s),
                timedelta(seconds=settings.session_absolute_s),
            ),
            throttle=ThrottlePolicy(
                settings.login_max_failures_per_account,
                settings.login_max_failures_per_address,
                timedelta(seconds=settings.login_window_s),
            ),
            public_url=settings.public_url,
            cookie_secure=settings.cookie_secure,
            enrolment_valid=timedelta(seconds=settings.enrolment_valid_s),
            freshness=freshness,
            dsfr_dir=settings.dsfr_dir,
            htmx_file=settings.htmx_file,
            clock=_now,
            console=(*_console(settings, store), network.register, indicators.register),
        )
        web = WebServer(
            lambda: create_web_app(deps),
            settings.http_host,
            settings.http_port,
            settings.graceful_timeout_s,
        )
        return [_Seeder(store), _Closing(client), web]

    factory: Callable[[Runtime], Sequence[BackgroundWorker]] = workers
    return build_app(
        SERVICE,
        settings,
        register,
        DESCRIPTION,
        factory,
        health,
        sign_outgoing=record_signer(settings.signing_key_id, secret) if secret else None,
    )


def _console(settings: PortalSettings, store: PortalStore) -> tuple[Callable[..., None], ...]:
    """The operator console's modules and what each reads: the other services' schemas on the
    portal's database, the dead-letter topics on its broker (as `aiguillage` reads them)."""
    url = settings.database_url
    places = Places(
        intake=Database(url, settings.console_intake_schema),
        routing=Database(url, settings.console_routing_schema),
        notifications=Database(url, settings.console_notifications_schema),
        operations=Database(url, settings.console_operations_schema),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        portal=Database(url, settings.db_schema),
    )
    secret = settings.operations_secret.get_secret_value().encode("utf-8") or None
    return (
        partial(referrals.register, places=places, store=store),
        partial(
            dead_letters.register,
            console=dead_letters.DeadLetterConsole(places, secret, store),
        ),
    )


def run() -> None:
    settings = PortalSettings()
    run_service(SERVICE, settings, lambda health: create_app(settings, health))
