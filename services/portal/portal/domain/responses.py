"""The events a centre user's action publishes, naming the user as ``actor``. Pure.

The portal speaks for many centres with one key, so routing requires ``data.actor``: the
pseudonymous user id (``u:<uuid>``), never a name or an e-mail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from aiguillage_schemas.events.centres import (
    Actor,
    CapacityUpdated,
    CapacityUpdatedData,
    DeclineReason,
    OfferAnswered,
    OfferAnsweredData,
    PathReport,
    PathReportData,
)
from aiguillage_schemas.events.routing_decisions import PathReportKind, TerminationReason
from aiguillage_schemas.vocabulary import ServiceCode
from portal.domain.access import Principal

SOURCE = "portal"


class ActionRefused(ValueError):
    """The form asked for something the contract does not allow; the message is French."""


def actor(principal: Principal) -> Actor:
    return Actor(kind=principal.actor_kind, id=principal.actor_id)


@dataclass(frozen=True, slots=True)
class OfferContext:
    referral_id: str
    correlation_id: uuid.UUID
    centre_id: str
    site_id: str


def offer_answer(
    principal: Principal,
    offer: OfferContext,
    answer: Literal["accepted", "declined"],
    reason: DeclineReason | None,
    text: str | None,
    now: datetime,
) -> OfferAnswered:
    if answer == "declined" and reason is None:
        raise ActionRefused("Indiquez le motif du refus.")
    note = (text or "").strip() or None
    if note is not None and (answer != "declined" or reason != "other"):
        note = None  # the contract takes free text only with the reason 'other'
    if note is not None and len(note) > 200:
        raise ActionRefused("La précision du motif tient en 200 caractères au plus.")
    return OfferAnswered(
        source=SOURCE,
        correlation_id=offer.correlation_id,
        subject=offer.referral_id,
        occurred_at=now,
        data=OfferAnsweredData(
            centre_id=offer.centre_id,
            site_id=offer.site_id,
            answer=answer,
            decline_reason=reason if answer == "declined" else None,
            decline_text=note,
            actor=actor(principal),
        ),
    )


def path_report(
    principal: Principal,
    offer: OfferContext,
    report: PathReportKind,
    occurred_on: date,
    today: date,
    justified: bool | None = None,
    termination_reason: TerminationReason | None = None,
    module: ServiceCode | None = None,
) -> PathReport:
    if occurred_on > today:
        raise ActionRefused("La date ne peut pas être dans le futur.")
    if report == "path_terminated" and termination_reason is None:
        raise ActionRefused("Indiquez le motif de l'interruption du parcours.")
    if report == "module_completed" and module is None:
        raise ActionRefused("Indiquez le module terminé.")
    return PathReport(
        source=SOURCE,
        correlation_id=offer.correlation_id,
        subject=offer.referral_id,
        data=PathReportData(
            centre_id=offer.centre_id,
            site_id=offer.site_id,
            report=report,
            occurred_on=occurred_on,
            justified=justified if report == "no_show" else None,
            termination_reason=termination_reason if report == "path_terminated" else None,
            module=module if report == "module_completed" else None,
            actor=actor(principal),
        ),
    )


CAPACITY_NAMESPACE = uuid.UUID("1b7e0c52-5a3f-4c9e-9e7d-0f6b2d4a8c31")


def capacity_update(
    principal: Principal, site_id: str, service: ServiceCode, places_total: int, now: datetime
) -> CapacityUpdated:
    """A confirmation is an update with the same number: routing then knows it is fresh."""
    if not 0 <= places_total <= 10_000:
        raise ActionRefused("Le nombre de places doit être compris entre 0 et 10 000.")
    return CapacityUpdated(
        source=SOURCE,
        # Directory events have no referral: the journey is the site's own.
        correlation_id=uuid.uuid5(CAPACITY_NAMESPACE, site_id),
        subject=site_id,
        occurred_at=now,
        data=CapacityUpdatedData(
            site_id=site_id,
            service=service,
            places_total=places_total,
            as_of=now,
            actor=actor(principal),
        ),
    )
