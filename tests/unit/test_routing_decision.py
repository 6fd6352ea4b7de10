"""Routing decisions on the seed directory: territory, services, eligibility, exclusions,
capacity and its freshness, preference and the decision record."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from aiguillage_common.geography import Geography
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from routing.domain.decision import Policy, Routed, Unroutable, Waitlisted, decide
from routing.domain.directory import Capacity, Directory, confirmations_due

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _referral(
    commune: str, departement: str, *needs: ServiceCode, **extra: object
) -> ReferralAcceptedData:
    fields: dict[str, object] = {
        "prescriber_id": "spip-test",
        "prescriber_kind": PrescriberKind.SPIP,
        "judicial_frame": JudicialFrame.SURSIS_PROBATOIRE,
        "residence_commune_insee": commune,
        "residence_departement": departement,
        "needed_services": list(needs) or [ServiceCode.RESPONSIBILITY_COURSE],
        "urgency": Urgency.STANDARD,
        "language": "fr",
        "interpreter_needed": False,
    }
    fields.update(extra)
    return ReferralAcceptedData.model_validate(fields)


def _with_capacity(
    directory: Directory, site_id: str, service: ServiceCode, **changes: object
) -> Directory:
    capacity = dict(directory.capacity)
    capacity[(site_id, service)] = dataclasses.replace(capacity[(site_id, service)], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(directory, capacity=capacity)


def _fill(directory: Directory, site_id: str, service: ServiceCode) -> Directory:
    total = directory.capacity[(site_id, service)].places_total
    return _with_capacity(directory, site_id, service, places_held=total)


def test_prefers_the_site_in_the_persons_own_departement(
    directory: Directory, geography: Geography
) -> None:
    decision = decide(_referral("59350", "59"), directory, geography, now=NOW)
    assert isinstance(decision, Routed)
    assert decision.site.site_id == "HDF-ARRAS-59"
    assert "dans le département de résidence" in decision.explanation


def test_a_site_missing_a_needed_service_is_never_chosen(
    directory: Directory, geography: Geography
) -> None:
    referral = _referral("21231", "21", ServiceCode.ADDICTION_CARE)
    decision = decide(
        referral, directory, geography, Policy(allow_neighbour_fallback=False), now=NOW
    )
    assert isinstance(decision, Unroutable)
    assert decision.reason == "no_site_offers_services"
    assert "addiction_care" in decision.explanation


def test_neighbouring_departement_is_the_allowed_fallback(
    directory: Directory, geography: Geography
) -> None:
    # Nobody serving Côte-d'Or offers addiction care; a neighbouring département's site does.
    decision = decide(
        _referral("21231", "21", ServiceCode.ADDICTION_CARE), directory, geography, now=NOW
    )
    assert isinstance(decision, Routed)
    assert decision.site.departement in geography.neighbours["21"]
    assert "repli" in decision.explanation


def test_exclusion_zones_push_the_choice_elsewhere_or_block_it(
    directory: Directory, geography: Geography
) -> None:
    home = decide(_referral("59350", "59"), directory, geography, now=NOW)
    assert isinstance(home, Routed)
    moved = decide(
        _referral("59350", "59", excluded_communes=[home.site.commune_insee]),
        directory,
        geography,
        now=NOW,
    )
    assert isinstance(moved, Routed)
    assert moved.site.commune_insee != home.site.commune_insee
    blocked = decide(
        _referral("59350", "59", excluded_departements=["59", "62", "02", "80"]),
        directory,
        geography,
        now=NOW,
    )
    assert isinstance(blocked, Unroutable)
    assert blocked.reason == "all_sites_excluded"


def test_a_full_site_sends_the_referral_to_the_next_one(
    directory: Directory, geography: Geography
) -> None:
    full = _fill(directory, "HDF-ARRAS-59", ServiceCode.RESPONSIBILITY_COURSE)
    decision = decide(_referral("59350", "59"), full, geography, now=NOW)
    assert isinstance(decision, Routed)
    assert decision.site.site_id == "HDF-ARRAS-62"
    lille = next(c for c in decision.record.candidates if c.site_id == "HDF-ARRAS-59")
    assert lille.capacity == {"responsibility_course": 0}


def test_a_short_record_still_holds_the_site_chosen_after_cheaper_full_ones(
    directory: Directory, geography: Geography
) -> None:
    # The nearest site is full: with room for one candidate in the record, the full site would
    # take it and the chosen one fall out of its own decision's record.
    full = _fill(directory, "HDF-ARRAS-59", ServiceCode.RESPONSIBILITY_COURSE)
    for kept in (1, 2):
        policy = Policy(record_candidates=kept)
        decision = decide(_referral("59350", "59"), full, geography, policy, now=NOW)
        assert isinstance(decision, Routed)
        assert decision.site.site_id == "HDF-ARRAS-62"
        ids = [c.site_id for c in decision.record.candidates]
        assert len(ids) == kept
        assert ids[-1] == "HDF-ARRAS-62"
        assert decision.record.omitted > 0


def test_no_room_anywhere_waits_at_the_best_site_for_the_missing_service(
    directory: Directory, geography: Geography
) -> None:
    full = directory
    for site in directory.sites:
        if ServiceCode.RESPONSIBILITY_COURSE in site.services:
            full = _fill(full, site.site_id, ServiceCode.RESPONSIBILITY_COURSE)
    decision = decide(_referral("59350", "59"), full, geography, now=NOW)
    assert isinstance(decision, Waitlisted)
    assert decision.site.site_id == "HDF-ARRAS-59"
    assert decision.service is ServiceCode.RESPONSIBILITY_COURSE


def test_a_stale_capacity_is_ranked_lower_by_default_and_dropped_when_the_policy_says_so(
    directory: Directory, geography: Geography
) -> None:
    stale = _with_capacity(
        directory,
        "HDF-ARRAS-59",
        ServiceCode.RESPONSIBILITY_COURSE,
        updated_at=NOW - timedelta(days=8),
    )
    referral = _referral("59350", "59")
    ranked = decide(
        referral, stale, geography, Policy(capacity_freshness=timedelta(days=7)), now=NOW
    )
    assert isinstance(ranked, Routed)
    assert ranked.site.site_id == "HDF-ARRAS-59"  # still the best, on its last counts
    lille = next(c for c in ranked.record.candidates if c.site_id == "HDF-ARRAS-59")
    assert lille.stale
    assert lille.score["stale"] == Policy().stale_penalty_km
    assert "non confirmée" in ranked.explanation

    drop = Policy(capacity_freshness=timedelta(days=7), stale_capacity="drop")
    dropped = decide(referral, stale, geography, drop, now=NOW)
    assert isinstance(dropped, Routed)
    assert dropped.site.site_id != "HDF-ARRAS-59"
    lille = next(c for c in dropped.record.candidates if c.site_id == "HDF-ARRAS-59")
    assert lille.capacity["responsibility_course"] is None


def test_volunteers_cannot_take_judicial_only_places(
    directory: Directory, geography: Geography
) -> None:
    referral = _referral(
        "69381",
        "69",
        ServiceCode.EVICTION_HOUSING,
        prescriber_kind=PrescriberKind.VOLUNTARY,
        judicial_frame=JudicialFrame.VOLUNTARY,
    )
    decision = decide(
        referral, directory, geography, Policy(allow_neighbour_fallback=False), now=NOW
    )
    assert isinstance(decision, Unroutable)
    lyon = next(c for c in decision.record.candidates if c.site_id == "ARA-LYON-69")
    assert "not_eligible:eviction_housing" in lyon.excluded


def test_already_tried_sites_are_never_offered_again(
    directory: Directory, geography: Geography
) -> None:
    first = decide(_referral("59350", "59"), directory, geography, now=NOW)
    assert isinstance(first, Routed)
    second = decide(
        _referral("59350", "59"), directory, geography, now=NOW, tried=[first.site.site_id]
    )
    assert isinstance(second, Routed)
    assert second.site.site_id != first.site.site_id


def test_the_record_explains_every_candidate_with_the_policy_version(
    directory: Directory, geography: Geography
) -> None:
    policy = Policy(max_distance_km=60)
    decision = decide(_referral("59350", "59"), directory, geography, policy, now=NOW)
    record = decision.record
    assert record.policy_version == policy.version != Policy().version
    by_site = {c.site_id: c for c in record.candidates}
    assert by_site["HDF-ARRAS-59"].excluded == ()
    assert set(by_site["HDF-ARRAS-59"].score) == {
        "distance",
        "away",
        "territory",
        "load",
        "language",
        "stale",
        "total",
    }
    assert any("too_far" in c.excluded for c in record.candidates)
    assert all(c.excluded for c in record.candidates if c.site_id.startswith("HDF-CREIL"))


def test_the_stored_record_says_everything_the_decision_record_holds(
    directory: Directory, geography: Geography
) -> None:
    # The JSON stored with each decision (``aiguillage-routing-decision`` reads it back) is the
    # record's every field, as dataclasses.asdict would give it, with its time as ISO text.
    record = decide(_referral("59350", "59"), directory, geography, now=NOW).record
    expected = dataclasses.asdict(record)
    expected["decided_at"] = record.decided_at.isoformat()
    assert json.dumps(record.to_json(), sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert len(record.candidates) > 1


def test_same_state_and_referral_give_the_same_decision(
    directory: Directory, geography: Geography
) -> None:
    referral = _referral("69381", "69", ServiceCode.PSYCHOLOGICAL_FOLLOWUP)
    assert decide(referral, directory, geography, now=NOW) == decide(
        referral, directory, geography, now=NOW
    )


def test_seed_capacity_is_marked_assumed_and_housing_sits_at_the_main_site(
    directory: Directory,
) -> None:
    housing = {
        site_id: c.places_total
        for (site_id, service), c in directory.capacity.items()
        if service is ServiceCode.EVICTION_HOUSING and site_id.startswith("OCC-TOULOUSE")
    }
    assert housing == {"OCC-TOULOUSE-31": 6}
    assert all(c.assumed for c in directory.capacity.values())
    assert isinstance(next(iter(directory.capacity.values())), Capacity)


def test_counts_to_confirm_are_listed_before_they_go_stale(directory: Directory) -> None:
    stamped = dataclasses.replace(
        directory,
        capacity={
            key: dataclasses.replace(c, updated_at=NOW - timedelta(days=25))
            for key, c in directory.capacity.items()
        },
    )
    stamped = _with_capacity(
        stamped, "HDF-ARRAS-59", ServiceCode.RESPONSIBILITY_COURSE, updated_at=NOW
    )
    stamped = _with_capacity(
        stamped, "HDF-ARRAS-62", ServiceCode.RESPONSIBILITY_COURSE, updated_at=NOW - timedelta(40)
    )
    due = confirmations_due(stamped, NOW, timedelta(days=30), timedelta(days=7))
    assert len(due) == len(directory.capacity) - 1  # all but the one confirmed today
    assert (due[0].site_id, due[0].stale) == ("HDF-ARRAS-62", True)  # already stale, first
    assert all(not c.stale for c in due[1:])
    assert not confirmations_due(stamped, NOW, timedelta(days=30), timedelta(days=4))[1:]
