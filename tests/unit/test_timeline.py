"""The timeline's pure parts: merge order, causes, what a source may show, and consumer lag."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aiguillage_operations.adapters.timeline.centres import CentreRecord, centre_entry
from aiguillage_operations.adapters.timeline.intake import intake_part
from aiguillage_operations.adapters.timeline.routing import routing_event
from aiguillage_operations.lag import lag_rows, service_of, totals
from aiguillage_operations.timeline import STAGES, Entry, build, link_causes, merge

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def entry(ms: int, service: str = "routing", key: str = "", seq: int = 0, **fields: Any) -> Entry:
    return Entry(
        at=T0 + timedelta(milliseconds=ms),
        service=service,
        kind=fields.pop("kind", "step"),
        what=fields.pop("what", f"step {key}"),
        record=fields.pop("record", service),
        key=key or f"{service}-{ms}-{seq}",
        seq=seq,
        **fields,
    )


sources = st.lists(
    st.lists(
        st.builds(
            entry,
            ms=st.integers(0, 50),
            service=st.sampled_from(sorted(STAGES)),
            seq=st.integers(0, 5),
        ),
        max_size=8,
    ),
    max_size=5,
)


@given(sources)
def test_merge_orders_by_time_then_upstream_service_and_keeps_each_entry_once(
    found: list[list[Entry]],
) -> None:
    merged = merge(found)
    keys = [(e.at, STAGES[e.service], e.seq) for e in merged]
    assert keys == sorted(keys)
    assert {(e.record, e.key) for e in merged} == {(e.record, e.key) for s in found for e in s}
    assert len(merged) == len({(e.record, e.key) for e in merged})


@given(sources, st.randoms())
def test_merge_does_not_depend_on_the_order_sources_are_read(
    found: list[list[Entry]], rng: Any
) -> None:
    shuffled = list(found)
    rng.shuffle(shuffled)
    # Entries with the same record and key are the same record read twice.
    assert [(e.record, e.key) for e in merge(found)] == [(e.record, e.key) for e in merge(shuffled)]


def test_at_the_same_instant_upstream_comes_first_and_a_source_keeps_its_order() -> None:
    same = 10
    merged = merge(
        [
            [entry(same, "notifications", "n")],
            [entry(same, "routing", "r2", seq=2), entry(same, "routing", "r1", seq=1)],
            [entry(same, "intake", "i")],
        ]
    )
    assert [e.key for e in merged] == ["i", "r1", "r2", "n"]


def test_a_reroute_caused_by_a_decline_says_why() -> None:
    decline = entry(1, "centre", "d", kind="centre.declined", why=("no_capacity",), event_id="e1")
    reroute = entry(2, "routing", "r", kind="decision.routed", cause="e1")
    unrelated = entry(3, "routing", "u", kind="decision.routed", cause="e-unknown")
    linked = link_causes([decline, reroute, unrelated])
    assert linked[1].why == ("centre.declined", "no_capacity")
    assert linked[2].why == ()
    assert linked[0] == decline


def test_a_dead_letter_is_linked_to_its_record_by_coordinates() -> None:
    record = entry(1, "centre", "c", kind="centre.accepted", event_id="e1", aka=("t:0:5",))
    dead = entry(2, "routing", "x", kind="message.dead_lettered", cause="t:0:5")
    assert link_causes([record, dead])[1].why == ("centre.accepted",)


def test_build_says_when_nothing_is_known() -> None:
    assert build("ref-1", []).empty
    assert not build("ref-1", [], now=[("routing", "offered")]).empty


# What sources take from records: codes and ids, never identity nor free text.


def centre_record(data: dict[str, Any], event_type: str = "centre.offer_answered") -> Any:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": T0.isoformat(),
        "subject": "ref-1",
        "data": data,
    }
    return CentreRecord(
        "centres.responses:2:7",
        7,
        1_700_000_000_000,
        json.dumps(event).encode(),
        {"x-aiguillage-key-id": "portal-2026"},
    ), event


def test_a_centre_answer_names_the_portal_user_who_acted_and_never_its_free_text() -> None:
    record, event = centre_record(
        {
            "centre_id": "HDF-ARRAS",
            "site_id": "HDF-ARRAS-59",
            "answer": "declined",
            "decline_reason": "other",
            "decline_text": "Jean Dupont est déjà suivi ici",
            "actor": {"kind": "centre_user", "id": "u-0042"},
        }
    )
    handled_at = T0 + timedelta(seconds=1)
    found = centre_entry(record, event, event["event_id"], {event["event_id"]: handled_at}, {}, T0)
    assert found.actors == ("centre:HDF-ARRAS", "site:HDF-ARRAS-59", "centre_user:u-0042")
    assert found.why == ("other",)
    assert found.at == handled_at  # when routing took it
    assert found.kind == "centre.declined"
    assert "Dupont" not in json.dumps(found.to_json())
    assert dict(found.details) == {"sender_key": "portal-2026"}


def test_a_centre_answer_without_actor_names_the_centre_and_one_refused_says_why() -> None:
    record, event = centre_record(
        {"centre_id": "HDF-ARRAS", "site_id": "ARA-LYON-69", "answer": "accepted"}
    )
    found = centre_entry(
        record, event, event["event_id"], {}, {"centres.responses:2:7": "not_this_centre"}, T0
    )
    assert found.actors == ("centre:HDF-ARRAS", "site:ARA-LYON-69")
    assert "REFUSED" in found.what
    assert found.why == ("not_this_centre",)


def test_a_path_report_carries_its_codes() -> None:
    payload = {
        "event_type": "referral.path_reported",
        "data": {
            "site": {"site_id": "ARA-LYON-42", "centre_id": "ARA-LYON"},
            "report": "path_terminated",
            "termination_reason": "excluded",
            "justified": False,
        },
    }
    found = routing_event(
        {
            "id": 3,
            "event_id": uuid.uuid4(),
            "payload": json.dumps(payload).encode(),
            "created_at": T0,
        }  # type: ignore[arg-type]
    )
    assert found is not None
    assert found.why == ("path_terminated", "excluded", "unjustified")
    assert found.actors == ("centre:ARA-LYON", "site:ARA-LYON-42")


class FakeIntake:
    """intake's tables for one referral, answering the timeline's queries by table name."""

    def __init__(self, accepted: dict[str, Any]) -> None:
        self.referral = {
            "prescriber_id": "parquet-tj-lille",
            "accepted": json.dumps(accepted),
            "received_at": T0,
            "status": "cancelled",
            "closed_at": T0 + timedelta(days=1),
            "outside_jurisdiction": False,
            "purged_at": None,
        }
        cancelled = {
            "event_type": "referral.cancelled",
            "data": {"prescriber_id": "parquet-tj-lille", "reason": "measure_lifted"},
        }
        self.outbox = [
            {
                "id": 1,
                "event_id": uuid.uuid4(),
                "payload": b'{"event_type": "referral.accepted"}',
                "created_at": T0,
            },
            {
                "id": 2,
                "event_id": uuid.uuid4(),
                "payload": json.dumps(cancelled).encode(),
                "created_at": T0 + timedelta(days=1),
            },
        ]
        self.releases = [
            {
                "id": 1,
                "centre_id": "HDF-ARRAS",
                "outcome": "not_holder",
                "requested_at": T0 + timedelta(hours=1),
            }
        ]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        if "FROM referrals" in sql:
            return self.referral
        return None  # no identity holder

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self.outbox if "FROM outbox" in sql else self.releases


async def test_intake_shows_codes_of_the_referral_never_its_places_or_identity() -> None:
    accepted = {
        "prescriber_id": "parquet-tj-lille",
        "prescriber_kind": "parquet",
        "judicial_frame": "alternative_orientation",
        "residence_commune_insee": "59350",
        "residence_departement": "59",
        "needed_services": ["responsibility_course", "addiction_care"],
        "excluded_communes": ["62041"],  # holds the victim's commune, unlabelled
        "urgency": "standard",
        "language": "fr",
        "interpreter_needed": False,
    }
    part = await intake_part(FakeIntake(accepted), "ref-1")  # type: ignore[arg-type]
    kinds = [e.kind for e in part.entries]
    assert kinds == ["referral.admitted", "referral.cancelled", "identity.refused"]
    admitted, cancelled, refused = part.entries
    assert admitted.actors == ("prescriber:parquet-tj-lille",)
    assert "judicial_frame=alternative_orientation" in admitted.what
    assert "needed_services=responsibility_course,addiction_care" in admitted.what
    assert cancelled.why == ("measure_lifted",)
    assert refused.why == ("not_holder",)
    assert refused.actors == ("centre:HDF-ARRAS",)
    shown = json.dumps([e.to_json() for e in part.entries]) + json.dumps(part.now)
    for hidden in ("62041", "59350", "fr"):
        assert f'"{hidden}"' not in shown
        assert f"={hidden}" not in shown


# Lag


def test_lag_counts_what_each_services_groups_have_not_committed() -> None:
    bases = {"referral-intake": "t1.referral-intake", "routing": "t1.routing"}
    committed = {
        "t1.referral-intake": {("t1.referrals.intake", 0): 5, ("t1.referrals.intake", 1): -1},
        "t1.referral-intake.routed": {("t1.referrals.routed", 0): 3},
        "t1.routing": {("t1.referrals.accepted", 0): 9},
        "someone-else": {("t1.referrals.accepted", 0): 0},
    }
    ends = {
        ("t1.referrals.intake", 0): 8,
        ("t1.referrals.intake", 1): 2,
        ("t1.referrals.routed", 0): 3,
        ("t1.referrals.accepted", 0): 9,
    }
    rows = lag_rows(committed, ends, bases)
    assert [(r.group, r.partition, r.committed, r.lag) for r in rows] == [
        ("t1.referral-intake", 0, 5, 3),
        ("t1.referral-intake", 1, None, 2),
        ("t1.referral-intake.routed", 0, 3, 0),
        ("t1.routing", 0, 9, 0),
    ]
    assert totals(rows) == {
        ("referral-intake", "t1.referral-intake"): 5,
        ("referral-intake", "t1.referral-intake.routed"): 0,
        ("routing", "t1.routing"): 0,
    }
    assert service_of("t1.routingX", bases) is None
