"""Settings every service shares; each service subclasses with its own env prefix.

One set of names works for everything: ``AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS`` and
``AIGUILLAGE_DATABASE_URL`` (what ``./run infra env`` prints, and what the operator tools read) are
read by every service when its own prefixed setting (``AIGUILLAGE_INTAKE_DATABASE_URL``…) is not
set; the prefixed one wins. So a second copy of the stack on other ports is reached by setting the
two shared names once, and never silently talks to the first copy's broker or database.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# field -> the shared environment variable read when the service's prefixed one is not set.
SHARED_ENV: dict[str, str] = {
    "kafka_bootstrap_servers": "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS",
    "database_url": "AIGUILLAGE_DATABASE_URL",
}


class SharedEnvSource(PydanticBaseSettingsSource):
    """The shared, unprefixed names; consulted after the service's own (prefixed) variables."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = SHARED_ENV.get(field_name)
        value = os.environ.get(name) if name else None
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value:  # an empty variable is as good as none
                found[key] = value
        return found


class ServiceSettings(BaseSettings):
    """Infrastructure and delivery knobs. Subclasses set ``env_prefix`` (one per service)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="Broker; <PREFIX>KAFKA_BOOTSTRAP_SERVERS, else "
        "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS.",
    )
    database_url: str = Field(
        default="postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage",
        description="PostgreSQL; <PREFIX>DATABASE_URL, else AIGUILLAGE_DATABASE_URL.",
    )
    db_schema: str = Field(description="PostgreSQL schema the service owns.")
    topic_prefix: str = Field(default="", description="Prepended to every topic (test isolation).")
    consumer_group: str
    log_level: str = "INFO"

    db_pool_max_size: int = 5
    db_command_timeout_s: float = 10.0
    handler_timeout_s: float = 30.0
    # Transient failures are retried for as long as it takes: no attempt cap (docs: README).
    retry_base_delay_s: float = 0.2
    retry_max_delay_s: float = 10.0
    retry_hold_s: float = Field(
        default=60.0,
        description="How long a record is retried in the handler before it is sought back and "
        "fetched again (stays well inside the consumer's 300 s max poll interval).",
    )
    consume_batch_max: int = Field(
        default=200,
        description="Most records handled in one transaction (what one fetch returned, up to "
        "this; a lone record is not held back to fill a batch).",
    )
    health_host: str = "127.0.0.1"
    health_port: int = Field(
        default=0, description="Port of the /health/live and /health/ready endpoint; 0 = off."
    )
    outbox_batch_size: int = 200
    outbox_poll_interval_s: float = 1.0
    graceful_timeout_s: float = 15.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: arguments, then the prefixed variables, then the shared names.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SharedEnvSource(settings_cls),
            file_secret_settings,
        )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def parse_signing_secrets(text: str) -> dict[str, bytes]:
    """A ``*_SIGNING_SECRETS`` setting (JSON object: signing key id -> shared secret) as bytes.
    Read once at start; a malformed value stops the service there rather than refusing every
    record later."""
    parsed = json.loads(text)
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items()
    ):
        raise ValueError("signing_secrets must be a JSON object of non-empty strings")
    return {key: value.encode("utf-8") for key, value in parsed.items()}
