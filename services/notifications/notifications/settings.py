"""notifications settings, read from ``AIGUILLAGE_NOTIFICATIONS_*`` environment variables."""

from __future__ import annotations

from aiguillage_common.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIGUILLAGE_NOTIFICATIONS_", extra="ignore", frozen=True
    )

    db_schema: str = "notifications"
    consumer_group: str = "notifications"
