"""Made-up referrals for the demo, the tests and the benchmarks. No real person is in here."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta

from aiguillage_schemas.events.referral_submitted import (
    Bans,
    Frame,
    Identity,
    Person,
    Prescriber,
    ReferralSubmitted,
    ReferralSubmittedData,
    Residence,
    VictimSafety,
)
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency

# (commune INSEE, département, prescriber id, prescriber kind, frame, needs) — spread over the map.
DEMO_CASES: tuple[tuple[str, str, PrescriberKind, JudicialFrame, tuple[ServiceCode, ...]], ...] = (
    (
        "59350",
        "parquet-tj-lille",
        PrescriberKind.PARQUET,
        JudicialFrame.ALTERNATIVE_ORIENTATION,
        (ServiceCode.RESPONSIBILITY_COURSE,),
    ),
    (
        "69381",
        "spip-69",
        PrescriberKind.SPIP,
        JudicialFrame.SURSIS_PROBATOIRE,
        (ServiceCode.PSYCHOLOGICAL_FOLLOWUP, ServiceCode.ADDICTION_CARE),
    ),
    (
        "13201",
        "jap-tj-marseille",
        PrescriberKind.JAP,
        JudicialFrame.SENTENCE_ADJUSTMENT,
        (ServiceCode.DISCUSSION_GROUP, ServiceCode.SOCIAL_SUPPORT),
    ),
    (
        "33063",
        "parquet-tj-bordeaux",
        PrescriberKind.PARQUET,
        JudicialFrame.ALTERNATIVE_EVICTION,
        (ServiceCode.EVICTION_HOUSING, ServiceCode.INITIAL_ASSESSMENT),
    ),
    (
        "35238",
        "tribunal-rennes",
        PrescriberKind.TRIBUNAL_CORRECTIONNEL,
        JudicialFrame.RESPONSIBILITY_COURSE_PENALTY,
        (ServiceCode.RESPONSIBILITY_COURSE,),
    ),
    (
        "67482",
        "juge-instruction-strasbourg",
        PrescriberKind.JUGE_INSTRUCTION,
        JudicialFrame.CONTROLE_JUDICIAIRE,
        (ServiceCode.PSYCHOLOGICAL_FOLLOWUP,),
    ),
    (
        "31555",
        "spip-31",
        PrescriberKind.SPIP,
        JudicialFrame.SURSIS_PROBATOIRE,
        (ServiceCode.EMPLOYMENT_SUPPORT, ServiceCode.DISCUSSION_GROUP),
    ),
    (
        "75056",
        "parquet-tj-paris",
        PrescriberKind.PARQUET,
        JudicialFrame.COMPOSITION_PENALE,
        (ServiceCode.RESPONSIBILITY_COURSE, ServiceCode.PSYCHOLOGICAL_FOLLOWUP),
    ),
    (
        "97411",
        "spip-974",
        PrescriberKind.SPIP,
        JudicialFrame.SURSIS_PROBATOIRE,
        (ServiceCode.INITIAL_ASSESSMENT,),
    ),
    (
        "64445",
        "jaf-tj-pau",
        PrescriberKind.JAF,
        JudicialFrame.PROTECTION_ORDER,
        (ServiceCode.PSYCHIATRIC_FOLLOWUP,),
    ),
    (
        "44109",
        "ne-frappez-pas",
        PrescriberKind.VOLUNTARY_LINE,
        JudicialFrame.VOLUNTARY,
        (ServiceCode.HELPLINE_ORIENTATION, ServiceCode.DISCUSSION_GROUP),
    ),
    (
        "21231",
        "parquet-tj-dijon",
        PrescriberKind.PARQUET,
        JudicialFrame.CRPC,
        (ServiceCode.ADDICTION_CARE,),
    ),
)

_FIRST = ("Alex", "Camille", "Dominique", "Sacha", "Claude", "Morgan", "Lou", "Charlie")
_LAST = ("Exemple", "Fictif", "Imaginaire", "Modele", "Essai", "Specimen")


def new_referral_id(prefix: str = "ref") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def make_referral(
    case_index: int,
    referral_id: str | None = None,
    *,
    last_name: str | None = None,
    rng: random.Random | None = None,
    today: date | None = None,
) -> ReferralSubmitted:
    """A valid referral for demo case ``case_index`` (modulo the number of cases)."""
    rng = rng or random.Random(case_index)  # noqa: S311 - made-up data
    today = today or date.today()
    insee, prescriber_id, kind, frame, needs = DEMO_CASES[case_index % len(DEMO_CASES)]
    referral_id = referral_id or new_referral_id()
    return ReferralSubmitted(
        source=prescriber_id,
        correlation_id=uuid.uuid4(),
        subject=referral_id,
        data=ReferralSubmittedData(
            prescriber=Prescriber(
                prescriber_id=prescriber_id,
                kind=kind,
                jurisdiction=prescriber_id,
                case_reference=f"PR-{rng.randrange(10**6):06d}",
            ),
            frame=Frame(
                judicial_frame=frame, decision_date=today - timedelta(days=rng.randrange(30))
            ),
            needed_services=list(needs),
            bans=Bans(),
            person=Person(residence=Residence(commune_insee=insee)),
            identity=Identity(
                last_name=last_name or rng.choice(_LAST),
                first_name=rng.choice(_FIRST),
                birth_date=date(
                    1970 + rng.randrange(35), 1 + rng.randrange(12), 1 + rng.randrange(28)
                ),
                phone=f"06{rng.randrange(10**8):08d}",
            ),
            victim_safety=VictimSafety(),
            urgency=Urgency.URGENT if ServiceCode.EVICTION_HOUSING in needs else Urgency.STANDARD,
        ),
    )
