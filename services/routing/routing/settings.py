"""routing settings, read from ``AIGUILLAGE_ROUTING_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from aiguillage_common.settings import ServiceSettings, parse_signing_secrets
from routing.domain.decision import Policy


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AIGUILLAGE_ROUTING_", extra="ignore", frozen=True)

    db_schema: str = "routing"
    consumer_group: str = "routing"

    # Decision policy (its version, a hash of these values, is stored with every decision).
    policy_name: str = "default"
    max_distance_km: float = 200.0
    allow_neighbour_fallback: bool = True
    away_from_home_km: float = 20.0
    out_of_territory_km: float = 10.0
    load_weight_km: float = 10.0
    language_penalty_km: float = 30.0
    capacity_freshness_s: float = 30 * 86_400.0
    stale_capacity: Literal["rank", "drop"] = "rank"  # how sites with unconfirmed counts rank
    stale_penalty_km: float = 40.0
    stale_reminder_s: float = 7 * 86_400.0  # counts due this long before going stale are shown
    confirmation_check_interval_s: float = 3600.0  # how often the due counts are logged
    # How often centres are reminded of the counts due (each confirmation is reminded once).
    capacity_reminder_interval_s: float = Field(default=600.0, gt=0)
    record_candidates: int = 25

    # Closed loop: how long a centre has to answer, how many sites are tried before a human.
    offer_timeout_s: float = 5 * 86_400.0
    urgent_offer_timeout_s: float = 86_400.0  # eviction housing: answer within 24 h
    min_offer_window_s: float = 4 * 3600.0  # a prescriber's respond_by never leaves less
    max_attempts: int = 3
    escalate_urgent_waits: bool = True  # urgent with no place in reach: tell a human at once
    timer_poll_interval_s: float = 1.0
    reservation_retries: int = 5

    # Who may speak on centres.responses and directory.updates (docs/routing.md, signing).
    signing_secrets: SecretStr = Field(
        default=SecretStr("{}"),
        description="JSON object: signing key id of the sender registry -> shared secret (from "
        "a secret store). A registered key without a secret here is refused as unknown.",
    )
    replay_window_s: int = Field(
        default=300,
        ge=1,
        description="A signed timestamp further than this from when its record reached the "
        "broker (LogAppendTime) is refused (stale_signature).",
    )
    senders_file: Path | None = Field(
        default=None, description="Sender registry; default data/centre_senders.json."
    )
    # One name with the operators' replay tool (like intake's): it signs replay headers with it,
    # routing verifies them so a replayed answer is measured from its original arrival.
    operations_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="AIGUILLAGE_OPERATIONS_SECRET",
        description="Verifies operators' replay headers. Empty: a replay is checked like any "
        "record.",
    )

    # Seed: used when the directory is empty at start (and by `aiguillage-routing-directory`).
    seed_directory_if_empty: bool = True
    seed_path_months: float = 4.0

    def secrets(self) -> dict[str, bytes]:
        return parse_signing_secrets(self.signing_secrets.get_secret_value())

    def policy(self) -> Policy:
        return Policy(
            max_distance_km=self.max_distance_km,
            allow_neighbour_fallback=self.allow_neighbour_fallback,
            away_from_home_km=self.away_from_home_km,
            out_of_territory_km=self.out_of_territory_km,
            load_weight_km=self.load_weight_km,
            language_penalty_km=self.language_penalty_km,
            capacity_freshness=timedelta(seconds=self.capacity_freshness_s),
            stale_capacity=self.stale_capacity,
            stale_penalty_km=self.stale_penalty_km,
            record_candidates=self.record_candidates,
            name=self.policy_name,
        )
