"""referral-intake settings, read from ``AIGUILLAGE_INTAKE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings, parse_signing_secrets


class IntakeStoreSettings(ServiceSettings):
    """What operator commands need of intake's settings (database, groups, retention): no secret,
    so ``aiguillage purge`` and ``aiguillage lag`` run without the identity master key."""

    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_INTAKE_", extra="ignore", frozen=True)

    db_schema: str = "intake"
    consumer_group: str = "referral-intake"
    retention_days: int = Field(
        default=365, ge=0, description="Closed referrals older than this are purged."
    )


class IntakeSettings(IntakeStoreSettings):
    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_INTAKE_", extra="ignore", frozen=True)

    max_message_bytes: int = Field(default=64 * 1024, description="Larger inputs are rejected.")
    identity_master_key: SecretStr = Field(
        description="Base64 of 32 random bytes; wraps each person's identity key."
    )
    identity_master_key_id: str = "k1"
    signing_secrets: SecretStr = Field(
        default=SecretStr("{}"),
        description="JSON object: signing key id -> shared secret (from a secret store).",
    )
    replay_window_s: int = Field(
        default=300,
        ge=1,
        description="A signed timestamp further than this from when its record reached the "
        "broker (LogAppendTime) is refused.",
    )
    # One name with the operators' replay tool, hence an alias outside the AIGUILLAGE_INTAKE_
    # prefix: the tool signs replay headers with it, intake verifies them.
    operations_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="AIGUILLAGE_OPERATIONS_SECRET",
        description="Verifies operators' replay headers (the original broker time then counts "
        "for the replay window). Empty: a replay is checked like any record.",
    )
    jurisdiction_policy: Literal["reject", "flag"] = Field(
        default="reject",
        description="A referral outside its prescriber's jurisdiction: refuse it, or admit it "
        "flagged for review.",
    )
    registry_cache_s: float = Field(
        default=5.0,
        description="How long a registry lookup is reused: an update reaches every instance "
        "within this time.",
    )
    registry_file: Path | None = Field(
        default=None, description="Prescriber registry at start; default data/prescribers.json."
    )
    # Internal identity API (see docs/intake.md): off unless a secret is set.
    identity_api_host: str = Field(
        default="127.0.0.1", description="Interface the identity API listens on."
    )
    identity_api_port: int = Field(
        default=8081, ge=0, le=65535, description="0: the OS chooses (logged at start)."
    )
    identity_api_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Shared with notifications; signs release requests. Empty: no identity API.",
    )
    identity_api_window_s: int = Field(
        default=60, ge=1, description="Signed requests older or newer than this are refused."
    )
    identity_api_timeout_s: float = Field(
        default=5.0, gt=0, description="Bound on answering one release request."
    )

    def secrets(self) -> dict[str, bytes]:
        return parse_signing_secrets(self.signing_secrets.get_secret_value())
