"""Bad input on the intake topic is answered on referrals.rejected and never stalls."""

from __future__ import annotations

from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated
from tests.support.waiting import eventually


async def test_not_json_and_wrong_shape_are_rejected_and_the_next_referral_flows(
    isolated: Isolated,
) -> None:
    await isolated.start_all("referral-intake")
    intake = isolated.topic(topics.INTAKE)
    # Same key, so all three land on one partition, in this order.
    key = b"ref-poison-order-1"
    sender = "parquet-tj-lille"  # authenticated, so its rejections name it
    await isolated.kafka.send_raw(intake, b"{not json", key=key, signed_by=sender)
    await isolated.kafka.send_raw(
        intake,
        b'{"event_type": "referral.submitted", "schema_version": 1}',
        key=key,
        signed_by=sender,
    )
    valid = make_referral(0, referral_id=key.decode())
    await isolated.kafka.send_event(intake, valid)

    accepted = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
        lambda records: len(records) == 1,
        what="the valid referral on referrals.accepted",
    )
    assert accepted[0].key == valid.subject
    rejected = await isolated.kafka.read_all(isolated.topic(topics.REJECTED))
    reasons = sorted(record.json()["data"]["reason"] for record in rejected)
    assert reasons == ["missing_field", "not_json"]
    missing = next(
        r.json()["data"] for r in rejected if r.json()["data"]["reason"] == "missing_field"
    )
    # Every missing field is listed, first of all the event_id consumers deduplicate on.
    assert missing["field_path"] == "event_id"
    assert [e["field_path"] for e in missing["errors"]] == [
        "event_id",
        "source",
        "correlation_id",
        "subject",
        "data",
    ]
    assert missing["original_topic"] == intake
    assert len(missing["original_sha256"]) == 64
    assert {r.json()["data"]["prescriber_id"] for r in rejected} == {sender}


async def test_rejections_do_not_echo_the_input(isolated: Isolated) -> None:
    await isolated.start_all("referral-intake")
    intake = isolated.topic(topics.INTAKE)
    referral = make_referral(1, last_name="Zorglubinski").model_dump(mode="json")
    referral["data"]["identity"]["birth_date"] = "not-a-date"
    import json

    await isolated.kafka.send_raw(
        intake,
        json.dumps(referral).encode(),
        key=referral["subject"].encode(),
        signed_by=referral["data"]["prescriber"]["prescriber_id"],
    )
    rejected = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.REJECTED)),
        lambda records: len(records) == 1,
        what="the rejection",
    )
    data = rejected[0].json()["data"]
    assert data["reason"] == "impossible_date"
    assert data["field_path"] == "data.identity.birth_date"
    assert b"Zorglubinski" not in rejected[0].value
    assert "Zorglubinski" not in isolated.processes[0].logs()
