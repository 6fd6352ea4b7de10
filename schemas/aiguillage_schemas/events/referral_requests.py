"""What a prescriber publishes on ``referrals.intake`` after a submission: amend or cancel it.

Both travel signed, like the submission, and are keyed by the referral id so that they are ordered
after the submission on its partition. Only the prescriber that submitted a referral may amend or
cancel it; for any other sender the referral is unknown.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import Identity, ReferralId

CancellationReason = Literal["prescriber_decision", "measure_lifted", "duplicate", "other"]


class ReferralAmendedData(Contract):
    """Contact details (the identity) can be corrected in place. Anything that changes routing
    (residence, needs, frame, bans, deadline) is a cancellation followed by a new referral."""

    prescriber_id: str = Field(min_length=1, max_length=64)
    identity: Identity = Field(description="Replaces the whole identity (sealed again at intake).")


class ReferralAmended(Envelope):
    """A prescriber corrects a referral it submitted."""

    EVENT_TYPE = "referral.amended"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.amended"] = "referral.amended"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralAmendedData


class ReferralCancellationRequestedData(Contract):
    prescriber_id: str = Field(min_length=1, max_length=64)
    reason: CancellationReason


class ReferralCancellationRequested(Envelope):
    """A prescriber withdraws a referral it submitted; intake forwards ``referral.cancelled``."""

    EVENT_TYPE = "referral.cancellation_requested"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.cancellation_requested"] = "referral.cancellation_requested"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralCancellationRequestedData
