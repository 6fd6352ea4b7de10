"""Which deliveries carry the person's identity, and what intake's answer means for one. Pure.

Only the centre that is offered the referral needs to contact the person, and only over its
authenticated webhook: e-mail copies, Kafka notifications and prescribers never get the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiguillage_common.identity_requests import Outcome, read_answer
from aiguillage_schemas.events.notifications import DeliveryChannel, RecipientKind

# Topics whose centre webhook carries the identity. The centre is told of a place by routing's
# closed loop only through the prescriber, so the offer is the one message that needs it.
IDENTITY_TOPICS = frozenset({"referral_offered"})


def carries_identity(recipient_kind: RecipientKind, channel: DeliveryChannel, topic: str) -> bool:
    return recipient_kind == "centre" and channel == "webhook" and topic in IDENTITY_TOPICS


@dataclass(frozen=True, slots=True)
class IdentityLookup:
    """``granted`` with the person; ``refused`` (deliver without it); ``unavailable`` (hold the
    delivery until intake answers)."""

    outcome: Outcome
    reason: str  # recorded in the delivery log: 'granted', 'not_holder', 'http_503', 'timeout'...
    person: dict[str, Any] | None = None

    def __repr__(self) -> str:
        # Never print the person, whatever logs or tracebacks end up showing this object.
        return f"IdentityLookup(outcome={self.outcome!r}, reason={self.reason!r})"


def lookup_from_status(status: int, person: dict[str, Any] | None) -> IdentityLookup:
    """Intake's HTTP answer read as a lookup (``aiguillage_common.identity_requests.ANSWERS``).
    A refusal retrying cannot change delivers the offer without the identity; 409 (offer not
    known to intake yet), 5xx and any other answer (401 from a wrong secret included) hold it
    back rather than send it without identity to a centre that should have had it."""
    outcome, reason = read_answer(status, person)
    return IdentityLookup(outcome, reason, person)  # a person only ever comes with a grant
