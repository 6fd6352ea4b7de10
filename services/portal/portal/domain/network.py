"""The network page's rules: what a row of the directory shows (free places, freshness, an
operator's correction still pending) and which filter applies. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from portal.domain.capacity import Freshness, FreshnessPolicy

CorrectionState = Literal["pending", "applied"]


class Row(Protocol):
    """A row of routing's directory as the adapter reads it (an asyncpg record, a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Correction:
    """An operator's last correction of a site-service, from the portal's audit log."""

    places_total: int
    as_of: datetime
    at: datetime


def correction_state(
    correction: Correction | None, routing_as_of: datetime
) -> CorrectionState | None:
    """Pending until routing's count is at least as recent as the correction (routing keeps the
    newest count by ``as_of``; a later confirmation by the centre also settles it)."""
    if correction is None:
        return None
    return "applied" if routing_as_of >= correction.as_of else "pending"


@dataclass(frozen=True, slots=True)
class Filters:
    region: str | None = None
    departement: str | None = None
    centre: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        def one(name: str) -> str | None:
            text = query.get(name, "").strip()
            # Codes only (région, département, centre ids): anything else is no filter.
            return (
                text
                if text and len(text) <= 64 and text.replace("-", "").replace("_", "").isalnum()
                else None
            )

        return cls(one("region"), one("departement"), one("centre"))


@dataclass(frozen=True, slots=True)
class SiteServiceLine:
    centre_id: str
    centre_name: str
    region_code: str
    site_id: str
    departement: str
    service: str
    places_total: int
    places_held: int
    free: int
    freshness: Freshness
    assumed: bool  # a seed count nobody confirmed (stale whatever its date)
    as_of: datetime
    confirm_by: datetime
    waiting: int
    oldest_wait: datetime | None
    correction: Correction | None
    correction_state: CorrectionState | None


def line(
    row: Row,
    correction: Correction | None,
    policy: FreshnessPolicy,
    now: datetime,
) -> SiteServiceLine:
    """One site-service as the page shows it; ``row`` is routing's, read by the adapter."""
    as_of = row["updated_at"]
    total = row["places_total"]
    held = row["places_held"]
    assert isinstance(as_of, datetime)
    assert isinstance(total, int)
    assert isinstance(held, int)
    waiting = row["waiting"]
    oldest = row["oldest_wait"]
    return SiteServiceLine(
        centre_id=str(row["centre_id"]),
        centre_name=str(row["centre_name"]),
        region_code=str(row["region_code"]),
        site_id=str(row["site_id"]),
        departement=str(row["departement"]),
        service=str(row["service"]),
        places_total=total,
        places_held=held,
        free=max(total - held, 0),
        freshness=policy.state(as_of, bool(row["assumed"]), now),
        assumed=bool(row["assumed"]),
        as_of=as_of,
        confirm_by=policy.confirm_by(as_of),
        waiting=int(waiting) if isinstance(waiting, int) else 0,
        oldest_wait=oldest if isinstance(oldest, datetime) else None,
        correction=correction,
        correction_state=correction_state(correction, as_of),
    )
