"""Identity-free events that travel between Aiguillage's services."""

from __future__ import annotations

from datetime import date
from typing import Literal
from uuid import UUID

from pydantic import Field

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import DepartementCode, InseeCode, ReferralId
from aiguillage_schemas.vocabulary import (
    JudicialFrame,
    PrescriberKind,
    RejectionReason,
    ServiceCode,
    Urgency,
)


class ReferralAcceptedData(Contract):
    """Routing attributes and needs flags only: no identity, no free text, no victim data as such.

    ``excluded_communes`` merges the person's bans with the victim's commune, unlabelled, so that
    routing can keep sites away without learning where the victim lives.
    """

    prescriber_id: str
    prescriber_kind: PrescriberKind
    judicial_frame: JudicialFrame
    residence_commune_insee: InseeCode
    residence_departement: DepartementCode
    needed_services: list[ServiceCode] = Field(min_length=1)
    excluded_communes: list[InseeCode] = Field(default_factory=list)
    excluded_departements: list[DepartementCode] = Field(default_factory=list)
    urgency: Urgency
    respond_by: date | None = None
    language: str
    interpreter_needed: bool


class ReferralAccepted(Envelope):
    """Intake checked and stored a referral; it can be routed."""

    EVENT_TYPE = "referral.accepted"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.accepted"] = "referral.accepted"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralAcceptedData


class ReferralCancelledData(Contract):
    prescriber_id: str
    prescriber_kind: PrescriberKind
    reason: Literal["prescriber_decision", "measure_lifted", "duplicate", "other"]


class ReferralCancelled(Envelope):
    """Intake forwards a prescriber's cancellation (same topic and key as the referral, so it
    is ordered after it); routing releases any place and tells the centre."""

    EVENT_TYPE = "referral.cancelled"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.cancelled"] = "referral.cancelled"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralCancelledData


MAX_REJECTION_ERRORS = 10


class RejectionError(Contract):
    """One problem found in a refused message, with where it is."""

    reason: RejectionReason
    message: str = Field(max_length=500, description="Human explanation; never echoes input.")
    field_path: str | None = Field(default=None, description="e.g. 'data.person.residence'.")


class Rejection(Contract):
    """Why a message was refused, precise enough for its sender to fix it.

    ``reason``, ``message`` and ``field_path`` describe the first problem found; ``errors`` lists
    every problem found (the first 10), so that a sender fixes them all at once.
    """

    reason: RejectionReason
    message: str = Field(max_length=500, description="Human explanation; never echoes input.")
    field_path: str | None = Field(default=None, description="e.g. 'data.person.residence'.")
    original_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    original_topic: str
    original_partition: int
    original_offset: int
    original_event_id: UUID | None = None
    prescriber_id: str | None = Field(
        default=None, description="Set when the sender could be identified, so it can be told."
    )
    errors: list[RejectionError] = Field(
        default_factory=list,
        max_length=MAX_REJECTION_ERRORS,
        description="Every problem found (the first 10); the first is also reason / message / "
        "field_path. Optional: empty in records written before it existed.",
    )


class DeadLetter(Rejection):
    consumer: str = Field(description="Consumer group that gave up on the message.")


class ReferralRejected(Envelope):
    """Intake refused an input. Subject is the referral id when it could be read, else 'unknown'."""

    EVENT_TYPE = "referral.rejected"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.rejected"] = "referral.rejected"
    schema_version: Literal[1] = 1
    data: Rejection


class MessageDeadLettered(Envelope):
    """An internal consumer gave up on a message; operators find it on a dead-letter topic."""

    EVENT_TYPE = "message.dead_lettered"
    SCHEMA_VERSION = 1

    event_type: Literal["message.dead_lettered"] = "message.dead_lettered"
    schema_version: Literal[1] = 1
    data: DeadLetter
