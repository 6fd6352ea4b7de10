"""routing settings, read from ``AIGUILLAGE_ROUTING_*`` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_ROUTING_", extra="ignore", frozen=True)

    db_schema: str = "routing"
    consumer_group: str = "routing"
