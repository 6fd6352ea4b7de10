"""Every way a message can be malformed maps to one reason code, and no message echoes input."""

from __future__ import annotations

import json

import pytest

from aiguillage_common.codec import MAX_DETAILS, InvalidMessage, decode_event, encode_event
from aiguillage_demo.samples import make_referral
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted

ACCEPTED = (ReferralSubmitted,)


def _valid() -> dict:  # type: ignore[type-arg]
    return make_referral(0, last_name="Canaryname").model_dump(mode="json")


def _reason(raw: bytes | None) -> tuple[str, str | None, str]:
    with pytest.raises(InvalidMessage) as caught:
        decode_event(raw, ACCEPTED)
    problem = caught.value.problem
    return str(problem.reason), problem.field_path, problem.message


def _mutated(path: list[str | int], value: object) -> bytes:
    document = _valid()
    target = document
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


def test_a_valid_referral_round_trips() -> None:
    referral = make_referral(3)
    assert decode_event(encode_event(referral), ACCEPTED) == referral


@pytest.mark.parametrize(
    ("raw", "reason", "path"),
    [
        (None, "empty_message", None),
        (b"", "empty_message", None),
        (b"\xff\xfe\x00", "not_utf8", None),
        (b"{nope", "not_json", None),
        (b"[1, 2]", "wrong_type", ""),
        (b"{}", "missing_field", "event_type"),
        (
            b'{"event_type": "referral.exploded", "schema_version": 1}',
            "unknown_event_type",
            "event_type",
        ),
        (b'{"event_type": "referral.submitted"}', "missing_field", "schema_version"),
        (
            b'{"event_type": "referral.submitted", "schema_version": 99}',
            "unknown_schema_version",
            "schema_version",
        ),
        # A string is a type error, not an unsupported version (nor is true, or 2.5).
        (
            b'{"event_type": "referral.submitted", "schema_version": "2"}',
            "wrong_type",
            "schema_version",
        ),
        (
            b'{"event_type": "referral.submitted", "schema_version": true}',
            "wrong_type",
            "schema_version",
        ),
        (
            b'{"event_type": "referral.submitted", "schema_version": 2.5}',
            "wrong_type",
            "schema_version",
        ),
        (b'{"event_type": 7, "schema_version": 2}', "wrong_type", "event_type"),
        (b'{"a": NaN}', "not_json", None),
        (b"[" * 50_000 + b"]" * 50_000, "not_json", None),
        (b'{"a": ' + b"1" * 5000 + b"}", "not_json", None),
    ],
)
def test_envelope_level_problems(raw: bytes | None, reason: str, path: str | None) -> None:
    assert _reason(raw)[:2] == (reason, path)


@pytest.mark.parametrize(
    ("path", "value", "reason", "field_path"),
    [
        (
            ["data", "prescriber", "kind"],
            "astrologer",
            "unknown_enum_value",
            "data.prescriber.kind",
        ),
        (["data", "needed_services"], "addiction_care", "wrong_type", "data.needed_services"),
        (
            ["data", "frame", "decision_date"],
            "2025-02-30",
            "impossible_date",
            "data.frame.decision_date",
        ),
        (["data", "identity"], KeyError, "missing_field", "data.identity"),
        (["data", "surprise"], 1, "invalid_value", "data.surprise"),
        (["subject"], "has spaces in it", "invalid_value", "subject"),
        (
            ["data", "person", "residence", "commune_insee"],
            "7505",
            "invalid_value",
            "data.person.residence.commune_insee",
        ),
    ],
)
def test_payload_problems_name_the_field(
    path: list[str | int], value: object, reason: str, field_path: str
) -> None:
    got_reason, got_path, message = _reason(_mutated(path, value))
    assert (got_reason, got_path) == (reason, field_path)
    assert "Canaryname" not in message


def test_a_wrongly_typed_identity_never_appears_in_the_message() -> None:
    raw = _mutated(["data", "identity", "birth_date"], "Canaryname")
    assert "Canaryname" not in _reason(raw)[2]


