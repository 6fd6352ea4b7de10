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
]


class NotificationIssuedData(Contract):
    notification_id: UUID = Field(description="Stable per (triggering event, recipient).")
    recipient_kind: RecipientKind
    recipient_id: str = Field(description="Centre id or prescriber id.")
    topic: NotificationTopic
    reference: str = Field(description="The referral reference the recipient quotes back.")
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
