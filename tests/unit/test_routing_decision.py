"""The first routing rule: territory, services, exclusions, then own département and distance."""

from __future__ import annotations

from aiguillage_common.geography import Geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.domain.decision import Routed, Unroutable, decide
from routing.domain.directory import Directory


def _referral(
    commune: str, departement: str, *needs: ServiceCode, **extra: object
) -> ReferralAcceptedData:
    return ReferralAcceptedData(
        prescriber_id="spip-test",
        prescriber_kind=PrescriberKind.SPIP,
        judicial_frame=JudicialFrame.SURSIS_PROBATOIRE,
        residence_commune_insee=commune,
        residence_departement=departement,
        needed_services=list(needs) or [ServiceCode.RESPONSIBILITY_COURSE],
        urgency=Urgency.STANDARD,
        language="fr",
        interpreter_needed=False,
        **extra,  # type: ignore[arg-type]
    )


def test_prefers_the_site_in_the_persons_own_departement(
    directory: Directory, geography: Geography
) -> None:
    decision = decide(_referral("59350", "59"), directory, geography)
    assert isinstance(decision, Routed)
    assert decision.site.departement == "59"
    assert decision.site.centre_id == "HDF-ARRAS"


def test_a_site_missing_a_needed_service_is_never_chosen(
    directory: Directory, geography: Geography
) -> None:
    decision = decide(_referral("21231", "21", ServiceCode.ADDICTION_CARE), directory, geography)
    assert isinstance(decision, Unroutable)
    assert decision.reason == "no_site_offers_services"
    assert "addiction_care" in decision.explanation


def test_exclusion_zones_push_the_choice_elsewhere_or_block_it(
    directory: Directory, geography: Geography
) -> None:
    home = decide(_referral("59350", "59"), directory, geography)
    assert isinstance(home, Routed)
    moved = decide(
        _referral("59350", "59", excluded_communes=[home.site.commune_insee]), directory, geography
    )
    assert isinstance(moved, Routed)
    assert moved.site.commune_insee != home.site.commune_insee
    blocked = decide(
        _referral("59350", "59", excluded_departements=["59", "62"]), directory, geography
    )
    assert isinstance(blocked, Unroutable)
    assert blocked.reason == "all_sites_excluded"


def test_same_state_and_referral_give_the_same_decision(
    directory: Directory, geography: Geography
) -> None:
    referral = _referral("69381", "69", ServiceCode.PSYCHOLOGICAL_FOLLOWUP)
    assert decide(referral, directory, geography) == decide(referral, directory, geography)
