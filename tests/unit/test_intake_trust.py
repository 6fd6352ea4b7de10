"""Intake's pure trust rules: who signed, is it fresh, is it theirs to send, and requests that
only the submitting prescriber may make."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_demo.samples import make_referral
from aiguillage_schemas.events.prescribers import Jurisdiction, PrescriberEntry
from aiguillage_schemas.events.referral_lifecycle import ReferralCancelled
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralAmendedData,
    ReferralCancellationRequested,
    ReferralCancellationRequestedData,
)
from aiguillage_schemas.events.referral_submitted import Identity
from aiguillage_schemas.signing import sign
from referral_intake.adapters.registry_file import load_registry_file
from referral_intake.domain.authentication import authenticate, signing_key_id
from referral_intake.domain.registry import effective_entry, outside_jurisdiction
from referral_intake.use_cases.referral_requests import (
    StoredReferral,
    amend_referral,
    cancel_referral,
)
from referral_intake.use_cases.submit_referral import Outcome, Topics
from tests.unit.fakes import FakeStore, FakeUnitOfWork

FILE = load_registry_file()
LILLE = FILE["parquet-tj-lille"]
NOW = 1_800_000_000
VALUE = b'{"any": "bytes"}'
SECRET = b"s3cret"


def _headers(**override: str) -> dict[str, str]:
    return {**sign(VALUE, LILLE.signing_key_id, SECRET, NOW - 10), **override}


def _auth(headers: dict[str, str], entry: PrescriberEntry | None = LILLE) -> object:
    return authenticate(headers, VALUE, entry, SECRET if entry else None, NOW, 300)


def test_a_fresh_valid_signature_identifies_the_prescriber() -> None:
    assert _auth(_headers()) == LILLE


@pytest.mark.parametrize(
    ("headers", "entry", "reason", "named"),
    [
        (_headers(), None, "unknown_prescriber", None),
        (_headers(**{"x-aiguillage-signature": "00" * 32}), LILLE, "bad_signature", LILLE),
        (sign(VALUE, LILLE.signing_key_id, SECRET, NOW - 301), LILLE, "replayed_message", LILLE),
        (sign(VALUE, LILLE.signing_key_id, SECRET, NOW + 301), LILLE, "replayed_message", LILLE),
    ],
)
def test_authentication_refusals(
    headers: dict[str, str], entry: PrescriberEntry | None, reason: str, named: object
) -> None:
    problem = _auth(headers, entry)
    assert isinstance(problem, Problem)
    assert problem.reason == reason
    assert problem.prescriber_id == (LILLE.prescriber_id if named else None)


def test_a_missing_header_is_an_unsigned_record() -> None:
    headers = _headers()
    del headers["x-aiguillage-timestamp"]
    problem = signing_key_id(headers)
    assert isinstance(problem, Problem)
    assert problem.field_path == "headers.x-aiguillage-timestamp"
    assert signing_key_id(_headers()) == LILLE.signing_key_id


def test_registry_events_override_the_file_per_prescriber() -> None:
    rotated = LILLE.model_copy(update={"signing_key_id": "lille-2027"})
    assert effective_entry(LILLE.signing_key_id, FILE, []) == LILLE
    assert effective_entry(LILLE.signing_key_id, FILE, [rotated]) is None  # old key retired
    assert effective_entry("lille-2027", FILE, [rotated]) == rotated
    revoked = LILLE.model_copy(update={"active": False})
    assert effective_entry(LILLE.signing_key_id, FILE, [revoked]) is None


def test_jurisdiction_is_the_prescribers_departements_or_national() -> None:
    assert outside_jurisdiction(LILLE, "59") is None
    problem = outside_jurisdiction(LILLE, "69")
    assert isinstance(problem, Problem)
    assert problem.reason == "outside_jurisdiction"
    national = LILLE.model_copy(update={"jurisdiction": Jurisdiction(national=True)})
    assert outside_jurisdiction(national, "974") is None


class RequestsStore(FakeStore):
    def __init__(self, status: str) -> None:
        super().__init__()
        self.referrals = {"ref-000001": StoredReferral("parquet-tj-lille", status, False)}


class FakeRequestsUow(FakeUnitOfWork):
    def __init__(self, store: RequestsStore) -> None:
        super().__init__(store)
        self.requests = store

    async def referral(self, referral_id: str) -> StoredReferral | None:
        return self.requests.referrals.get(referral_id)

    async def cancel(self, referral_id: str, at: datetime) -> None:
        self.write("cancelled", referral_id)
        owner = self.requests.referrals[referral_id]
        self.requests.referrals[referral_id] = StoredReferral(
            owner.prescriber_id, "cancelled", False
        )

    async def replace_identity(self, referral_id: str, identity: Identity) -> None:
        self.write("identities", (referral_id, identity))


def _store(status: str = "open") -> RequestsStore:
    return RequestsStore(status)


def _cancel(prescriber_id: str = "parquet-tj-lille") -> ReferralCancellationRequested:
    return ReferralCancellationRequested(
        source=prescriber_id,
        correlation_id=uuid.uuid4(),
        subject="ref-000001",
        data=ReferralCancellationRequestedData(prescriber_id=prescriber_id, reason="other"),
    )


TOPICS = Topics(accepted="accepted", rejected="rejected")
AT = datetime(2026, 11, 22, tzinfo=UTC)


async def test_cancellation_is_forwarded_once() -> None:
    store = _store()
    event = _cancel()
    assert await cancel_referral(event, LILLE, lambda: FakeRequestsUow(store), TOPICS, AT) == (
        Outcome.CANCELLED
    )
    again = _cancel()  # a second request, new event id: already cancelled, no second effect
    assert await cancel_referral(again, LILLE, lambda: FakeRequestsUow(store), TOPICS, AT) == (
        Outcome.DUPLICATE
    )
    assert [type(e) for _, e in store.outbox] == [ReferralCancelled]
    assert store.outbox[0][0] == "accepted"


async def test_another_prescribers_referral_is_unknown_to_the_sender() -> None:
    store = _store()
    spip = FILE["spip-69"]
    with pytest.raises(InvalidMessage) as caught:
        await cancel_referral(_cancel("spip-69"), spip, lambda: FakeRequestsUow(store), TOPICS, AT)
    assert caught.value.problem.reason == "unknown_referral"
    assert store.outbox == []
    assert store.commits == 0


async def test_a_cancelled_referral_cannot_be_amended() -> None:
    store = _store("cancelled")
    amended = ReferralAmended(
        source="parquet-tj-lille",
        correlation_id=uuid.uuid4(),
        subject="ref-000001",
        data=ReferralAmendedData(
            prescriber_id="parquet-tj-lille", identity=make_referral(0).data.identity
        ),
    )
    with pytest.raises(InvalidMessage) as caught:
        await amend_referral(amended, LILLE, lambda: FakeRequestsUow(store), date(2026, 11, 22))
    assert caught.value.problem.reason == "referral_closed"
    open_store = _store()
    outcome = await amend_referral(
        amended, LILLE, lambda: FakeRequestsUow(open_store), date(2026, 11, 22)
    )
    assert outcome == Outcome.AMENDED
    assert len(open_store.rows("identities")) == 1
