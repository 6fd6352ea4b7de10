"""notifications settings, read from ``AIGUILLAGE_NOTIFICATIONS_*`` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIGUILLAGE_NOTIFICATIONS_", extra="ignore", frozen=True
    )

    db_schema: str = "notifications"
    consumer_group: str = "notifications"
