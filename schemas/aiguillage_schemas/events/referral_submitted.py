"""What a prescriber publishes on ``referrals.intake``.

This is the only event that carries a person's identity, and it only travels from the prescriber to
referral-intake, which keeps the identity and forwards a pseudonymous referral.

Version 2 (current) replaced ``person.evening_only`` by ``person.availability``; intake still
accepts version 1 and upgrades it with ``upgrade_v1`` (see schemas/CHANGELOG.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from aiguillage_schemas.envelope import Contract, Envelope, WireDate
from aiguillage_schemas.vocabulary import (
    Availability,
    JudicialFrame,
    PrescriberKind,
    ServiceCode,
    Urgency,
)

InseeCode = Annotated[
    str,
    StringConstraints(pattern=r"^([0-9]{5}|2[AB][0-9]{3})$"),
    Field(description="INSEE commune code (5 characters, Corsica 2A/2B)."),
]
PostalCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
DepartementCode = Annotated[str, StringConstraints(pattern=r"^([0-9]{2}|2[AB]|97[0-9])$")]
ReferralId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{5,63}$"),
    Field(description="Pseudonymous referral id chosen by the prescriber (no identity in it)."),
]


class Prescriber(Contract):
    prescriber_id: str = Field(min_length=1, max_length=64, description="Registry id.")
    kind: PrescriberKind
    jurisdiction: str = Field(
        min_length=1, max_length=128, description="Court or service, e.g. 'TJ Lille'."
    )
    case_reference: str = Field(
        min_length=1, max_length=64, description="Prescriber's opaque case reference."
    )


class Frame(Contract):
    judicial_frame: JudicialFrame
    decision_date: WireDate
    hearing_date: WireDate | None = None
    measure_end_date: WireDate | None = None


class Bans(Contract):
    """Places the person may not enter: sites there are never proposed."""

    communes: list[InseeCode] = Field(default_factory=list, max_length=50)
    departements: list[DepartementCode] = Field(default_factory=list, max_length=20)


class Residence(Contract):
    """Where the person lives: an INSEE commune code, or a postal code intake resolves."""

    commune_insee: InseeCode | None = None
    postal_code: PostalCode | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Residence:
        if self.commune_insee is None and self.postal_code is None:
            raise ValueError("give commune_insee or postal_code")
        return self


class PersonV1(Contract):
    residence: Residence
    language: str = Field(default="fr", pattern=r"^[a-z]{2,3}$", description="ISO 639 code.")
    interpreter_needed: bool = False
    reduced_mobility: bool = False
    evening_only: bool = False


class Person(Contract):
    residence: Residence
    language: str = Field(default="fr", pattern=r"^[a-z]{2,3}$", description="ISO 639 code.")
    interpreter_needed: bool = False
    reduced_mobility: bool = False
    availability: list[Availability] = Field(
        default_factory=lambda: [Availability.DAYTIME, Availability.EVENING],
        min_length=1,
        max_length=3,
        description="When the person can attend; evening groups exist.",
    )


class Identity(Contract):
    """Needed by the centre to contact the person, and by nobody else."""

    last_name: str = Field(min_length=1, max_length=128)
    first_name: str = Field(min_length=1, max_length=128)
    birth_date: WireDate
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=256)


class VictimSafety(Contract):
    """Used only to exclude sites; never forwarded."""

    victim_commune_insee: InseeCode | None = None
    anti_approach_bracelet: bool = False


class ReferralSubmittedDataV1(Contract):
    prescriber: Prescriber
    frame: Frame
    needed_services: list[ServiceCode] = Field(min_length=1, max_length=11)
    bans: Bans = Field(default_factory=Bans)
    person: PersonV1
    identity: Identity
    victim_safety: VictimSafety = Field(default_factory=VictimSafety)
    urgency: Urgency = Urgency.STANDARD
    respond_by: WireDate | None = Field(default=None, description="Deadline for a first answer.")


class ReferralSubmittedData(Contract):
    prescriber: Prescriber
    frame: Frame
    needed_services: list[ServiceCode] = Field(min_length=1, max_length=11)
    bans: Bans = Field(default_factory=Bans)
    person: Person
    identity: Identity
    victim_safety: VictimSafety = Field(default_factory=VictimSafety)
    urgency: Urgency = Urgency.STANDARD
    respond_by: WireDate | None = Field(default=None, description="Deadline for a first answer.")


class ReferralSubmittedV1(Envelope):
    """Previous version, still accepted by intake and upgraded on arrival."""

    EVENT_TYPE = "referral.submitted"
    SCHEMA_VERSION = 1

    event_type: Literal["referral.submitted"] = "referral.submitted"
    schema_version: Literal[1] = 1
    subject: ReferralId
    data: ReferralSubmittedDataV1


class ReferralSubmitted(Envelope):
    """A prescriber asks Aiguillage to orient a person to a CPCA site (current version)."""

    EVENT_TYPE = "referral.submitted"
    SCHEMA_VERSION = 2

    event_type: Literal["referral.submitted"] = "referral.submitted"
    schema_version: Literal[2] = 2
    subject: ReferralId
    data: ReferralSubmittedData


def upgrade_v1(event: ReferralSubmittedV1) -> ReferralSubmitted:
    """The one place that knows how v1 maps to v2: ``evening_only`` becomes an availability.

    The envelope (event id, times, ids) is kept, so deduplication and correlation are unchanged.
    """
    document = event.model_dump()
    person = document["data"]["person"]
    evening_only = person.pop("evening_only")
    person["availability"] = (
        [Availability.EVENING] if evening_only else [Availability.DAYTIME, Availability.EVENING]
    )
    document["schema_version"] = 2
    return ReferralSubmitted.model_validate(document)
