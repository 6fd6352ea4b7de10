"""notifications settings, read from ``AIGUILLAGE_NOTIFICATIONS_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIGUILLAGE_NOTIFICATIONS_", extra="ignore", frozen=True
    )

    db_schema: str = "notifications"
    consumer_group: str = "notifications"

    # Webhooks: where each recipient's system listens, and the secret it checks signatures with.
    # Configuration, never data files. ``{kind}`` and ``{id}`` are filled in per recipient.
    webhook_url_template: str = Field(
        default="", description="e.g. https://hooks.example/{kind}/{id}; empty: no webhooks."
    )
    webhook_urls: dict[str, str] = Field(
        default_factory=dict, description="Per-recipient override, key 'centre:ARA-LYON'."
    )
    webhook_secret: SecretStr = Field(default=SecretStr(""), description="Default HMAC secret.")
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Per-recipient secret, key 'centre:ARA-LYON'."
    )
    webhook_timeout_s: float = 5.0

    # The person's identity in the centre's offer webhook, asked of intake (docs/notifications.md).
    intake_identity_url: str = Field(
        default="",
        description="e.g. http://intake:8081/internal/v1/identity-releases; empty: offers carry "
        "no identity.",
    )
    identity_api_secret: SecretStr = Field(
        default=SecretStr(""), description="Shared with intake; signs identity requests."
    )
    identity_api_timeout_s: float = Field(default=3.0, gt=0)

    smtp_host: str = Field(default="", description="SMTP relay; empty: no e-mail channel.")
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_start_tls: bool = False
    smtp_timeout_s: float = 10.0
    # SMTP sessions stay open between e-mails (one per e-mail in flight).
    smtp_local_hostname: str = Field(
        default="", description="Name given in EHLO; empty: this host's FQDN, looked up once."
    )
    smtp_max_messages_per_session: int = Field(
        default=100, ge=1, description="Then the session is closed and a new one opened."
    )
    smtp_session_idle_s: float = Field(
        default=10.0, gt=0, description="An idle session is closed after this long."
    )
    mail_from: str = "Aiguillage <notifications@aiguillage.demo.invalid>"
    message_id_domain: str = "aiguillage.demo.invalid"

    # Delivery: retries of transient failures back off exponentially with jitter.
    delivery_max_attempts: int = 8
    delivery_base_delay_s: float = 2.0
    delivery_max_delay_s: float = 600.0
    delivery_batch_size: int = 64
    delivery_poll_interval_s: float = 1.0
    # Sends in flight per worker and channel: what a crash (kill -9) may repeat at most. Each
    # lane waits for a commit between two sends, so lanes are what keeps deliveries up with a
    # burst (measured: 8 and 4 fell behind routing, 16 and 8 kept up; docs/notifications.md).
    delivery_email_concurrency: int = Field(default=16, ge=1)
    delivery_webhook_concurrency: int = Field(default=8, ge=1)

    # A webhook that must carry the identity while intake cannot give it is held, not failed:
    # these tries do not spend DELIVERY_MAX_ATTEMPTS; they follow this schedule instead.
    identity_wait_base_delay_s: float = Field(default=5.0, gt=0)
    identity_wait_max_delay_s: float = Field(default=3600.0, gt=0)
    identity_wait_max_s: float = Field(
        default=72 * 3600.0, gt=0, description="Then dead-lettered (identity_wait_expired)."
    )
    identity_fallback_after_s: float = Field(
        default=60.0,
        ge=0,
        description="The e-mail fallback goes with the first held try this long into the wait.",
    )

    portal_url: str = Field(
        default="",
        description="The portal's public address (e.g. https://aiguillage.example); offers and "
        "reminders then link to the offer's page. Empty: no link.",
    )

    reminder_before_s: float = Field(
        default=24 * 3600, description="Remind the centre this long before its answer deadline."
    )
    digest_window_s: float = Field(
        default=30.0,
        gt=0,
        description="Rejections told to one prescriber, and capacity reminders told to one "
        "centre, by e-mail within this window after the first go out as one digest e-mail per "
        "kind (each is still its own notice on its other channels).",
    )

    @property
    def delivery_lease_s(self) -> float:
        """Longer than any single attempt, so that a leased delivery is never sent twice at once."""
        return max(self.webhook_timeout_s, self.smtp_timeout_s) * 2 + 5
