"""The waiting list: one order for every release, across services, and the positions told.

A referral waits only when no site meeting every rule has room for it. It may then take a place at
any site meeting every rule for it (not only the one named in its notice). When places free at a
site, the site's queue is every waiting referral for which that site meets every hard constraint,
in the documented order:

1. urgent first (urgency ``urgent``, or eviction housing needed);
2. then those whose home département the site lies in (a place freed near home goes to the people
   of that département before a neighbouring one's);
3. then arrival (the accepted event's ``occurred_at``), then the order of entry.

The first referral of the queue the site has room for (every needed service) is offered the place;
one that cannot use it (another of its services is full there) keeps its rank and does not block
those behind. This repeats until the site has no room any waiting referral could use. A position
told to a prescriber is the referral's rank in the queue of the site named in its notice; when it
changes, it is told again.

Pure: the directory, the waiting referrals and the time are values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from aiguillage_common.geography import Geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.decision import Policy, Request, assess, distance_km, hard_exclusions, tier_of
from routing.domain.directory import Directory, Site


@dataclass(frozen=True, slots=True)
class Waiting:
    """A waiting referral as the waiting list sees it."""

    referral_id: str
    correlation_id: UUID
    accepted: ReferralAcceptedData
    urgency_rank: int
    arrived_at: datetime
    seq: int
    tried: tuple[str, ...]
    site_id: str  # the site named in its notice
    service: ServiceCode  # the first full service there, named in its notice
    told_position: int | None = None
    decision_id: UUID | None = None


def priority_at(site: Site, waiting: Waiting) -> tuple[int, int, datetime, int]:
    """The documented order at ``site``: urgency, home département, arrival, entry."""
    away = 0 if site.departement == waiting.accepted.residence_departement else 1
    return (waiting.urgency_rank, away, waiting.arrived_at, waiting.seq)


def eligible_at(
    site: Site,
    waiting: Waiting,
    directory: Directory,
    geography: Geography,
    policy: Policy,
) -> bool:
    """The site meets every hard constraint for the waiting referral (room aside)."""
    request = Request.of(waiting.accepted, geography)
    tier = tier_of(site, request.home, request.neighbours)
    if tier == 3 and not (
        site.departement == request.home or site.departement in request.neighbours
    ):
        return False
    distance = distance_km(request.origin, site)
    return not hard_exclusions(site, request, directory, policy, waiting.tried, distance, tier)


def queue_at(
    site: Site,
    waiting: Iterable[Waiting],
    directory: Directory,
    geography: Geography,
    policy: Policy,
) -> list[Waiting]:
    """Every waiting referral the site could take, in the documented order."""
    return sorted(
        (w for w in waiting if eligible_at(site, w, directory, geography, policy)),
        key=lambda w: priority_at(site, w),
    )


def reach(site: Site, geography: Geography) -> frozenset[str]:
    """The départements whose residents the site may take: those it serves, its own, and its
    neighbours (the fallback)."""
    return frozenset(
        {*site.serves, site.departement, *geography.neighbours.get(site.departement, ())}
    )


def has_room_for(
    site: Site,
    waiting: Waiting,
    directory: Directory,
    geography: Geography,
    policy: Policy,
    now: datetime,
) -> bool:
    request = Request.of(waiting.accepted, geography)
    return assess(site, request, directory, policy, now, waiting.tried).has_room


def next_for(
    site: Site,
    queue: Sequence[Waiting],
    directory: Directory,
    geography: Geography,
    policy: Policy,
    now: datetime,
) -> Waiting | None:
    """The first referral of the site's queue the site has room for now, if any."""
    for waiting in queue:
        if has_room_for(site, waiting, directory, geography, policy, now):
            return waiting
    return None


def positions(
    waiting: Sequence[Waiting],
    directory: Directory,
    geography: Geography,
    policy: Policy,
    sites: Collection[str] | None = None,
) -> dict[str, int]:
    """Each waiting referral's rank (1 first) in the queue of the site named in its notice (only
    those named at ``sites``, when given). ``waiting`` must hold everyone living within reach of
    those sites."""
    named: dict[str, list[Waiting]] = {}
    for entry in waiting:
        if sites is not None and entry.site_id not in sites:
            continue
        named.setdefault(entry.site_id, []).append(entry)
    result: dict[str, int] = {}
    for site_id, entries in sorted(named.items()):
        site = directory.site(site_id)
        if site is None:
            continue
        queue = queue_at(site, waiting, directory, geography, policy)
        rank = {w.referral_id: i for i, w in enumerate(queue, start=1)}
        for entry in entries:
            # A referral is always in its own site's queue unless the site changed since.
            result[entry.referral_id] = rank.get(entry.referral_id, len(queue) + 1)
    return result
