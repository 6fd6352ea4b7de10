"""When a centre's count of places needs confirming. Pure.

Routing ranks a site whose count was not confirmed within its freshness window as stale
(``ROUTING_CAPACITY_FRESHNESS_S``, 30 days) and reminds a week before (``STALE_REMINDER_S``);
the portal uses the same two durations (its own settings, to keep equal to routing's) to show
each count as fresh, due soon or stale, so that no count goes stale unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Freshness = Literal["fresh", "due_soon", "stale"]


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    fresh_for: timedelta = timedelta(days=30)
    remind_before: timedelta = timedelta(days=7)

    def confirm_by(self, as_of: datetime) -> datetime:
        return as_of + self.fresh_for

    def state(self, as_of: datetime, assumed: bool, now: datetime) -> Freshness:
        """A seed count nobody confirmed is stale whatever its date."""
        confirm_by = self.confirm_by(as_of)
        if assumed or confirm_by <= now:
            return "stale"
        if confirm_by - self.remind_before <= now:
            return "due_soon"
        return "fresh"