# Strict validation: what the published JSON Schema refuses, the server refuses too.
@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["data", "person", "interpreter_needed"], "yes", "wrong_type"),
        (["data", "person", "interpreter_needed"], 1, "wrong_type"),
        (["data", "person", "interpreter_needed"], "on", "wrong_type"),
        (["data", "person", "interpreter_needed"], "true", "wrong_type"),
        (["data", "victim_safety", "anti_approach_bracelet"], 0, "wrong_type"),
        (["data", "frame", "decision_date"], 20260101, "wrong_type"),
        (["data", "frame", "decision_date"], 1_700_000_000, "wrong_type"),
        (["data", "frame", "decision_date"], "86400", "impossible_date"),  # a Unix time
        (["data", "frame", "decision_date"], "2026-11-30T00:00:00", "impossible_date"),
        (["data", "identity", "birth_date"], "19800101", "impossible_date"),
        (["occurred_at"], 1_700_000_000, "wrong_type"),
        (["occurred_at"], "1700000000", "impossible_date"),
        (["occurred_at"], "2026-11-30 09:15Z", "impossible_date"),
        (["occurred_at"], "2026-11-30T09:15:00", "impossible_date"),  # no offset
        (["event_id"], "urn:uuid:5f282605-21af-40cc-a0be-6556f418b35e", "wrong_type"),
        (["event_id"], "5f28260521af40cca0be6556f418b35e", "wrong_type"),
        (["correlation_id"], "{5f282605-21af-40cc-a0be-6556f418b35e}", "wrong_type"),
        (["data", "person", "residence", "commune_insee"], "٥٩٣٥٠", "invalid_value"),
        (["event_id"], KeyError, "missing_field"),
        (["data", "needed_services"], ["responsibility_course", 3], "unknown_enum_value"),
        (["data", "person", "language"], 7, "wrong_type"),
    ],
)
def test_strict_wire_validation(path: list[str | int], value: object, reason: str) -> None:
    got_reason, got_path, _ = _reason(_mutated(path, value))
    assert got_reason == reason
    assert got_path is not None
    assert got_path.startswith(".".join(map(str, path)))


def test_the_same_values_in_their_wire_form_are_accepted() -> None:
    document = _valid()
    document["occurred_at"] = "2026-11-30T09:15:00.123+01:00"
    document["event_id"] = document["event_id"].upper()
    document["data"]["person"]["interpreter_needed"] = True
    event = decode_event(json.dumps(document).encode(), ACCEPTED)
    assert isinstance(event, ReferralSubmitted)
    assert event.data.person.interpreter_needed is True
    assert event.occurred_at.utcoffset() is not None


def test_a_missing_event_id_is_required_on_the_wire_but_made_in_python() -> None:
    raw = _mutated(["event_id"], KeyError)
    assert _reason(raw)[:2] == ("missing_field", "event_id")
    assert make_referral(0).event_id != make_referral(0).event_id  # code building events


def test_every_validation_error_is_reported_with_its_path() -> None:
    document = _valid()
    document["data"]["person"]["interpreter_needed"] = "yes"
    document["data"]["frame"]["decision_date"] = 20260101
    document["data"]["needed_services"] = ["astrology"]
    del document["data"]["identity"]
    with pytest.raises(InvalidMessage) as caught:
        decode_event(json.dumps(document).encode(), ACCEPTED)
    problem = caught.value.problem
    paths = [detail.field_path for detail in problem.details]
    assert sorted(paths) == sorted(
        [
            "data.frame.decision_date",
            "data.needed_services.0",
            "data.person.interpreter_needed",
            "data.identity",
        ]
    )
    assert [str(d.reason) for d in problem.details] == [
        {
            "data.frame.decision_date": "wrong_type",
            "data.needed_services.0": "unknown_enum_value",
            "data.person.interpreter_needed": "wrong_type",
            "data.identity": "missing_field",
        }[path or ""]
        for path in paths
    ]
    first = problem.details[0]
    assert (problem.reason, problem.field_path) == (first.reason, first.field_path)
    assert problem.message.startswith("4 problems: ")
    assert all(detail.message in problem.message for detail in problem.details)


def test_the_reported_errors_are_bounded_and_the_message_says_how_many() -> None:
    document = _valid()
    document["data"]["needed_services"] = [f"astrology-{i}" for i in range(11)]
    for extra in range(20):
        document["data"][f"surprise{extra}"] = 1
    with pytest.raises(InvalidMessage) as caught:
        decode_event(json.dumps(document).encode(), ACCEPTED)
    problem = caught.value.problem
    assert len(problem.details) == MAX_DETAILS
    assert problem.message.startswith(f"31 problems (first {MAX_DETAILS} listed): ")
    assert len(problem.message) <= 500


def test_a_lone_problem_has_one_detail_and_its_own_message() -> None:
    raw = _mutated(["data", "person", "language"], "FR!")
    with pytest.raises(InvalidMessage) as caught:
        decode_event(raw, ACCEPTED)
    problem = caught.value.problem
    assert len(problem.details) == 1
    assert problem.message == problem.details[0].message
    assert problem.all_details() == problem.details
