"""What a prescriber can do besides submitting, on the real broker and database: submit in the
previous schema version, amend, cancel, and have its registry entry rotated or revoked by event."""

from __future__ import annotations

import json
import uuid

from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import SECRETS_ENV, demo_key_ids, demo_secret
from aiguillage_schemas import topics
from aiguillage_schemas.events.prescribers import (
    Jurisdiction,
    PrescriberEntry,
    PrescriberRegistryUpdated,
)
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralAmendedData,
    ReferralCancellationRequested,
    ReferralCancellationRequestedData,
)
from aiguillage_schemas.signing import sign
from referral_intake.adapters.identity_cipher import IdentityCipher, SealedIdentity
from tests.conftest import Isolated, wait_started
from tests.support.services import TEST_MASTER_KEY
from tests.support.waiting import eventually

NEW_KEY = "parquet-tj-lille-2027"
NEW_SECRET = "rotated-test-secret"


async def _start_intake(isolated: Isolated) -> None:
    secrets = {key: demo_secret(key) for key in demo_key_ids().values()}
    secrets[NEW_KEY] = NEW_SECRET
    process = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_JURISDICTION_POLICY="flag",
        **{SECRETS_ENV: json.dumps(secrets)},
    )
    process.start()
    await wait_started(process)


async def test_v1_amend_cancel_and_flagged_jurisdiction(isolated: Isolated) -> None:
    await _start_intake(isolated)
    intake = isolated.topic(topics.INTAKE)
    schema = isolated.schema("referral-intake")

    # A v1 submission: evening_only instead of availability, upgraded on arrival.
    v1 = make_referral(0).model_dump(mode="json")
    v1["schema_version"] = 1
    v1["data"]["person"].pop("availability")
    v1["data"]["person"]["evening_only"] = True
    await isolated.kafka.send_raw(
        intake, json.dumps(v1).encode(), v1["subject"].encode(), signed_by="parquet-tj-lille"
    )
    # Outside Lille's jurisdiction, admitted but flagged under the "flag" policy.
    outside = make_referral(0).model_dump(mode="json")
    outside["data"]["person"]["residence"] = {"commune_insee": "69381"}
    await isolated.kafka.send_raw(
        intake,
        json.dumps(outside).encode(),
        outside["subject"].encode(),
        signed_by="parquet-tj-lille",
    )
    # Amended, then cancelled.
    referral = make_referral(1)
    await isolated.kafka.send_event(intake, referral)
    new_identity = referral.data.identity.model_copy(update={"phone": "0600000000"})
    await isolated.kafka.send_event(
        intake,
        ReferralAmended(
            source="spip-69",
            correlation_id=referral.correlation_id,
            subject=referral.subject,
            data=ReferralAmendedData(prescriber_id="spip-69", identity=new_identity),
        ),
    )
    cancellation = ReferralCancellationRequested(
        source="spip-69",
        correlation_id=referral.correlation_id,
        subject=referral.subject,
        data=ReferralCancellationRequestedData(prescriber_id="spip-69", reason="measure_lifted"),
    )
    await isolated.kafka.send_event(intake, cancellation)
    await isolated.kafka.send_event(intake, cancellation)  # redelivered: one effect

    accepted = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
        lambda records: len(records) >= 4,
        timeout_s=60,
        what="three referrals and one cancellation on referrals.accepted",
    )
    by_kind = sorted((r.json()["event_type"], r.key) for r in accepted)
    assert by_kind == sorted(
        [
            ("referral.accepted", v1["subject"]),
            ("referral.accepted", outside["subject"]),
            ("referral.accepted", referral.subject),
            ("referral.cancelled", referral.subject),
        ]
    )
    cancelled = next(r for r in accepted if r.json()["event_type"] == "referral.cancelled")
    assert cancelled.json()["data"] == {
        "prescriber_id": "spip-69",
        "prescriber_kind": "spip",
        "reason": "measure_lifted",
    }
    rows = {
        r["referral_id"]: r
        for r in await isolated.db.fetch(
            f"SELECT r.referral_id, r.status, r.closed_at, r.outside_jurisdiction, i.ciphertext,"
            f" i.wrapped_key, i.master_key_id FROM {schema}.referrals r"
            f" JOIN {schema}.identities i USING (referral_id)"
        )
    }
    assert rows[outside["subject"]]["outside_jurisdiction"] is True
    assert rows[v1["subject"]]["outside_jurisdiction"] is False
    closed = rows[referral.subject]
    assert (closed["status"], closed["closed_at"] is not None) == ("cancelled", True)
    cipher = IdentityCipher(TEST_MASTER_KEY, "k1")
    sealed = SealedIdentity(closed["ciphertext"], closed["wrapped_key"], closed["master_key_id"])
    assert cipher.open(referral.subject, sealed).phone == "0600000000"
    assert await isolated.kafka.read_all(isolated.topic(topics.REJECTED)) == []


async def test_registry_events_rotate_a_key_and_revoke_a_prescriber(isolated: Isolated) -> None:
    await _start_intake(isolated)
    registry_topic = isolated.topic(topics.PRESCRIBERS_REGISTRY)
    lille = PrescriberEntry(
        prescriber_id="parquet-tj-lille",
        kind="parquet",
        name="Parquet de Lille",
        jurisdiction=Jurisdiction(departements=["59"]),
        signing_key_id=NEW_KEY,
    )
    spip = PrescriberEntry(
        prescriber_id="spip-69",
        kind="spip",
        name="SPIP du Rhône",
        jurisdiction=Jurisdiction(departements=["69"]),
        signing_key_id="spip-69-2026",
        active=False,
    )
    for entry in (lille, spip):
        await isolated.kafka.send_event(
            registry_topic,
            PrescriberRegistryUpdated(
                source="registry-admin",
                correlation_id=uuid.uuid4(),
                subject=entry.prescriber_id,
                data=entry,
            ),
        )
    schema = isolated.schema("referral-intake")
    await eventually(
        lambda: isolated.count(f"SELECT count(*) FROM {schema}.prescribers"),
        lambda n: n == 2,
        timeout_s=60,
        what="both registry updates stored",
    )

    intake = isolated.topic(topics.INTAKE)
    old_key = make_referral(0)  # send_event signs with the demo (now rotated-out) key
    await isolated.kafka.send_event(intake, old_key)
    revoked = make_referral(1)
    await isolated.kafka.send_event(intake, revoked)
    new_key = make_referral(0)
    value = new_key.model_dump_json().encode()
    headers = [(k, v.encode()) for k, v in sign(value, NEW_KEY, NEW_SECRET.encode()).items()]
    await isolated.kafka.send_raw(intake, value, new_key.subject.encode(), headers)

    rejected = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.REJECTED)),
        lambda records: len(records) >= 2,
        timeout_s=60,
        what="the old key and the revoked prescriber refused",
    )
    assert sorted((r.key, r.json()["data"]["reason"]) for r in rejected) == sorted(
        [(old_key.subject, "unknown_prescriber"), (revoked.subject, "unknown_prescriber")]
    )
    accepted = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
        lambda records: len(records) >= 1,
        timeout_s=60,
        what="the referral signed with the rotated key",
    )
    assert [r.key for r in accepted] == [new_key.subject]
