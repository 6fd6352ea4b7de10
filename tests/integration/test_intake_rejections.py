"""Every rejection reason, on the real broker: one intake process, one record (or short sequence)
per reason, each answered on referrals.rejected with its code, field path, hash and sender.

This is the table of docs/intake.md, executed. Each case uses its own referral id (= key), so the
records of one case stay ordered on one partition and its rejection is found by subject.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import sign_as
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralAmendedData,
    ReferralCancellationRequested,
    ReferralCancellationRequestedData,
)
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually

LILLE = "parquet-tj-lille"  # demo case 0: a parquet whose jurisdiction is the Nord (59)
MAX_BYTES = 4096


@dataclass
class Record:
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    reason: str
    field_path: str | None
    named: str | None  # the prescriber the rejection names (None: sender not authenticated)
    build: Callable[[str], list[Record]]
    # Field paths of every problem listed in data.errors, when there are several.
    errors: tuple[str, ...] = ()


def _doc(referral_id: str, case: int = 0) -> dict[str, Any]:
    return make_referral(case, referral_id=referral_id).model_dump(mode="json")


def _signed(value: bytes | None, key: str | None, sender: str = LILLE, **sign: Any) -> Record:
    headers = [(k, v.encode()) for k, v in sign_as(sender, value or b"", **sign).items()]
    return Record(value, key.encode() if key else None, headers)


def _mutated(path: str, new: Any) -> Callable[[str], list[Record]]:
    def build(rid: str) -> list[Record]:
        document = _doc(rid)
        *parents, leaf = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        if new is KeyError:
            del target[leaf]
        else:
            target[leaf] = new
        return [_signed(json.dumps(document).encode(), rid)]

    return build


def _body(rid: str, case: int = 0) -> bytes:
    return json.dumps(_doc(rid, case)).encode()


def _cancel(rid: str, sender: str = LILLE) -> bytes:
    return (
        ReferralCancellationRequested(
            source=sender,
            correlation_id=uuid.uuid4(),
            subject=rid,
            data=ReferralCancellationRequestedData(prescriber_id=sender, reason="measure_lifted"),
        )
        .model_dump_json()
        .encode()
    )


def _amend(rid: str) -> bytes:
    identity = make_referral(0).data.identity
    return (
        ReferralAmended(
            source=LILLE,
            correlation_id=uuid.uuid4(),
            subject=rid,
            data=ReferralAmendedData(prescriber_id=LILLE, identity=identity),
        )
        .model_dump_json()
        .encode()
    )


def _conflict(rid: str) -> list[Record]:
    first = _doc(rid)
    second = _doc(rid)
    second["data"]["prescriber"]["case_reference"] = "PR-OTHER1"
    return [_signed(json.dumps(d).encode(), rid) for d in (first, second)]


def _bad_signature(rid: str) -> list[Record]:
    record = _signed(_body(rid), rid)
    record.value = (record.value or b"").replace(b"parquet", b"parquet ", 1)  # altered after
    return [record]


def _unknown_prescriber(rid: str) -> list[Record]:
    record = _signed(_body(rid), rid)
    record.headers = [
        (k, b"nobody-2026" if k == "x-aiguillage-key-id" else v) for k, v in record.headers
    ]
    return [record]


def _with_key_id(record: Record, key_id: str) -> Record:
    record.headers = [
        (k, key_id.encode() if k == "x-aiguillage-key-id" else v) for k, v in record.headers
    ]
    return record


def _broken_header(rid: str) -> list[Record]:
    record = _signed(_body(rid), rid)
    record.headers.append(("x-trace", b"\xff\xfe"))
    return [record]


def _several_problems(rid: str) -> list[Record]:
    document = _doc(rid)
    document["data"]["person"]["interpreter_needed"] = "yes"
    document["data"]["frame"]["decision_date"] = 20261130
    document["data"]["needed_services"] = ["astrology"]
    return [_signed(json.dumps(document).encode(), rid)]


def _outside(rid: str) -> list[Record]:
    document = _doc(rid)
    document["data"]["person"]["residence"] = {"commune_insee": "69381"}  # Lyon, not the Nord
    return [_signed(json.dumps(document).encode(), rid)]


def _other_prescribers_key(rid: str) -> list[Record]:
    return [_signed(_body(rid), rid, sender="spip-69")]  # the body says parquet-tj-lille


TODAY = date.today()
CASES: tuple[Case, ...] = (
    Case("not_utf8", None, LILLE, lambda rid: [_signed(b'{"a": "\xff\xfe"}', rid)]),
    Case("not_json", None, LILLE, lambda rid: [_signed(b"<referral/>", rid)]),
    Case("empty_message", None, None, lambda rid: [Record(b"", rid.encode())]),
    Case("empty_message", None, None, lambda rid: [Record(None, rid.encode())]),  # tombstone
    Case("missing_key", None, LILLE, lambda rid: [_signed(_body(rid), None)]),
    Case("key_mismatch", "subject", LILLE, lambda rid: [_signed(_body(rid + "-x"), rid)]),
    # Refused before the signature is checked, yet the registered key id names its owner.
    Case("message_too_large", None, LILLE, lambda rid: [_signed(b"{" * (MAX_BYTES + 1), rid)]),
    Case(
        "message_too_large",
        None,
        None,
        lambda rid: [_with_key_id(_signed(b"{" * (MAX_BYTES + 1), rid), "nobody-2026")],
    ),
    Case(
        "bad_header",
        None,
        None,
        lambda rid: [Record(_body(rid), rid.encode(), [("x-trace", b"\xff\xfe")])],
    ),
    Case("bad_header", None, LILLE, _broken_header),
    Case("empty_message", None, LILLE, lambda rid: [_signed(None, rid)]),  # signed tombstone
    Case("unknown_event_type", "event_type", LILLE, _mutated("event_type", "referral.exploded")),
    Case("unknown_schema_version", "schema_version", LILLE, _mutated("schema_version", 7)),
    Case("wrong_type", "schema_version", LILLE, _mutated("schema_version", "2")),
    # Strict: the schema's boolean, date and required event_id are the server's too.
    Case(
        "wrong_type",
        "data.person.interpreter_needed",
        LILLE,
        _mutated("data.person.interpreter_needed", "yes"),
    ),
    Case(
        "wrong_type",
        "data.frame.decision_date",
        LILLE,
        _mutated("data.frame.decision_date", 20261130),
    ),
    Case("missing_field", "event_id", LILLE, _mutated("event_id", KeyError)),
    Case(
        "wrong_type",
        "data.frame.decision_date",
        LILLE,
        _several_problems,
        errors=(
            "data.frame.decision_date",
            "data.needed_services.0",
            "data.person.interpreter_needed",
        ),
    ),
    Case("missing_field", "data.frame", LILLE, _mutated("data.frame", KeyError)),
    Case("wrong_type", "data.needed_services", LILLE, _mutated("data.needed_services", "course")),
    Case(
        "unknown_enum_value",
        "data.needed_services.0",
        LILLE,
        _mutated("data.needed_services", ["astrology"]),
    ),
    Case("invalid_value", "data.person.language", LILLE, _mutated("data.person.language", "FR!")),
    Case(
        "impossible_date",
        "data.frame.decision_date",
        LILLE,
        _mutated("data.frame.decision_date", "2026-02-30"),
    ),
    Case(
        "future_date",
        "data.frame.decision_date",
        LILLE,
        _mutated("data.frame.decision_date", (TODAY + timedelta(days=10)).isoformat()),
    ),
    Case(
        "unknown_commune",
        "data.person.residence.commune_insee",
        LILLE,
        _mutated("data.person.residence", {"commune_insee": "99999"}),
    ),
    Case(
        "unknown_postal_code",
        "data.person.residence.postal_code",
        LILLE,
        _mutated("data.person.residence", {"postal_code": "00001"}),
    ),
    Case(
        "ambiguous_postal_code",
        "data.person.residence.postal_code",
        LILLE,
        _mutated("data.person.residence", {"postal_code": "01200"}),
    ),
    Case("conflicting_duplicate", "subject", LILLE, _conflict),
    Case(
        "unknown_prescriber",
        "headers.x-aiguillage-key-id",
        None,
        _unknown_prescriber,
    ),
    Case(
        "bad_signature",
        "headers.x-aiguillage-key-id",
        None,
        lambda rid: [Record(_body(rid), rid.encode())],  # not signed at all
    ),
    Case("bad_signature", "headers.x-aiguillage-signature", LILLE, _bad_signature),
    Case("bad_signature", "data.prescriber.prescriber_id", "spip-69", _other_prescribers_key),
    Case(
        "replayed_message",
        "headers.x-aiguillage-timestamp",
        LILLE,
        lambda rid: [_signed(_body(rid), rid, timestamp=int(time.time()) - 3600)],
    ),
    Case("outside_jurisdiction", "data.person.residence", LILLE, _outside),
    Case("unknown_referral", "subject", LILLE, lambda rid: [_signed(_cancel(rid), rid)]),
    Case(
        "unknown_referral",
        "subject",
        "spip-69",
        lambda rid: [_signed(_body(rid), rid), _signed(_cancel(rid, "spip-69"), rid, "spip-69")],
    ),
    Case(
        "referral_closed",
        "subject",
        LILLE,
        lambda rid: [
            _signed(_body(rid), rid),
            _signed(_cancel(rid), rid),
            _signed(_amend(rid), rid),
        ],
    ),
)


async def test_every_reason_is_answered_on_referrals_rejected_and_the_next_referral_flows(
    isolated: Isolated,
) -> None:
    intake_service = isolated.service(
        "referral-intake", AIGUILLAGE_INTAKE_MAX_MESSAGE_BYTES=str(MAX_BYTES)
    )
    intake_service.start()
    await wait_started(intake_service)
    intake = isolated.topic(topics.INTAKE)
    sent: dict[str, tuple[Case, list[Record]]] = {}
    for index, case in enumerate(CASES):
        rid = f"rej-{index:02d}-{case.reason.replace('_', '-')}"
        records = case.build(rid)
        sent[rid] = (case, records)
        for record in records:
            await isolated.kafka.send_raw(intake, record.value, record.key, record.headers)
    last = make_referral(1)  # a valid referral after all of them: nothing stalled
    await isolated.kafka.send_event(intake, last)

    rejected = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.REJECTED)),
        lambda records: len(records) >= len(CASES),
        timeout_s=60,
        what="one rejection per case",
    )
    by_subject = {r.json()["subject"]: r.json() for r in rejected}
    assert len(rejected) == len(CASES), sorted(by_subject)
    missing_key = [r.json() for r in rejected if r.json()["data"]["reason"] == "missing_key"]
    assert len(missing_key) == 1
    assert missing_key[0]["subject"] == "unknown"

    for rid, (case, records) in sent.items():
        body = missing_key[0] if case.reason == "missing_key" else by_subject.get(rid)
        assert body is not None, f"no rejection for {rid}"
        data = body["data"]
        assert (data["reason"], data["field_path"], data["prescriber_id"]) == (
            case.reason,
            case.field_path,
            case.named,
        ), rid
        assert data["original_sha256"] == hashlib.sha256(records[-1].value or b"").hexdigest()
        assert data["original_topic"] == intake
        assert data["message"]
        # Every problem is listed; the first is the rejection's own reason and field path.
        errors = data["errors"]
        assert (errors[0]["reason"], errors[0]["field_path"]) == (case.reason, case.field_path)
        if case.errors:
            assert [e["field_path"] for e in errors] == list(case.errors), rid
            assert data["message"].startswith(f"{len(case.errors)} problems: "), rid
        else:
            assert len(errors) == 1, rid

    accepted = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
        lambda records: any(r.key == last.subject for r in records),
        timeout_s=60,
        what="the last valid referral accepted",
    )
    # Accepted: the last referral, and the first submissions of the conflict, the cross-prescriber
    # cancellation and the closed cases; plus the one cancellation forwarded to routing.
    kinds = sorted(r.json()["event_type"] for r in accepted)
    assert kinds == ["referral.accepted"] * 4 + ["referral.cancelled"]
    assert intake_service.alive()
