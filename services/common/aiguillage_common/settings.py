"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Infrastructure and delivery knobs. Subclasses set ``env_prefix`` (one per service)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    database_url: str = "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage"
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

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
