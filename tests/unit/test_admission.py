"""What intake admits, and what it forwards: routing attributes only."""

from __future__ import annotations

from datetime import date, timedelta

from aiguillage_common.codec import Problem
from aiguillage_common.geography import Geography
from aiguillage_demo.samples import make_referral
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, Residence
from referral_intake.domain.admission import Admitted, admit, fingerprint

TODAY = date(2026, 11, 22)


def _with(referral: ReferralSubmitted, **changes: object) -> ReferralSubmitted:
    data = referral.data.model_dump()
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return referral.model_copy(update={"data": type(referral.data).model_validate(data)})


def test_a_postal_code_in_one_departement_is_resolved(geography: Geography) -> None:
    referral = _with(
        make_referral(0, today=TODAY), person__residence=Residence(postal_code="59000")
    )
    admitted = admit(referral, geography, TODAY)
    assert isinstance(admitted, Admitted)
    assert admitted.data.residence_departement == "59"


def test_a_postal_code_spanning_two_departements_is_ambiguous(geography: Geography) -> None:
    referral = _with(
        make_referral(0, today=TODAY), person__residence=Residence(postal_code="01200")
    )
    problem = admit(referral, geography, TODAY)
    assert isinstance(problem, Problem)
    assert problem.reason == "ambiguous_postal_code"
    assert problem.field_path == "data.person.residence.postal_code"


def test_unknown_places_and_impossible_dates_are_refused(geography: Geography) -> None:
    base = make_referral(0, today=TODAY)
    cases = {
        "unknown_commune": _with(base, person__residence=Residence(commune_insee="99999")),
        "unknown_postal_code": _with(base, person__residence=Residence(postal_code="00001")),
        "future_date": _with(base, frame__decision_date=TODAY + timedelta(days=1)),
        "impossible_date": _with(base, frame__measure_end_date=date(2000, 1, 1)),
    }
    for reason, referral in cases.items():
        problem = admit(referral, geography, TODAY)
        assert isinstance(problem, Problem), reason
        assert problem.reason == reason


def test_overseas_collectivities_are_answered_with_a_code_not_a_crash(
    geography: Geography,
) -> None:
    """975-988 lie outside the 101 départements the network serves: a coded rejection."""
    base = make_referral(0, today=TODAY)
    overseas = [
        c
        for c in geography.communes.values()
        if c.departement in ("975", "977", "978") or c.departement.startswith("98")
    ]
    assert {c.departement for c in overseas} >= {"975", "977", "978", "986", "987", "988"}
    for commune in overseas:
        problem = admit(
            _with(base, person__residence=Residence(commune_insee=commune.insee)), geography, TODAY
        )
        assert isinstance(problem, Problem), commune.insee
        assert problem.reason == "territory_not_served"
        assert problem.field_path == "data.person.residence.commune_insee"
    by_postal_code = admit(
        _with(base, person__residence=Residence(postal_code="97500")), geography, TODAY
    )
    assert isinstance(by_postal_code, Problem)
    assert by_postal_code.reason == "territory_not_served"
    for commune in ("97411", "97611", "97105"):  # La Réunion, Mayotte, Guadeloupe are served
        admitted = admit(
            _with(base, person__residence=Residence(commune_insee=commune)), geography, TODAY
        )
        assert isinstance(admitted, Admitted), commune


def test_the_victims_commune_only_joins_the_exclusions_unlabelled(geography: Geography) -> None:
    referral = _with(
        make_referral(0, today=TODAY),
        victim_safety__victim_commune_insee="59599",
        bans__communes=["59350"],
    )
    admitted = admit(referral, geography, TODAY)
    assert isinstance(admitted, Admitted)
    forwarded = admitted.data.model_dump_json()
    assert admitted.data.excluded_communes == ["59350", "59599"]
    assert "victim" not in forwarded
    assert referral.data.identity.last_name not in forwarded
    assert referral.data.identity.phone not in forwarded  # type: ignore[operator]


def test_fingerprint_tells_same_content_from_different_content() -> None:
    referral = make_referral(2, today=TODAY)
    again = referral.model_copy(update={"event_id": referral.correlation_id})
    changed = _with(referral, urgency="urgent")
    assert fingerprint(referral.data) == fingerprint(again.data)
    assert fingerprint(referral.data) != fingerprint(changed.data)
