"""Whether a submitted referral can be admitted, and the identity-free referral it becomes.

Pure: the geography is passed in, the clock is a value. Every refusal is a ``Problem`` with a code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date

from aiguillage_common.codec import Problem
from aiguillage_common.geography import Commune, Geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, ReferralSubmittedData
from aiguillage_schemas.vocabulary import RejectionReason


@dataclass(frozen=True, slots=True)
class Admitted:
    data: ReferralAcceptedData
    fingerprint: str


def fingerprint(data: ReferralSubmittedData) -> str:
    """Same content, same fingerprint: tells a harmless resubmission from a conflicting one."""
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def admit(event: ReferralSubmitted, geography: Geography, today: date) -> Admitted | Problem:
    data = event.data
    residence = _resolve_residence(data, geography)
    if isinstance(residence, Problem):
        return residence
    dates = _check_dates(data, today)
    if dates is not None:
        return dates
    for index, insee in enumerate(data.bans.communes):
        if insee not in geography.communes:
            return Problem(
                RejectionReason.UNKNOWN_COMMUNE,
                "banned commune is not a known INSEE code",
                f"data.bans.communes.{index}",
            )
    victim = data.victim_safety.victim_commune_insee
    if victim is not None and victim not in geography.communes:
        return Problem(
            RejectionReason.UNKNOWN_COMMUNE,
            "victim commune is not a known INSEE code",
            "data.victim_safety.victim_commune_insee",
        )
    excluded = sorted({*data.bans.communes, *([victim] if victim else [])})
    accepted = ReferralAcceptedData(
        prescriber_id=data.prescriber.prescriber_id,
        prescriber_kind=data.prescriber.kind,
        judicial_frame=data.frame.judicial_frame,
        residence_commune_insee=residence.insee,
        residence_departement=residence.departement,
        needed_services=sorted(set(data.needed_services)),
        excluded_communes=excluded,
        excluded_departements=sorted(set(data.bans.departements)),
        urgency=data.urgency,
        respond_by=data.respond_by,
        language=data.person.language,
        interpreter_needed=data.person.interpreter_needed,
    )
    return Admitted(accepted, fingerprint(data))


def _resolve_residence(data: ReferralSubmittedData, geography: Geography) -> Commune | Problem:
    commune = _find_residence(data, geography)
    if isinstance(commune, Problem) or commune.departement in geography.departements:
        return commune
    # The network serves the 101 départements (metropolitan France and the five DROM). The
    # collectivités d'outre-mer (975 Saint-Pierre-et-Miquelon, 977 Saint-Barthélemy, 978
    # Saint-Martin, 984-989: TAAF, Wallis-et-Futuna, Polynésie, Nouvelle-Calédonie, Clipperton)
    # have their own justice and care: answered, not routed.
    residence = data.person.residence
    return Problem(
        RejectionReason.TERRITORY_NOT_SERVED,
        f"the CPCA network does not serve this territory ({commune.departement}: collectivité "
        "d'outre-mer); refer the person to the local services",
        "data.person.residence."
        + ("commune_insee" if residence.commune_insee is not None else "postal_code"),
    )


def _find_residence(data: ReferralSubmittedData, geography: Geography) -> Commune | Problem:
    residence = data.person.residence
    if residence.commune_insee is not None:
        commune = geography.communes.get(residence.commune_insee)
        if commune is None:
            return Problem(
                RejectionReason.UNKNOWN_COMMUNE,
                "residence commune is not a known INSEE code",
                "data.person.residence.commune_insee",
            )
        return commune
    assert residence.postal_code is not None
    candidates = geography.communes_for_postal_code(residence.postal_code)
    if not candidates:
        return Problem(
            RejectionReason.UNKNOWN_POSTAL_CODE,
            "residence postal code is not known",
            "data.person.residence.postal_code",
        )
    if len({c.departement for c in candidates}) > 1:
        return Problem(
            RejectionReason.AMBIGUOUS_POSTAL_CODE,
            "residence postal code spans several départements; give the INSEE commune code",
            "data.person.residence.postal_code",
        )
    # Several communes in one département: the département decides routing; the first code in
    # INSEE order stands for the distance, deterministically.
    return candidates[0]


def _check_dates(data: ReferralSubmittedData, today: date) -> Problem | None:
    frame = data.frame
    if frame.decision_date > today:
        return Problem(
            RejectionReason.FUTURE_DATE,
            "decision date is in the future",
            "data.frame.decision_date",
        )
    if frame.measure_end_date is not None and frame.measure_end_date < frame.decision_date:
        return Problem(
            RejectionReason.IMPOSSIBLE_DATE,
            "measure ends before it was decided",
            "data.frame.measure_end_date",
        )
    if data.identity.birth_date >= today:
        return Problem(
            RejectionReason.IMPOSSIBLE_DATE,
            "birth date is not in the past",
            "data.identity.birth_date",
        )
    return None
