"""What prescribers' integrators get: examples that validate, signing they can reproduce, and a v1
that still means the same thing once upgraded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from aiguillage_common.codec import decode_event, encode_event
from aiguillage_schemas.catalog import ALL_EVENTS
from aiguillage_schemas.events.referral_submitted import ReferralSubmittedV1, upgrade_v1
from aiguillage_schemas.examples import examples
from aiguillage_schemas.generate import ROOT
from aiguillage_schemas.signing import sign, signature_matches

VECTOR = "96810b237a3eaeb342e8dafd4989c142fc8c350d4031607362002da373344284"
BY_NAME = {event.schema_name(): event for event in ALL_EVENTS}


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_published_example_is_valid_for_its_model_and_its_schema(name: str) -> None:
    document = json.loads((ROOT / "examples" / f"{name}.example.json").read_text("utf-8"))
    schema = json.loads((ROOT / "json" / f"{name}.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)
    assert decode_event(json.dumps(document).encode(), [BY_NAME[name]]) == examples()[name]


def test_v1_is_upgraded_with_the_same_envelope_and_meaning() -> None:
    v1 = examples()["referral.submitted.v1"]
    assert isinstance(v1, ReferralSubmittedV1)
    v2 = upgrade_v1(v1)
    assert (v2.schema_version, v2.event_id, v2.subject) == (2, v1.event_id, v1.subject)
    assert v2.data.person.availability == ["evening"]  # evening_only=True
    not_only = v1.model_copy(
        update={
            "data": v1.data.model_copy(
                update={"person": v1.data.person.model_copy(update={"evening_only": False})}
            )
        }
    )
    assert upgrade_v1(not_only).data.person.availability == ["daytime", "evening"]
    assert v2.data.identity == v1.data.identity


def test_the_reference_signature_matches_a_known_vector_and_nothing_else() -> None:
    value = b'{"hello": "world"}'
    headers = sign(value, "demo-key", b"secret", timestamp=1_700_000_000)
    # Reproducible with: printf '1700000000.{"hello": "world"}' | openssl dgst -sha256 -hmac secret
    assert headers == {
        "x-aiguillage-key-id": "demo-key",
        "x-aiguillage-timestamp": "1700000000",
        "x-aiguillage-signature": VECTOR,
    }
    assert signature_matches(b"secret", headers, value)
    assert not signature_matches(b"other", headers, value)
    assert not signature_matches(b"secret", headers, value + b" ")
    assert not signature_matches(b"secret", {**headers, "x-aiguillage-timestamp": "1"}, value)
    assert not signature_matches(b"secret", {**headers, "x-aiguillage-timestamp": "x"}, value)


NODE = shutil.which("node")
SCHEMAS = ROOT


# Node is optional on a developer's machine; in CI its absence must fail the run, not hide it.
@pytest.mark.skipif(
    NODE is None and not os.environ.get("CI"), reason="node is not installed (CI has node 20)"
)
def test_ajv_accepts_the_examples_and_refuses_a_bad_one(tmp_path: Path) -> None:
    assert NODE is not None, "node is required in CI to validate the published examples"
    if not (SCHEMAS / "node_modules" / "ajv").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SCHEMAS, check=True)
    good = subprocess.run(
        [str(NODE), "validate-examples.mjs"], cwd=SCHEMAS, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("ok ") == len(examples())

    bad = json.loads((SCHEMAS / "examples" / "referral.submitted.v2.example.json").read_text())
    bad["data"]["person"]["residence"]["commune_insee"] = "Lille"
    (tmp_path / "referral.submitted.v2.example.json").write_text(json.dumps(bad))
    refused = subprocess.run(
        [str(NODE), "validate-examples.mjs", str(tmp_path)],
        cwd=SCHEMAS,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "FAIL referral.submitted.v2.example.json" in refused.stdout


def test_encoded_examples_are_what_the_files_hold() -> None:
    for name, event in examples().items():
        on_disk = json.loads((ROOT / "examples" / f"{name}.example.json").read_text("utf-8"))
        assert json.loads(encode_event(event)) == on_disk


def _asyncapi(service: str) -> dict:  # type: ignore[type-arg]
    return json.loads((ROOT / "asyncapi" / f"{service}.json").read_text("utf-8"))


def _messages_by_topic(document: dict) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    found: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    messages = document["components"]["messages"]
    for channel in document["channels"].values():
        for reference in channel["messages"].values():
            name = reference["$ref"].rsplit("/", 1)[-1]
            found.setdefault(channel["address"], []).append(messages[name])
    return found


@pytest.mark.parametrize("service", ["referral-intake", "routing", "notifications"])
def test_every_asyncapi_message_documents_its_kafka_key_and_headers(service: str) -> None:
    for topic, messages in _messages_by_topic(_asyncapi(service)).items():
        for message in messages:
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string", topic
            assert key["description"], topic
            assert message["headers"]["type"] == "object", topic


def test_intake_documents_the_signing_headers_and_the_operators_replay_headers() -> None:
    (message,) = _messages_by_topic(_asyncapi("referral-intake"))["referrals.intake"]
    key = message["bindings"]["kafka"]["key"]
    assert "referral id" in key["description"]
    assert re.fullmatch(key["pattern"], "tjlille-2026-000123")
    headers = message["headers"]
    assert headers["required"] == [
        "x-aiguillage-key-id",
        "x-aiguillage-timestamp",
        "x-aiguillage-signature",
    ]
    properties = headers["properties"]
    assert re.fullmatch(properties["x-aiguillage-signature"]["pattern"], VECTOR)
    for replay in (
        "x-aiguillage-replay-of",
        "x-aiguillage-replay-timestamp",
        "x-aiguillage-replay-signature",
    ):
        assert properties[replay]["description"].startswith("Operators only"), replay
    # What a signed demo record carries is valid for the documented headers.
    value = encode_event(examples()["referral.submitted.v2"])
    signed = sign(value, "parquet-tj-lille-2026", b"secret", timestamp=1_700_000_000)
    jsonschema.Draft202012Validator(headers).validate(signed)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(headers).validate({"x-aiguillage-key-id": "k"})


def test_published_events_document_the_envelope_headers_the_services_set() -> None:
    from aiguillage_common.kafka import event_headers

    (accepted,) = _messages_by_topic(_asyncapi("referral-intake"))["referrals.accepted"]
    event = examples()["referral.submitted.v2"]
    jsonschema.Draft202012Validator(
        accepted["headers"], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(event_headers(event))
    assert set(accepted["headers"]["required"]) == set(event_headers(event))
