"""What centres and directory operators tell routing.

- ``centres.responses`` (key: referral id): a centre answers an offer, then reports the person's
  path. A centre may speak only about referrals offered to (or placed at) one of its sites.
- ``directory.updates`` (key: site id): capacity, services and sites change while the system runs.

Every record on both topics is signed like ``referrals.intake`` (``aiguillage_schemas.signing``)
with a key of routing's sender registry (``data/centre_senders.json``): a centre's own key, or the
portal's, which must then name the acting person in ``data.actor`` (docs/routing.md, signing).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.referral_submitted import DepartementCode, InseeCode, ReferralId
from aiguillage_schemas.events.routing_decisions import PathReportKind, TerminationReason
from aiguillage_schemas.vocabulary import ServiceCode

SiteId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
CentreId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
ActorId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{1,63}$")]
DeclineReason = Literal["no_capacity", "not_eligible", "victim_site_conflict", "other"]
Eligibility = Literal["judicial_only", "all"]


class Actor(Contract):
    """Who acted, pseudonymously: a portal user id, an operator id, or a centre's own system.
    Never a name or an e-mail address."""

    kind: Literal["centre_user", "operator", "centre_system"]
    id: ActorId


ACTOR_DESCRIPTION = (
    "Who acted (pseudonymous id). Required on records signed with the portal's key "
    "(kind centre_user or operator); optional with a centre's own key."
)


class OfferAnsweredData(Contract):
    centre_id: CentreId
    site_id: SiteId
    answer: Literal["accepted", "declined"]
    decline_reason: DeclineReason | None = Field(
        default=None, description="Required when declined."
    )
    decline_text: str | None = Field(
        default=None, max_length=200, description="Only with decline_reason 'other'; never logged."
    )
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class OfferAnswered(Envelope):
    """A centre accepts or declines the referral offered to one of its sites."""

    EVENT_TYPE = "centre.offer_answered"
    SCHEMA_VERSION = 1

    event_type: Literal["centre.offer_answered"] = "centre.offer_answered"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: OfferAnsweredData


class PathReportData(Contract):
    """Factual, never clinical."""

    centre_id: CentreId
    site_id: SiteId
    report: PathReportKind
    occurred_on: date
    justified: bool | None = None
    termination_reason: TerminationReason | None = None
    module: ServiceCode | None = None
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class PathReport(Envelope):
    """A centre reports a step of the path of a referral placed at one of its sites."""

    EVENT_TYPE = "centre.path_report"
    SCHEMA_VERSION = 1

    event_type: Literal["centre.path_report"] = "centre.path_report"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: PathReportData


class CapacityUpdatedData(Contract):
    site_id: SiteId
    service: ServiceCode
    places_total: int = Field(
        ge=0, le=10_000, description="Places the site has for this service (taken and free)."
    )
    as_of: AwareDatetime = Field(description="When the centre counted; older updates are ignored.")
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class CapacityUpdated(Envelope):
    EVENT_TYPE = "directory.capacity_updated"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.capacity_updated"] = "directory.capacity_updated"
    schema_version: Literal[1] = 1
    data: CapacityUpdatedData


class ServiceOpenedData(Contract):
    site_id: SiteId
    service: ServiceCode
    places_total: int = Field(ge=0, le=10_000)
    eligibility: Eligibility = "all"
    as_of: AwareDatetime
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class ServiceOpened(Envelope):
    EVENT_TYPE = "directory.service_opened"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.service_opened"] = "directory.service_opened"
    schema_version: Literal[1] = 1
    data: ServiceOpenedData


class ServiceClosedData(Contract):
    site_id: SiteId
    service: ServiceCode
    as_of: AwareDatetime
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class ServiceClosed(Envelope):
    EVENT_TYPE = "directory.service_closed"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.service_closed"] = "directory.service_closed"
    schema_version: Literal[1] = 1
    data: ServiceClosedData


class SiteAddedData(Contract):
    site_id: SiteId
    centre_id: CentreId
    commune_insee: InseeCode
    serves: list[DepartementCode] = Field(min_length=1)
    address_confidential: bool = False
    languages: list[Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]] = Field(
        default_factory=lambda: ["fr"]
    )
    as_of: AwareDatetime
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class SiteAdded(Envelope):
    EVENT_TYPE = "directory.site_added"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.site_added"] = "directory.site_added"
    schema_version: Literal[1] = 1
    data: SiteAddedData


class SiteClosedData(Contract):
    site_id: SiteId
    as_of: AwareDatetime
    actor: Actor | None = Field(default=None, description=ACTOR_DESCRIPTION)


class SiteClosed(Envelope):
    EVENT_TYPE = "directory.site_closed"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.site_closed"] = "directory.site_closed"
    schema_version: Literal[1] = 1
    data: SiteClosedData


CENTRE_RESPONSES: tuple[type[Envelope], ...] = (OfferAnswered, PathReport)
DIRECTORY_UPDATES: tuple[type[Envelope], ...] = (
    CapacityUpdated,
    ServiceOpened,
    ServiceClosed,
    SiteAdded,
    SiteClosed,
)
