"""Who may receive a person's identity, and what intake answers a request for it. Pure.

Only the centre that currently holds the referral (an open offer, or a place) may contact the
person. Routing tells who that is on ``referrals.routed``; ``holder_after`` reads each event into
the holder it leaves behind. Events on one referral arrive in order (same key, same partition), so
the last event handled is the current truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiguillage_common.identity_requests import Release
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.routing_decisions import (
    ROUTING_DECISION_EVENTS,
    HousingOffered,
    HousingUpdated,
    PathReported,
    ReferralEscalated,
    ReferralPlaced,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralWithdrawn,
)

# The events read to know who holds the referral: every event routing publishes on the topic.
HOLDER_EVENTS: tuple[type[Envelope], ...] = ROUTING_DECISION_EVENTS
PATH_ENDS = frozenset({"path_completed", "path_terminated"})

HoldState = Literal["offered", "placed"]


@dataclass(frozen=True, slots=True)
class Holder:
    centre_id: str
    state: HoldState


class Unchanged:
    """The event says nothing about who holds the referral."""


UNCHANGED = Unchanged()


def holder_after(event: Envelope) -> Holder | Unchanged | None:
    """The holder once ``event`` happened: a centre, nobody (``None``), or ``UNCHANGED``.

    - an offer (first or re-routed) and a place give the referral to that site's centre;
    - a withdrawal, an escalation to a coordinator, a waiting list or no site at all leave no centre
      entitled to contact the person (a waiting list is not an offer: the centre is told when a
      place is offered);
    - the end of the path (completed or terminated) closes the centre's need for contact details;
      other path reports (attendance, no-show) keep the centre as holder.
    """
    if isinstance(event, ReferralRouted):
        return Holder(event.data.site.centre_id, "offered")
    if isinstance(event, ReferralPlaced):
        return Holder(event.data.site.centre_id, "placed")
    if isinstance(event, ReferralWithdrawn | ReferralEscalated | ReferralWaitlisted):
        return None
    if isinstance(event, ReferralUnroutable):
        return None
    if isinstance(event, PathReported):
        return None if event.data.report in PATH_ENDS else UNCHANGED
    return UNCHANGED


def housing_holder_after(event: Envelope) -> Holder | Unchanged | None:
    """The housing holder once ``event`` happened: when routing splits a referral (care at a
    local site, eviction housing at the national platform), the platform is a second holder, for
    the housing only, from its housing offer until the housing leg ends (declined, timed out or
    released). Every other event leaves it as it was (the care holder is ``holder_after``'s)."""
    if isinstance(event, HousingOffered):
        return Holder(event.data.site.centre_id, "offered")
    if isinstance(event, HousingUpdated):
        return (
            Holder(event.data.site.centre_id, "placed")
            if event.data.outcome == "accepted"
            else None
        )
    return UNCHANGED


@dataclass(frozen=True, slots=True)
class ReferralState:
    """What intake knows of a referral when a centre asks for the identity."""

    cancelled: bool
    purged: bool
    holder_centre_id: str | None
    housing_holder_centre_id: str | None = None  # the national platform, for the housing only


def decide_release(state: ReferralState | None, centre_id: str, offer_seen: bool | None) -> Release:
    """The answer to ``centre_id`` asking for the identity of a referral in ``state``.

    ``offer_seen`` is None when the request names no routing event, else whether intake has
    already handled the event that made the offer the request is about: when it has not, intake
    cannot tell yet and says so (the caller retries) instead of refusing a rightful centre.
    Unknown beats everything (nothing to reveal, not even that it existed); a closed referral is
    gone for everybody, rightful holder included.
    """
    if state is None:
        return Release.UNKNOWN
    if state.cancelled or state.purged:
        return Release.GONE
    if offer_seen is False:
        return Release.NOT_YET_KNOWN
    if centre_id not in {state.holder_centre_id, state.housing_holder_centre_id} - {None}:
        return Release.NOT_HOLDER
    return Release.GRANTED
