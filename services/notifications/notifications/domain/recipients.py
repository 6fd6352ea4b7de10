"""Who can be told, and how: recipients and their ordered channels (primary first, then copies).

Pure data: the adapters build it from data/centre_contacts.json, data/prescribers.json and the
settings (webhook URLs are configuration, not data). A channel that is listed but not configured
(a webhook without a URL) is left out here, so that planning never creates an undeliverable row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiguillage_schemas.events.notifications import DeliveryChannel, RecipientKind


@dataclass(frozen=True, slots=True)
class Channel:
    type: DeliveryChannel
    target: str  # e-mail address, webhook URL, or the outbound topic for kafka


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    recipient_id: str
    channels: tuple[Channel, ...]  # [0] is the primary; the others are copies
    public_contact: str | None = None  # centres only: given to prescribers

    @property
    def key(self) -> str:
        return recipient_key(self.kind, self.recipient_id)


def recipient_key(kind: str, recipient_id: str) -> str:
    return f"{kind}:{recipient_id}"


@dataclass(frozen=True)
class Recipients:
    by_key: Mapping[str, Recipient]

    def find(self, kind: RecipientKind, recipient_id: str) -> Recipient | None:
        return self.by_key.get(recipient_key(kind, recipient_id))

    def public_contact(self, centre_id: str) -> str | None:
        centre = self.find("centre", centre_id)
        return centre.public_contact if centre else None
