"""Made-up referrals for the demo, the tests and the benchmarks. No real person is in here."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from aiguillage_schemas.events.referral_requests import (
    CancellationReason,
    ReferralCancellationRequested,
    ReferralCancellationRequestedData,
)
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


@dataclass(frozen=True, slots=True)
class DemoCase:
    commune_insee: str
    prescriber_id: str
    kind: PrescriberKind
    frame: JudicialFrame
    needs: tuple[ServiceCode, ...]


_S = ServiceCode
_K = PrescriberKind
_F = JudicialFrame
# Spread over the map and over prescribers, frames and needs. Dijon's addiction care is the demo's
# unroutable case: no centre serving Côte-d'Or offers it in the directory.
DEMO_CASES: tuple[DemoCase, ...] = (
    DemoCase(
        "59350",
        "parquet-tj-lille",
        _K.PARQUET,
        _F.ALTERNATIVE_ORIENTATION,
        (_S.RESPONSIBILITY_COURSE,),
    ),
    DemoCase(
        "69381",
        "spip-69",
        _K.SPIP,
        _F.SURSIS_PROBATOIRE,
        (_S.PSYCHOLOGICAL_FOLLOWUP, _S.ADDICTION_CARE),
    ),
    DemoCase(
        "13201",
        "jap-tj-marseille",
        _K.JAP,
        _F.SENTENCE_ADJUSTMENT,
        (_S.DISCUSSION_GROUP, _S.SOCIAL_SUPPORT),
    ),
    DemoCase(
        "31555",
        "parquet-tj-toulouse",
        _K.PARQUET,
        _F.ALTERNATIVE_EVICTION,
        (_S.EVICTION_HOUSING, _S.INITIAL_ASSESSMENT),
    ),
    DemoCase(
        "35238",
        "tribunal-rennes",
        _K.TRIBUNAL_CORRECTIONNEL,
        _F.RESPONSIBILITY_COURSE_PENALTY,
        (_S.RESPONSIBILITY_COURSE,),
    ),
    DemoCase(
        "67482",
        "juge-instruction-strasbourg",
        _K.JUGE_INSTRUCTION,
        _F.CONTROLE_JUDICIAIRE,
        (_S.PSYCHOLOGICAL_FOLLOWUP,),
    ),
    DemoCase(
        "33063",
        "spip-33",
        _K.SPIP,
        _F.SURSIS_PROBATOIRE,
        (_S.PSYCHIATRIC_FOLLOWUP, _S.DISCUSSION_GROUP),
    ),
    DemoCase(
        "75056",
        "parquet-tj-paris",
        _K.PARQUET,
        _F.COMPOSITION_PENALE,
        (_S.RESPONSIBILITY_COURSE, _S.PSYCHOLOGICAL_FOLLOWUP),
    ),
    DemoCase("97411", "spip-974", _K.SPIP, _F.SURSIS_PROBATOIRE, (_S.INITIAL_ASSESSMENT,)),
    DemoCase("64445", "jaf-tj-pau", _K.JAF, _F.PROTECTION_ORDER, (_S.PSYCHIATRIC_FOLLOWUP,)),
    DemoCase(
        "44109",
        "ne-frappez-pas",
        _K.VOLUNTARY_LINE,
        _F.VOLUNTARY,
        (_S.HELPLINE_ORIENTATION, _S.DISCUSSION_GROUP),
    ),
    DemoCase("21231", "parquet-tj-dijon", _K.PARQUET, _F.CRPC, (_S.ADDICTION_CARE,)),
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
    case = DEMO_CASES[case_index % len(DEMO_CASES)]
    insee, prescriber_id, kind, frame, needs = (
        case.commune_insee,
        case.prescriber_id,
        case.kind,
        case.frame,
        case.needs,
    )
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


def make_cancellation(
    referral: ReferralSubmitted, reason: CancellationReason = "measure_lifted"
) -> ReferralCancellationRequested:
    """The prescriber of ``referral`` asks to cancel it."""
    prescriber_id = referral.data.prescriber.prescriber_id
    return ReferralCancellationRequested(
        source=prescriber_id,
        correlation_id=referral.correlation_id,
        subject=referral.subject,
        data=ReferralCancellationRequestedData(prescriber_id=prescriber_id, reason=reason),
    )
