"""Which centres to remind of a count to confirm, once per confirmation. Pure: no I/O.

A count confirmed at ``as_of`` goes stale at ``as_of + freshness``; its centre is reminded from
``reminder`` before that (or at once when it is already stale and was never reminded). A reminder
is about one confirmation: the same (site, service, as_of) is never reminded twice, and a newer
confirmation (a capacity update with a later ``as_of``) makes a new reminder possible.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiguillage_schemas.events.directory_notices import StaleOutcome
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.decision import StalePolicy
from routing.domain.directory import Directory, confirmations_due

_IDS = uuid.UUID("0f6a2b1e-93c4-4d5e-8a7b-1c2d3e4f5a6b")
ReminderKey = tuple[str, ServiceCode, datetime]  # site, service, the confirmation (as_of)


@dataclass(frozen=True, slots=True)
class ReminderDue:
    site_id: str
    centre_id: str
    centre_name: str
    service: ServiceCode
    places_total: int
    as_of: datetime
    stale_at: datetime

    @property
    def key(self) -> ReminderKey:
        return (self.site_id, self.service, self.as_of)

    @property
    def event_id(self) -> uuid.UUID:
        """Stable per confirmation: two instances, or a restart, derive the same event."""
        return uuid.uuid5(_IDS, f"{self.site_id}:{self.service}:{self.as_of.isoformat()}")

    @property
    def reference(self) -> str:
        """What the centre quotes back (``capacite-<16 hex>``), never a referral id."""
        return f"capacite-{self.event_id.hex[:16]}"


def reminders_due(
    directory: Directory,
    reminded: Collection[ReminderKey],
    now: datetime,
    freshness: timedelta,
    reminder: timedelta,
) -> list[ReminderDue]:
    """The open counts stale or going stale within ``reminder`` whose confirmation was not
    reminded yet, earliest stale date first."""
    done = set(reminded)
    due = []
    for item in confirmations_due(directory, now, freshness, reminder):
        key = (item.site_id, item.service, item.updated_at)
        site = directory.site(item.site_id)
        if key in done or site is None:
            continue
        due.append(
            ReminderDue(
                site_id=item.site_id,
                centre_id=site.centre_id,
                centre_name=directory.centre_of(site).name,
                service=item.service,
                places_total=directory.capacity[(item.site_id, item.service)].places_total,
                as_of=item.updated_at,
                stale_at=item.confirm_by,
            )
        )
    return due


def stale_outcome(policy: StalePolicy) -> StaleOutcome:
    """The policy setting as the contract tells it to centres."""
    return "ranked_lower" if policy == "rank" else "not_offered"
