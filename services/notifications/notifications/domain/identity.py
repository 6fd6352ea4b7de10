"""Which deliveries carry the person's identity, and what intake's answer means for one. Pure.

Only the centre that is offered the referral needs to contact the person, and only over its
authenticated webhook: e-mail copies, Kafka notifications and prescribers never get the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiguillage_common.identity_requests import REFUSALS
from aiguillage_schemas.events.notifications import DeliveryChannel, RecipientKind

# Topics whose centre webhook carries the identity. The centre is told of a place by routing's
# closed loop only through the prescriber, so the offer is the one message that needs it.
IDENTITY_TOPICS = frozenset({"referral_offered"})

# Intake refused for a reason retrying cannot change (REFUSALS): the offer is delivered without
# the identity.


def carries_identity(recipient_kind: RecipientKind, channel: DeliveryChannel, topic: str) -> bool:
    return recipient_kind == "centre" and channel == "webhook" and topic in IDENTITY_TOPICS


@dataclass(frozen=True, slots=True)
class IdentityLookup:
    """``granted`` with the person; ``refused`` (deliver without it); ``unavailable`` (hold the
    delivery until intake answers)."""

    outcome: Literal["granted", "refused", "unavailable"]
    reason: str  # recorded in the delivery log: 'granted', 'not_holder', 'http_503', 'timeout'...
    person: dict[str, Any] | None = None

    def __repr__(self) -> str:
        # Never print the person, whatever logs or tracebacks end up showing this object.
        return f"IdentityLookup(outcome={self.outcome!r}, reason={self.reason!r})"


def lookup_from_status(status: int, person: dict[str, Any] | None) -> IdentityLookup:
    """Intake's HTTP answer read as a lookup. 409 (offer not known to intake yet), 5xx and any
    other answer (401 from a wrong secret included) are worth retrying: the offer is held back
    rather than sent without identity to a centre that should have had it."""
    if status == 200 and person is not None:
        return IdentityLookup("granted", "granted", person)
    if status in REFUSALS:
        return IdentityLookup("refused", REFUSALS[status])
    return IdentityLookup("unavailable", f"http_{status}")
