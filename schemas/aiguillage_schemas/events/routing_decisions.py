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


class HousingOfferedData(Contract):
    decision_id: UUID
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef = Field(description="The national housing provider offered the housing.")
    care_site: SiteRef = Field(description="The local site offered the care (its own offer).")
    distance_km: float = Field(
        ge=0, description="From the residence to the care site (the platform serves nationally)."
    )
    explanation: str = Field(description="Plain-words summary of why the referral was split.")
    answer_by: AwareDatetime = Field(
        description="The platform must accept or decline the housing before this time."
    )


class HousingOffered(Envelope):
    """Care locally, housing nationally: no site within reach had room for every need, so the
    care is offered to the local site (its own ``referral.routed``) and the eviction housing to
    the national housing platform (this event). The platform answers on ``centres.responses``
    like a centre; it may fetch the person's identity for this referral while it holds the
    housing offer or place."""

    EVENT_TYPE = "referral.housing_offered"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.housing_offered"] = "referral.housing_offered"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: HousingOfferedData


HousingOutcome = Literal["accepted", "declined", "timed_out", "released", "ended"]


class HousingUpdatedData(Contract):
    prescriber_id: str
    prescriber_kind: PrescriberKind
    site: SiteRef = Field(description="The national housing provider.")
    outcome: HousingOutcome = Field(
        description="accepted: the person is housed by the platform; declined or timed_out: no "
        "housing, a human coordinator is told while the care goes on; released: the housing "
        "place was given back (referral cancelled, the care path ended, or the care could not be "
        "given); ended: the platform reported the housing over (path_completed or "
        "path_terminated on its site). The platform's other path reports are "
        "referral.path_reported naming its site."
    )
    escalated: bool = Field(description="A human coordinator must find housing.")
    explanation: str


class HousingUpdated(Envelope):
    """What became of the housing leg of a split referral."""

    EVENT_TYPE = "referral.housing_updated"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.housing_updated"] = "referral.housing_updated"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: HousingUpdatedData


# Everything routing publishes on referrals.routed, in one place: consumers decode with the tuple
# and document their subscription with the union, so a new event is added once, here.
RoutingDecisionEvent = (
    ReferralRouted
    | ReferralUnroutable
    | ReferralWaitlisted
    | ReferralEscalated
    | ReferralPlaced
    | ReferralWithdrawn
    | PathReported
    | HousingOffered
    | HousingUpdated
)
ROUTING_DECISION_EVENTS: tuple[type[RoutingDecisionEvent], ...] = (
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralEscalated,
    ReferralPlaced,
    ReferralWithdrawn,
    PathReported,
    HousingOffered,
    HousingUpdated,
)
