"""What routing decides and what happens on the path, published on ``referrals.routed``.

Every event here is identity-free and relayed by notifications to the centre and/or prescriber.
"""

from __future__ import annotations

from datetime import date
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import DepartementCode, InseeCode, ReferralId
from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode


class SiteRef(Contract):
    centre_id: str
    centre_name: str
    site_id: str
    site_commune_insee: InseeCode
    site_departement: DepartementCode
    address_confidential: bool


class ReferralRoutedData(Contract):
    decision_id: UUID
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef
    services: list[ServiceCode]
    distance_km: float = Field(ge=0)
    explanation: str = Field(description="Plain-words summary of why this site was chosen.")
    attempt: int = Field(default=1, ge=1, description="1 for the first offer, 2+ for re-routes.")
    answer_by: AwareDatetime | None = Field(
        default=None, description="The centre must accept or decline before this time."
    )
    previous_site_id: str | None = Field(default=None, description="Set on a re-route.")


class ReferralRouted(Envelope):
    """A site was chosen and the referral is offered to it (``attempt`` > 1: re-routed)."""

    EVENT_TYPE = "referral.routed"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.routed"] = "referral.routed"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralRoutedData


class ReferralUnroutableData(Contract):
    decision_id: UUID
    prescriber_id: str
    prescriber_kind: PrescriberKind
    reason: Literal["no_site_offers_services", "all_sites_excluded", "territory_not_served"]
    explanation: str


class ReferralUnroutable(Envelope):
    """No site can take the referral under the hard constraints; a coordinator must look at it."""

    EVENT_TYPE = "referral.unroutable"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.unroutable"] = "referral.unroutable"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralUnroutableData


class ReferralWaitlistedData(Contract):
    decision_id: UUID
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef
    service: ServiceCode = Field(description="The service whose waiting list holds the referral.")
    position: int = Field(ge=1)
    explanation: str


class ReferralWaitlisted(Envelope):
    """No feasible site has a place now; the referral waits, in order, at the best site."""

    EVENT_TYPE = "referral.waitlisted"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.waitlisted"] = "referral.waitlisted"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralWaitlistedData


class ReferralEscalatedData(Contract):
    prescriber_id: str
    prescriber_kind: PrescriberKind
    attempts: int = Field(ge=0)
    reason: Literal["attempts_exhausted", "no_feasible_site", "urgent_no_place"] = Field(
        description="urgent_no_place: an urgent referral (eviction housing) has no site with a "
        "place within the policy's reach; it stays first in line on the waiting list while a "
        "human looks for housing (e.g. the national platform)."
    )
    explanation: str


class ReferralEscalated(Envelope):
    """Routing gives the referral to a human coordinator (with ``urgent_no_place`` the referral
    also keeps waiting, and may still be offered a place)."""

    EVENT_TYPE = "referral.escalated"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.escalated"] = "referral.escalated"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralEscalatedData


class ReferralPlacedData(Contract):
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef


class ReferralPlaced(Envelope):
    """The centre accepted the offer: the person has a place at the site."""

    EVENT_TYPE = "referral.placed"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.placed"] = "referral.placed"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralPlacedData


class ReferralWithdrawnData(Contract):
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef | None = Field(description="The site that held an offer or a place, if any.")
    reason: Literal["cancelled_by_prescriber"]


class ReferralWithdrawn(Envelope):
    """The prescriber cancelled; any place is released and the centre is told."""

    EVENT_TYPE = "referral.withdrawn"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.withdrawn"] = "referral.withdrawn"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralWithdrawnData


PathReportKind = Literal[
    "appointment_scheduled",
    "attended",
    "no_show",
    "module_completed",
    "path_completed",
    "path_terminated",
    "breach_suspected",
]
TerminationReason = Literal["completed_early", "excluded", "moved_away", "refused", "other"]


class PathReportedData(Contract):
    """Factual, never clinical: what the prescriber must know for the judicial follow-up."""

    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef
    report: PathReportKind
    occurred_on: date
    justified: bool | None = Field(default=None, description="For a no-show: was it justified?")
    termination_reason: TerminationReason | None = None
    module: ServiceCode | None = Field(default=None, description="For module_completed.")


class PathReported(Envelope):
    """A centre reported a step of the person's path; relayed to the prescriber."""

    EVENT_TYPE = "referral.path_reported"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.path_reported"] = "referral.path_reported"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: PathReportedData
