"""referral-intake settings, read from ``AIGUILLAGE_INTAKE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_INTAKE_", extra="ignore", frozen=True)

    db_schema: str = "intake"
    consumer_group: str = "referral-intake"
    max_message_bytes: int = Field(default=64 * 1024, description="Larger inputs are rejected.")
    identity_master_key: SecretStr = Field(
        description="Base64 of 32 random bytes; wraps each person's identity key."
    )
    identity_master_key_id: str = "k1"
