"""What routing decides, published on ``referrals.routed``."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

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


class ReferralRouted(Envelope):
    """A site was chosen for the referral."""

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
