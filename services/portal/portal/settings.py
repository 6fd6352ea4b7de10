"""Portal settings, read from ``AIGUILLAGE_PORTAL_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings

# Where `./run setup` vendors the front-end assets (npm ci in services/portal; git-ignored).
DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "node_modules"


class PortalSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_PORTAL_", extra="ignore", frozen=True)

    db_schema: str = "portal"
    consumer_group: str = "portal"
    # The operator console reads routing's directory and decision records (same database).

    http_host: str = Field(default="127.0.0.1", description="Where the web server listens.")
    http_port: int = Field(default=8090, description="0: chosen by the OS, logged at start.")
    public_url: str = Field(
        default="http://127.0.0.1:8090",
        description="How users reach the portal (links in enrolment messages; behind a proxy, "
        "its https address).",
    )
    cookie_secure: bool = Field(
        default=True, description="Cookies only over HTTPS; false only for local http demos/tests."
    )
    assets_dir: Path = Field(
        default=DEFAULT_ASSETS, description="node_modules holding @gouvfr/dsfr and htmx.org."
    )

    # Signing of what the portal publishes on centres.responses and directory.updates.
    signing_key_id: str = "portal-2026"
    signing_secret: SecretStr = Field(
        default=SecretStr(""), description="Shared with routing (ROUTING_SIGNING_SECRETS)."
    )

    # The person's identity on the holding centre's offer page, asked of intake at each view.
    intake_identity_url: str = Field(
        default="", description="e.g. http://intake:8081/internal/v1/identity-releases"
    )
    identity_api_secret: SecretStr = Field(default=SecretStr(""))

    totp_key: SecretStr = Field(
        default=SecretStr(""),
        description="Base64 of 32 random bytes (from a secret store): seals every user's TOTP "
        "secret in the database. Required: the portal and its admin CLI refuse to start "
        "without it.",
    )
    identity_api_timeout_s: float = Field(default=3.0, gt=0)

    session_idle_s: float = Field(default=30 * 60, gt=0)
    session_absolute_s: float = Field(default=10 * 3600, gt=0)
    enrolment_valid_s: float = Field(default=72 * 3600, gt=0)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=30, ge=1)
    login_window_s: float = Field(default=15 * 60, gt=0)

    capacity_freshness_s: float = Field(
        default=30 * 86_400.0, gt=0, description="Keep equal to routing's CAPACITY_FRESHNESS_S."
    )
    capacity_reminder_s: float = Field(
        default=7 * 86_400.0, ge=0, description="Keep equal to routing's STALE_REMINDER_S."
    )

    # The operator console reads the other services' records with the same use cases as the
    # `aiguillage` command (timeline, dead letters), on the portal's database and broker.
    console_intake_schema: str = Field(
        default="intake", description="Intake's schema (timeline: admission, identity releases)."
    )
    console_routing_schema: str = Field(
        default="routing",
        description="Routing's schema (timeline: decisions, holds, waiting; the network and "
        "indicator pages: directory, capacity, decision records).",
    )
    console_notifications_schema: str = Field(
        default="notifications", description="Notifications' schema (timeline: deliveries)."
    )
    console_operations_schema: str = Field(
        default="operations",
        description="Where replays and discards of dead letters are recorded (the schema of "
        "`aiguillage dead-letters`, created by `aiguillage-migrate operations`).",
    )
    # One name with intake and the command line, hence an alias outside the prefix.
    operations_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="AIGUILLAGE_OPERATIONS_SECRET",
        description="Signs the replay headers of dead letters replayed from the console (intake "
        "then measures its replay window from the original's time). Empty: unsigned copies.",
    )

    @property
    def dsfr_dir(self) -> Path:
        return self.assets_dir / "@gouvfr" / "dsfr" / "dist"

    @property
    def htmx_file(self) -> Path:
        return self.assets_dir / "htmx.org" / "dist" / "htmx.min.js"
