"""Every way a message can be malformed maps to one reason code, and no message echoes input."""

from __future__ import annotations

import json

import pytest

from aiguillage_common.codec import InvalidMessage, decode_event, encode_event
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
