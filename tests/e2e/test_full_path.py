"""A referral submitted on the intake topic is routed and both parties are notified."""

from __future__ import annotations

from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated
from tests.support.waiting import eventually


async def test_referral_is_routed_and_centre_and_prescriber_are_notified(
    isolated: Isolated,
) -> None:
    await isolated.start_all()
    referral = make_referral(1)  # Lyon, psychological follow-up and addiction care
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)

    outbound = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
        lambda records: len(records) == 3,
        timeout_s=60,
        what="three notifications on notifications.outbound",
    )
    told = {r.json()["data"]["topic"]: r.json()["data"] for r in outbound}
    assert set(told) == {"referral_received", "referral_offered", "referral_routed"}
    assert told["referral_offered"]["recipient_kind"] == "centre"
    assert told["referral_offered"]["recipient_id"] == "ARA-LYON"
    assert told["referral_routed"]["recipient_id"] == "spip-69"
    assert told["referral_received"]["recipient_id"] == "spip-69"
    assert all(r.key == referral.subject for r in outbound)
    assert {r.headers["correlation_id"] for r in outbound} == {str(referral.correlation_id)}

    routed = await isolated.kafka.read_all(isolated.topic(topics.ROUTED))
    assert [r.json()["event_type"] for r in routed] == ["referral.routed"]
    assert routed[0].json()["data"]["site"]["site_departement"] == "69"
