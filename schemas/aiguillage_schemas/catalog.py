"""Every event contract, for generation, documentation and tests."""

from __future__ import annotations

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import CENTRE_RESPONSES, DIRECTORY_UPDATES
from aiguillage_schemas.events.notifications import NotificationIssued
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralRejected,
)
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    ReferralEscalated,
    ReferralPlaced,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralWithdrawn,
)

ALL_EVENTS: tuple[type[Envelope], ...] = (
    ReferralSubmitted,
    ReferralAccepted,
    ReferralRejected,
    ReferralCancelled,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralEscalated,
    ReferralPlaced,
    ReferralWithdrawn,
    PathReported,
    NotificationIssued,
    MessageDeadLettered,
    *CENTRE_RESPONSES,
    *DIRECTORY_UPDATES,
)
