"""What each event the portal follows changes in its own view of a referral. Pure.

The portal keeps a projection, never the source of truth: routing decides, intake admits, and the
portal shows their decisions to the people concerned. Events of one referral arrive in order on
``referrals.routed``; ``referrals.accepted`` is another topic and may arrive before or after them,
so it fills the referral's attributes without ever overriding a status routing gave.
Identity never reaches these events, so it can never reach these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralRejected
from aiguillage_schemas.events.routing_decisions import (
    ROUTING_DECISION_EVENTS,
    HousingOffered,
    HousingUpdated,
    ReferralEscalated,
    ReferralPlaced,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralWithdrawn,
    RoutingDecisionEvent,
    SiteRef,
)
from portal.domain import labels

RoutingEvent = RoutingDecisionEvent
ROUTING_EVENTS = ROUTING_DECISION_EVENTS
HOUSING_OUTCOMES = {
    "accepted": "Hébergement accepté par",
    "declined": "Hébergement refusé (un coordinateur cherche une solution) par",
    "timed_out": "Hébergement sans réponse dans le délai (un coordinateur cherche une solution) de",
    "released": "Place d'hébergement rendue à",
    "ended": "Hébergement terminé —",
}
# Path reports that end the person's path at the site.
ENDING_REPORTS = {"path_completed": "completed", "path_terminated": "terminated"}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    event_id: UUID
    referral_id: str
    occurred_at: datetime
    kind: str
    summary: str  # French, built from codes only
    site_id: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """A routing event applied to a referral. ``site`` None with ``clears_site``: no site holds it
    any more (withdrawn, unroutable, escalated)."""

    referral_id: str
    correlation_id: UUID
    prescriber_id: str
    prescriber_kind: str
    status: str | None
    history: HistoryEntry
    site: SiteRef | None = None
    clears_site: bool = False
    answer_by: datetime | None = None
    attempt: int | None = None
    services: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Admission:
    """What intake said of a referral it accepted: the needs and frame a centre reads."""

    referral_id: str
    correlation_id: UUID
    prescriber_id: str
    prescriber_kind: str
    judicial_frame: str
    needed_services: tuple[str, ...]
    urgency: str
    language: str
    interpreter_needed: bool
    residence_departement: str
    respond_by: str | None
    history: HistoryEntry


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    event_id: UUID
    referral_id: str | None  # None when intake could not read one ('unknown')
    prescriber_id: str | None
    reason: str
    field_path: str | None
    reasons: tuple[str, ...]  # every problem's code, the first included
    occurred_at: datetime


def _site_words(site: SiteRef) -> str:
    return f"{site.centre_name}, site {site.site_id}"


def routing_change(event: RoutingEvent) -> RoutingChange:
    data = event.data

    def change(status: str | None, history: HistoryEntry, **extra: Any) -> RoutingChange:
        return RoutingChange(
            event.subject,
            event.correlation_id,
            data.prescriber_id,
            str(data.prescriber_kind),
            status,
            history,
            **extra,
        )

    def entry(summary: str, site_id: str | None = None) -> HistoryEntry:
        return HistoryEntry(
            event.event_id, event.subject, event.occurred_at, event.event_type, summary, site_id
        )

    if isinstance(event, ReferralRouted):
        d = event.data
        words = "Proposée" if d.attempt == 1 else f"Proposée à nouveau (essai {d.attempt})"
        return change(
            status="offered",
            site=d.site,
            answer_by=d.answer_by,
            attempt=d.attempt,
            services=tuple(str(s) for s in d.services),
            history=entry(f"{words} à {_site_words(d.site)}", d.site.site_id),
        )
    if isinstance(event, ReferralPlaced):
        site = event.data.site
        return change(
            status="placed",
            site=site,
            history=entry(f"Acceptée par {_site_words(site)}", site.site_id),
        )
    if isinstance(event, ReferralWaitlisted):
        w = event.data
        service = labels.label(labels.SERVICES, str(w.service))
        return change(
            status="waitlisted",
            site=w.site,
            history=entry(
                f"En liste d'attente à {_site_words(w.site)} ({service}, rang {w.position})",
                w.site.site_id,
            ),
        )
    if isinstance(event, ReferralUnroutable):
        reason = labels.label(labels.UNROUTABLE_REASONS, event.data.reason)
        return change(status="unroutable", clears_site=True, history=entry(f"Sans site : {reason}"))
    if isinstance(event, ReferralEscalated):
        reason = labels.label(labels.ESCALATION_REASONS, event.data.reason)
        # Urgent without a place: it keeps waiting first in line while a human looks too.
        keeps_waiting = event.data.reason == "urgent_no_place"
        return change(
            status=None if keeps_waiting else "escalated",
            clears_site=not keeps_waiting,
            history=entry(f"Confiée à un coordinateur : {reason}"),
        )
    if isinstance(event, HousingOffered):
        # The housing leg of a split: history only; the referral's site stays the care site.
        return change(
            status=None,
            history=entry(f"Hébergement proposé à {_site_words(event.data.site)}"),
        )
    if isinstance(event, HousingUpdated):
        words = HOUSING_OUTCOMES[event.data.outcome]
        return change(status=None, history=entry(f"{words} {_site_words(event.data.site)}"))
    if isinstance(event, ReferralWithdrawn):
        return change(
            status="withdrawn",
            clears_site=True,
            history=entry("Retirée par le prescripteur"),
        )
    report = event.data
    words = labels.label(labels.PATH_REPORTS, report.report)
    details = []
    if report.termination_reason:
        details.append(labels.label(labels.TERMINATION_REASONS, report.termination_reason))
    if report.module:
        details.append(labels.label(labels.SERVICES, str(report.module)))
    if report.justified is not None:
        details.append("justifiée" if report.justified else "non justifiée")
    suffix = f" ({', '.join(details)})" if details else ""
    return change(
        status=ENDING_REPORTS.get(report.report),
        site=report.site,
        history=entry(
            f"{words} le {report.occurred_on:%d/%m/%Y}{suffix} — {_site_words(report.site)}",
            report.site.site_id,
        ),
    )


def admission(event: ReferralAccepted) -> Admission:
    d = event.data
    return Admission(
        referral_id=event.subject,
        correlation_id=event.correlation_id,
        prescriber_id=d.prescriber_id,
        prescriber_kind=str(d.prescriber_kind),
        judicial_frame=str(d.judicial_frame),
        needed_services=tuple(str(s) for s in d.needed_services),
        urgency=str(d.urgency),
        language=d.language,
        interpreter_needed=d.interpreter_needed,
        residence_departement=d.residence_departement,
        respond_by=d.respond_by.isoformat() if d.respond_by else None,
        history=HistoryEntry(
            event.event_id,
            event.subject,
            event.occurred_at,
            event.event_type,
            "Reçue et acceptée par Aiguillage",
        ),
    )


def rejection(event: ReferralRejected) -> RejectionRecord:
    data = event.data
    codes = [str(error.reason) for error in data.errors] or [str(data.reason)]
    return RejectionRecord(
        event_id=event.event_id,
        referral_id=None if event.subject == "unknown" else event.subject,
        prescriber_id=data.prescriber_id,
        reason=str(data.reason),
        field_path=data.field_path,
        reasons=tuple(dict.fromkeys(codes)),
        occurred_at=event.occurred_at,
    )
