"""The prescriber registry, updatable by event on ``prescribers.registry``.

Published by the operators who administer the registry (in production only their principal may
write to the topic, see docs/intake.md). Keyed by prescriber id; the newest update wins. Secrets are
never in here: a registry entry names its signing key id, the secret is distributed out of band.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import DepartementCode
from aiguillage_schemas.vocabulary import PrescriberKind


class Jurisdiction(Contract):
    departements: list[DepartementCode] = Field(default_factory=list, max_length=120)
    national: bool = Field(default=False, description="e.g. the national helpline.")


class Channel(Contract):
    type: Literal["kafka", "email", "webhook"]
    address: str | None = Field(default=None, max_length=256)


class PrescriberEntry(Contract):
    prescriber_id: str = Field(min_length=1, max_length=64)
    kind: PrescriberKind
    name: str = Field(min_length=1, max_length=200)
    jurisdiction: Jurisdiction
    signing_key_id: str = Field(min_length=1, max_length=128)
    channels: list[Channel] = Field(default_factory=list, max_length=10)
    active: bool = Field(default=True, description="False revokes the prescriber and its key.")


class PrescriberRegistryUpdated(Envelope):
    """Adds, replaces or revokes one prescriber's registry entry. Subject = prescriber id."""

    EVENT_TYPE = "prescriber.registry_updated"
    SCHEMA_VERSION = 1

    event_type: Literal["prescriber.registry_updated"] = "prescriber.registry_updated"
    schema_version: Literal[1] = 1
    data: PrescriberEntry
