"""A referral as routing follows it through the closed loop with centres."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import ServiceCode, Urgency

Status = Literal[
    "offered", "placed", "waitlisted", "unroutable", "escalated", "withdrawn", "closed"
]
# Statuses in which the referral holds places at its site.
HOLDING: frozenset[str] = frozenset({"offered", "placed"})
# The housing leg of a split (care locally, housing at the national platform): its own status.
HousingStatus = Literal["offered", "placed", "declined", "timed_out", "released", "ended"]
HousingEnd = Literal["declined", "timed_out", "released", "ended"]
# Housing statuses in which the referral holds a place at the platform.
HOUSING_HOLDING: frozenset[str] = frozenset({"offered", "placed"})
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
    # The housing leg, when the care is given locally and the housing by a national provider.
    housing_site_id: str | None = None
    housing_status: HousingStatus | None = None
    housing_answer_by: datetime | None = None

    @property
    def housing_held(self) -> bool:
        return self.housing_status in HOUSING_HOLDING

    @property
    def housing_tried(self) -> tuple[str, ...]:
        """National providers that declined or let the housing offer time out."""
        if self.housing_site_id and self.housing_status in ("declined", "timed_out"):
            return (self.housing_site_id,)
        return ()


def answer_deadline(
    data: ReferralAcceptedData,
    now: datetime,
    standard: timedelta,
    urgent: timedelta,
    minimum: timedelta,
) -> datetime:
    """When the centre must have answered an offer made ``now``.

    Urgent referrals get the short delay. A prescriber's ``respond_by`` date brings the deadline
    forward to the end of that day in French time (a date is a Europe/Paris calendar day: "by the
    5th" means until 23:59 on the 5th in Paris, not 00:00 UTC); but never below ``minimum``, so
    that a centre always has a real chance to answer (a past date must not bounce the referral
    from site to site until escalation).
    """
    deadline = now + (urgent if urgency_rank(data) == 0 else standard)
    if data.respond_by is not None:
        deadline = min(deadline, max(end_of_french_day(data.respond_by), now + minimum))
    return deadline


PARIS = ZoneInfo("Europe/Paris")


def end_of_french_day(day: date) -> datetime:
    """The last minute of ``day`` in Paris (23:59:00 local), as an aware UTC datetime."""
    return datetime.combine(day, time(23, 59), tzinfo=PARIS).astimezone(UTC)
