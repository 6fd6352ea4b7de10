"""Every event contract, for generation, documentation and tests."""

from __future__ import annotations

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import CENTRE_RESPONSES, DIRECTORY_UPDATES
from aiguillage_schemas.events.directory_notices import DIRECTORY_NOTICES
from aiguillage_schemas.events.notifications import NotificationDeliveryFailed, NotificationIssued
from aiguillage_schemas.events.prescribers import PrescriberRegistryUpdated
from aiguillage_schemas.events.referral_lifecycle import (
    MessageDeadLettered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralRejected,
)
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, ReferralSubmittedV1
from aiguillage_schemas.events.routing_decisions import (
    ROUTING_DECISION_EVENTS,
)

ALL_EVENTS: tuple[type[Envelope], ...] = (
    ReferralSubmitted,
    ReferralAccepted,
    ReferralRejected,
    ReferralCancelled,
    *ROUTING_DECISION_EVENTS,
    NotificationIssued,
    NotificationDeliveryFailed,
    MessageDeadLettered,
    ReferralSubmittedV1,
    ReferralAmended,
    ReferralCancellationRequested,
    PrescriberRegistryUpdated,
    *CENTRE_RESPONSES,
    *DIRECTORY_UPDATES,
    *DIRECTORY_NOTICES,
)
