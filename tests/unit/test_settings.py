"""One set of names for every service: the shared broker and database variables that
``./run infra env`` prints reach each service, and a service's own prefixed variable wins."""

from __future__ import annotations

import pytest

from notifications.settings import NotificationsSettings
from referral_intake.settings import IntakeSettings
from routing.settings import RoutingSettings

KEY = "A" * 43 + "="
SHARED_KAFKA, SHARED_DB = "127.0.0.1:29092", "postgresql://u:p@127.0.0.1:25432/copy"
PREFIXES = ("AIGUILLAGE_INTAKE_", "AIGUILLAGE_ROUTING_", "AIGUILLAGE_NOTIFICATIONS_")


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for prefix in PREFIXES:
        monkeypatch.delenv(f"{prefix}KAFKA_BOOTSTRAP_SERVERS", raising=False)
        monkeypatch.delenv(f"{prefix}DATABASE_URL", raising=False)
    monkeypatch.setenv("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS", SHARED_KAFKA)
    monkeypatch.setenv("AIGUILLAGE_DATABASE_URL", SHARED_DB)
    return monkeypatch


def _all() -> list[IntakeSettings | RoutingSettings | NotificationsSettings]:
    return [IntakeSettings(identity_master_key=KEY), RoutingSettings(), NotificationsSettings()]


def test_every_service_reads_the_shared_names(shared: pytest.MonkeyPatch) -> None:
    for settings in _all():
        assert (settings.kafka_bootstrap_servers, settings.database_url) == (
            SHARED_KAFKA,
            SHARED_DB,
        ), type(settings).__name__


def test_a_services_own_prefixed_setting_wins(shared: pytest.MonkeyPatch) -> None:
    shared.setenv("AIGUILLAGE_ROUTING_DATABASE_URL", "postgresql://u:p@elsewhere/routing")
    shared.setenv("AIGUILLAGE_INTAKE_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    intake, routing, notifications = _all()
    assert routing.database_url == "postgresql://u:p@elsewhere/routing"
    assert routing.kafka_bootstrap_servers == SHARED_KAFKA
    assert intake.kafka_bootstrap_servers == "elsewhere:9092"
    assert intake.database_url == SHARED_DB
    assert notifications.database_url == SHARED_DB


def test_arguments_win_over_every_variable(shared: pytest.MonkeyPatch) -> None:
    settings = RoutingSettings(kafka_bootstrap_servers="kafka:9092")
    assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_without_any_variable_the_local_defaults_apply(shared: pytest.MonkeyPatch) -> None:
    shared.delenv("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS")
    shared.setenv("AIGUILLAGE_DATABASE_URL", "")  # empty is as good as unset
    settings = RoutingSettings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.database_url.endswith("@127.0.0.1:15432/aiguillage")
