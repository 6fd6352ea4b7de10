"""Notifications issued to centres and prescribers, published on ``notifications.outbound``."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import ReferralId

RecipientKind = Literal["centre", "prescriber"]
NotificationTopic = Literal[
    "referral_offered",  # to the centre: a new referral is proposed to one of your sites
    "referral_routed",  # to the prescriber: where the referral went
    "referral_unroutable",  # to the prescriber: no site could take it; a coordinator follows up
    "referral_withdrawn",  # to the centre: the prescriber cancelled; the offer or place is released
    "answer_reminder",  # to the centre: the answer deadline of an offer is near
    "referral_received",  # to the prescriber: intake accepted the referral
    "referral_rejected",  # to the prescriber: intake refused it, with the reason
    "referral_rerouted",  # to the prescriber: offered to another site (declined or expired)
    "referral_waitlisted",  # to the prescriber: waiting for a place, with its position
    "referral_escalated",  # to the prescriber: a human coordinator takes the referral over
    "referral_placed",  # to the prescriber: the centre accepted, the person has a place
    "path_reported",  # to the prescriber: a factual step of the path (attendance, completion...)
    "capacity_confirmation_due",  # to the centre: confirm a site's count before it goes stale
]
DeliveryChannel = Literal["kafka", "webhook", "email"]


class NotificationIssuedData(Contract):
    notification_id: UUID = Field(description="Stable per (triggering event, recipient).")
    recipient_kind: RecipientKind
    recipient_id: str = Field(description="Centre id or prescriber id.")
    topic: NotificationTopic
    reference: str = Field(
        description="The referral reference the recipient quotes back; for a notice about no "
        "referral (capacity_confirmation_due), the notice's own reference 'capacite-<16 hex>'."
    )
    site_id: str | None = None
    title: str
    body: str = Field(description="French text; never identity or judicial details.")
    caused_by_event_id: UUID


class NotificationIssued(Envelope):
    EVENT_TYPE = "notification.issued"
    SCHEMA_VERSION = 1

    event_type: Literal["notification.issued"] = "notification.issued"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: NotificationIssuedData


class NotificationDeliveryFailedData(Contract):
    """Identity-free: which delivery gave up and why, so an operator can act on it."""

    delivery_id: UUID = Field(description="Stable per (notification, channel); idempotency key.")
    notification_id: UUID
    recipient_kind: RecipientKind
    recipient_id: str
    channel: DeliveryChannel
    reason: Literal["permanent_failure", "retries_exhausted"]
    attempts: int = Field(ge=1)
    error_class: str = Field(
        description="e.g. 'http_404', 'smtp_550', 'timeout', 'connect'; 'identity_wait_expired' "
        "(with reason 'retries_exhausted') when a webhook waited as long as allowed for the "
        "person's identity and intake never gave it."
    )
    http_status: int | None = None
    smtp_code: int | None = None
    fallback_delivery_id: UUID | None = Field(
        default=None, description="The delivery on the next channel, when there is one."
    )


class NotificationDeliveryFailed(Envelope):
    """A notification could not be delivered on one channel; published on the notifications
    dead-letter topic."""

    EVENT_TYPE = "notification.delivery_failed"
    SCHEMA_VERSION = 1

    event_type: Literal["notification.delivery_failed"] = "notification.delivery_failed"
    schema_version: Literal[1] = 1
    subject: str = Field(min_length=1, max_length=64, description="The referral reference.")
    data: NotificationDeliveryFailedData
