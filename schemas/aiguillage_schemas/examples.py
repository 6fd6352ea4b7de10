"""Published examples, one per inbound contract and per answer a prescriber receives.

Fixed values (ids, dates, made-up people) so that the committed files only change when a contract
does. They are validated by pydantic (tests) and by ajv, a validator from another ecosystem (CI).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    Actor,
    CapacityUpdated,
    CapacityUpdatedData,
    OfferAnswered,
    OfferAnsweredData,
    PathReport,
    PathReportData,
)
from aiguillage_schemas.events.prescribers import (
    Channel,
    Jurisdiction,
    PrescriberEntry,
    PrescriberRegistryUpdated,
)
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralRejected,
    Rejection,
    RejectionError,
)
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralAmendedData,
    ReferralCancellationRequested,
    ReferralCancellationRequestedData,
)
from aiguillage_schemas.events.referral_submitted import (
    Bans,
    Frame,
    Identity,
    Person,
    PersonV1,
    Prescriber,
    ReferralSubmitted,
    ReferralSubmittedData,
    ReferralSubmittedDataV1,
    ReferralSubmittedV1,
    Residence,
    VictimSafety,
)
from aiguillage_schemas.events.routing_decisions import (
    HousingOffered,
    HousingOfferedData,
    HousingUpdated,
    HousingUpdatedData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import (
    Availability,
    JudicialFrame,
    PrescriberKind,
    RejectionReason,
    ServiceCode,
    Urgency,
)

REFERRAL_ID = "tjlille-2026-000123"
CORRELATION = UUID("5d0c4a8e-2f7b-4c61-9a3e-0b8f6d1e2c47")
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PRESCRIBER = Prescriber(
    prescriber_id="parquet-tj-lille",
    kind=PrescriberKind.PARQUET,
    jurisdiction="TJ Lille",
    case_reference="PR-2026-004512",
)
FRAME = Frame(
    judicial_frame=JudicialFrame.ALTERNATIVE_ORIENTATION,
    decision_date=date(2026, 11, 18),
    measure_end_date=date(2027, 5, 18),
)
IDENTITY = Identity(
    last_name="Exemple",
    first_name="Camille",
    birth_date=date(1984, 3, 9),
    phone="0600000000",
    address="1 rue de l'Exemple, 59350 Lille",
)
NEEDS = [ServiceCode.INITIAL_ASSESSMENT, ServiceCode.RESPONSIBILITY_COURSE]
BANS = Bans(communes=["59599"])
SAFETY = VictimSafety(victim_commune_insee="59009", anti_approach_bracelet=False)


def examples() -> dict[str, Envelope]:
    """Schema name (``<event_type>.v<N>``) -> example."""
    submitted = ReferralSubmitted(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a01"),
        occurred_at=AT,
        source="parquet-tj-lille",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=ReferralSubmittedData(
            prescriber=PRESCRIBER,
            frame=FRAME,
            needed_services=NEEDS,
            bans=BANS,
            person=Person(
                residence=Residence(commune_insee="59350"),
                availability=[Availability.EVENING],
            ),
            identity=IDENTITY,
            victim_safety=SAFETY,
            urgency=Urgency.STANDARD,
            respond_by=date(2026, 11, 24),
        ),
    )
    submitted_v1 = ReferralSubmittedV1(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a02"),
        occurred_at=AT,
        source="parquet-tj-lille",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=ReferralSubmittedDataV1(
            prescriber=PRESCRIBER,
            frame=FRAME,
            needed_services=NEEDS,
            bans=BANS,
            person=PersonV1(residence=Residence(postal_code="59000"), evening_only=True),
            identity=IDENTITY,
            victim_safety=SAFETY,
        ),
    )
    amended = ReferralAmended(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a03"),
        occurred_at=AT,
        source="parquet-tj-lille",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=ReferralAmendedData(
            prescriber_id="parquet-tj-lille",
            identity=IDENTITY.model_copy(update={"phone": "0611111111"}),
        ),
    )
    cancelled = ReferralCancellationRequested(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a04"),
        occurred_at=AT,
        source="parquet-tj-lille",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=ReferralCancellationRequestedData(
            prescriber_id="parquet-tj-lille", reason="measure_lifted"
        ),
    )
    rejected = ReferralRejected(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a05"),
        occurred_at=AT,
        source="referral-intake",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        # Two problems in one referral: both are listed, the first is also reason / field_path.
        data=Rejection(
            reason=RejectionReason.IMPOSSIBLE_DATE,
            message="2 problems: data.frame.decision_date: Input should be a date written "
            "YYYY-MM-DD; data.person.interpreter_needed: Input should be a valid boolean",
            field_path="data.frame.decision_date",
            original_sha256="9f2c" * 16,
            original_topic="referrals.intake",
            original_partition=3,
            original_offset=1842,
            prescriber_id="parquet-tj-lille",
            errors=[
                RejectionError(
                    reason=RejectionReason.IMPOSSIBLE_DATE,
                    message="data.frame.decision_date: Input should be a date written YYYY-MM-DD",
                    field_path="data.frame.decision_date",
                ),
                RejectionError(
                    reason=RejectionReason.WRONG_TYPE,
                    message="data.person.interpreter_needed: Input should be a valid boolean",
                    field_path="data.person.interpreter_needed",
                ),
            ],
        ),
    )
    registry = PrescriberRegistryUpdated(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a06"),
        occurred_at=AT,
        source="registry-admin",
        correlation_id=UUID("6e1d5b9f-3a8c-4d72-8b4f-1c9a7e2d3f58"),
        subject="parquet-tj-lille",
        data=PrescriberEntry(
            prescriber_id="parquet-tj-lille",
            kind=PrescriberKind.PARQUET,
            name="Parquet (parquet-tj-lille)",
            jurisdiction=Jurisdiction(departements=["59"]),
            signing_key_id="parquet-tj-lille-2027",
            channels=[Channel(type="kafka")],
        ),
    )
    # What a centre tells routing (signed; docs/routing.md): through the portal, naming its user;
    # from its own system, with its own key; a capacity count confirmed in the portal.
    answered = OfferAnswered(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a07"),
        occurred_at=AT,
        source="portal",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=OfferAnsweredData(
            centre_id="HDF-ARRAS",
            site_id="HDF-ARRAS-59",
            answer="declined",
            decline_reason="no_capacity",
            actor=Actor(kind="centre_user", id="u-7f3a2c91"),
        ),
    )
    reported = PathReport(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a08"),
        occurred_at=AT,
        source="HDF-ARRAS",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=PathReportData(
            centre_id="HDF-ARRAS",
            site_id="HDF-ARRAS-59",
            report="attended",
            occurred_on=date(2026, 11, 27),
            actor=Actor(kind="centre_system", id="hdf-arras-dossiers"),
        ),
    )
    counted = CapacityUpdated(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a09"),
        occurred_at=AT,
        source="portal",
        correlation_id=UUID("7a2e6c0f-4b9d-4e83-9c5a-2d0b8f3e4a69"),
        subject="HDF-ARRAS-59",
        data=CapacityUpdatedData(
            site_id="HDF-ARRAS-59",
            service=ServiceCode.RESPONSIBILITY_COURSE,
            places_total=12,
            as_of=AT,
            actor=Actor(kind="centre_user", id="u-7f3a2c91"),
        ),
    )
    platform = SiteRef(
        centre_id="PN-HEBERGEMENT",
        centre_name="Plateforme nationale d'hébergement des auteurs évincés "
        "(Groupe SOS Solidarités)",
        site_id="PN-HEBERGEMENT-NATIONAL",
        site_commune_insee="75111",
        site_departement="75",
        address_confidential=True,
    )
    housing_offered = HousingOffered(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a0a"),
        occurred_at=AT,
        source="routing",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=HousingOfferedData(
            decision_id=UUID("3c1d7e2a-9b4f-4a61-8e5d-0f2b6a9c7d31"),
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            site=platform,
            care_site=SiteRef(
                centre_id="HDF-ARRAS",
                centre_name="CPCA Hauts-de-France (Arras / Home des Rosati)",
                site_id="HDF-ARRAS-59",
                site_commune_insee="59350",
                site_departement="59",
                address_confidential=False,
            ),
            distance_km=2.1,
            explanation="Prise en charge au site HDF-ARRAS-59; hébergement : aucun site à "
            "portée n'a de place, l'hébergement est proposé à la plateforme nationale.",
            answer_by=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        ),
    )
    housing_updated = HousingUpdated(
        event_id=UUID("0f6a2f3e-8a51-4b8e-9c39-6f0e3c1b2a0b"),
        occurred_at=AT,
        source="routing",
        correlation_id=CORRELATION,
        subject=REFERRAL_ID,
        data=HousingUpdatedData(
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            site=platform,
            outcome="declined",
            escalated=True,
            explanation="La plateforme a refusé l'hébergement (no_capacity); un coordinateur "
            "cherche une solution d'hébergement, la prise en charge continue.",
        ),
    )
    events: list[Envelope] = [
        housing_offered,
        housing_updated,
        submitted,
        submitted_v1,
        amended,
        cancelled,
        rejected,
        registry,
        answered,
        reported,
        counted,
    ]
    return {event.schema_name(): event for event in events}
