"""Who may speak on ``centres.responses`` and ``directory.updates``, and for whom. Pure.

Every record on those topics is signed like ``referrals.intake`` (``aiguillage_schemas.signing``)
with a key of routing's sender registry (``data/centre_senders.json``; secrets from settings):

- a ``centre`` key speaks only for its centre: an offer answer or a path report must name that
  centre in ``data.centre_id`` and one of its sites in ``data.site_id``; a directory update must be
  about one of its sites, and it may add a site only for itself (never re-open, move or take over
  another centre's site id);
- the ``portal`` key speaks for any centre (the portal checks who its user is), but must name the
  acting person in ``data.actor`` (kind ``centre_user`` or ``operator``), so every change routing
  makes on its word can be traced to someone.

Two steps, because the second needs the parsed body and the directory: ``authenticate`` before the
body is parsed (nothing unauthenticated is parsed), ``authorise`` once it is. Each refusal is a
``Problem`` with one of the reason codes ``unsigned``, ``unknown_signing_key``, ``bad_signature``,
``stale_signature``, ``not_this_centre``, ``actor_required``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiguillage_common.codec import Problem
from aiguillage_common.signed_records import SignatureFault, verify, window_reference
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    Actor,
    CapacityUpdated,
    OfferAnswered,
    PathReport,
    ServiceClosed,
    ServiceOpened,
    SiteAdded,
    SiteClosed,
)
from aiguillage_schemas.signing import KEY_ID_HEADER
from aiguillage_schemas.vocabulary import RejectionReason

SenderKind = Literal["portal", "centre"]
# Who the portal may say acted: its own users. A centre's system speaks with its own key.
PORTAL_ACTORS = frozenset({"centre_user", "operator"})

_REASONS = {
    SignatureFault.UNSIGNED: RejectionReason.UNSIGNED,
    SignatureFault.UNKNOWN_KEY: RejectionReason.UNKNOWN_SIGNING_KEY,
    SignatureFault.BAD_SIGNATURE: RejectionReason.BAD_SIGNATURE,
    SignatureFault.STALE: RejectionReason.STALE_SIGNATURE,
}


@dataclass(frozen=True, slots=True)
class Sender:
    """One entry of the sender registry: a signing key id and whom it speaks for."""

    key_id: str
    kind: SenderKind
    centre_id: str | None = None  # a centre key's centre; None for the portal

    def __post_init__(self) -> None:
        if (self.kind == "centre") != (self.centre_id is not None):
            raise ValueError(f"{self.key_id}: a centre key names its centre, the portal none")


@dataclass(frozen=True, slots=True)
class Claim:
    """What a record says about whom it speaks for."""

    site_id: str
    centre_id: str | None  # the centre the body names, when it names one
    actor: Actor | None
    adds_site: bool  # a site_added: the site may not exist yet


def authenticate(
    headers: Mapping[str, str],
    value: bytes,
    broker_timestamp_ms: int | None,
    senders: Mapping[str, Sender],
    secrets: Mapping[str, bytes],
    window_s: int,
    now_s: float,
    operations_secret: bytes = b"",
) -> Sender | Problem:
    """The registered sender whose key signed ``value`` within ``window_s`` of when the record
    reached the broker (its LogAppendTime; an operator's verified replay counts from the original
    arrival; ``now_s`` only when the broker time is unknown), or why it is refused."""
    key_id = headers.get(KEY_ID_HEADER, "")
    sender = senders.get(key_id)
    reference = window_reference(headers, value, broker_timestamp_ms, operations_secret, now_s)
    refusal = verify(
        headers, value, sender is not None, secrets.get(key_id), reference.at_s, window_s
    )
    if refusal is not None:
        return Problem(_REASONS[refusal.fault], refusal.message, refusal.field_path)
    assert sender is not None
    return sender


def claim_of(event: Envelope) -> Claim:
    """The site, centre and actor a centre-topic event speaks for."""
    if isinstance(event, OfferAnswered | PathReport):
        data = event.data
        return Claim(data.site_id, data.centre_id, data.actor, adds_site=False)
    if isinstance(event, SiteAdded):
        return Claim(event.data.site_id, event.data.centre_id, event.data.actor, adds_site=True)
    if isinstance(event, CapacityUpdated | ServiceOpened | ServiceClosed | SiteClosed):
        return Claim(event.data.site_id, None, event.data.actor, adds_site=False)
    raise TypeError(f"{type(event).__name__} is not an event of a centre topic")


def authorise(sender: Sender, claim: Claim, site_centres: Mapping[str, str]) -> Problem | None:
    """None when ``sender`` may say what ``claim`` says; ``site_centres``: the directory's centre
    of each site (at least of ``claim.site_id`` when the directory knows it)."""
    if sender.kind == "portal":
        if claim.actor is None or claim.actor.kind not in PORTAL_ACTORS:
            return Problem(
                RejectionReason.ACTOR_REQUIRED,
                "a record signed with the portal's key must name the acting person in "
                "data.actor (kind centre_user or operator)",
                "data.actor",
            )
        return None
    if claim.centre_id is not None and claim.centre_id != sender.centre_id:
        return Problem(
            RejectionReason.NOT_THIS_CENTRE,
            "the record is signed with another centre's key",
            "data.centre_id",
        )
    owner = site_centres.get(claim.site_id)
    # A new site has no owner yet; an existing one is only ever its own centre's. An unknown site
    # is nobody's, so a centre key cannot speak about it (the directory changes nothing for it).
    if (owner is None and claim.adds_site) or owner == sender.centre_id:
        return None
    return Problem(
        RejectionReason.NOT_THIS_CENTRE,
        "the site is not one of the signing centre's sites",
        "data.site_id",
    )
