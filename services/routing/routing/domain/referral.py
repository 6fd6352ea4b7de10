"""A referral as routing follows it through the closed loop with centres."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import ServiceCode, Urgency

Status = Literal[
    "offered", "placed", "waitlisted", "unroutable", "escalated", "withdrawn", "closed"
]
# Statuses in which the referral holds places at its site.
HOLDING: frozenset[str] = frozenset({"offered", "placed"})
FINAL: frozenset[str] = frozenset({"unroutable", "escalated", "withdrawn", "closed"})


def urgency_rank(data: ReferralAcceptedData) -> int:
    """0 first. Housing after eviction is urgent whatever the prescriber wrote (24 h)."""
    urgent = data.urgency is Urgency.URGENT or ServiceCode.EVICTION_HOUSING in data.needed_services
    return 0 if urgent else 1


@dataclass(frozen=True, slots=True)
class ReferralState:
    referral_id: str
    correlation_id: UUID
    accepted: ReferralAcceptedData
    status: Status
    site_id: str | None
    attempt: int
    tried: tuple[str, ...]
    urgency_rank: int
    arrived_at: datetime
    answer_by: datetime | None = None
