"""Identity release, pure parts and use cases with fakes: who holds a referral after each routing
event, what intake answers, how requests are signed, and what notifications makes of the answer."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

import httpx
import pytest

from aiguillage_common.identity_requests import ANSWERS, Release, person_in
from aiguillage_common.service_auth import sign_request, verify_request
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_submitted import Identity
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    PathReportedData,
    ReferralEscalated,
    ReferralEscalatedData,
    ReferralPlaced,
    ReferralPlacedData,
    ReferralRouted,
    ReferralRoutedData,
    ReferralWaitlisted,
    ReferralWaitlistedData,
    ReferralWithdrawn,
    ReferralWithdrawnData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode
from notifications.domain.delivery import INTAKE_LAGGING
from notifications.domain.identity import carries_identity, lookup_from_status
from portal.adapters.identity import IdentityAnswer
from portal.adapters.identity import IdentityClient as PortalIdentityClient
from referral_intake.domain.identity_release import (
    UNCHANGED,
    Holder,
    ReferralState,
    decide_release,
    holder_after,
)
from referral_intake.use_cases.identity_release import (
    ROUTED_CONSUMER,
    ReleaseRequest,
    ReleaseView,
    release_identity,
    track_holder,
)
from tests.unit.fakes import FakeStore, FakeUnitOfWork

REF = "ref-identity-0001"
SPIP = {"prescriber_id": "spip-69", "prescriber_kind": PrescriberKind.SPIP}


def site(centre_id: str) -> SiteRef:
    return SiteRef(
        centre_id=centre_id,
        centre_name=f"CPCA {centre_id}",
        site_id=f"{centre_id}-1",
        site_commune_insee="69381",
        site_departement="69",
        address_confidential=False,
    )


def routed(centre_id: str, ref: str = REF) -> ReferralRouted:
    return ReferralRouted(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject=ref,
        data=ReferralRoutedData(
            decision_id=uuid.uuid4(),
            site=site(centre_id),
            services=[ServiceCode.PSYCHOLOGICAL_FOLLOWUP],
            distance_km=1.0,
            explanation="closest",
            **SPIP,
        ),
    )


def placed(centre_id: str) -> ReferralPlaced:
    return ReferralPlaced(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject=REF,
        data=ReferralPlacedData(site=site(centre_id), **SPIP),
    )


def path(report: str) -> PathReported:
    return PathReported(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject=REF,
        data=PathReportedData(
            site=site("ARA-LYON"),
            report=report,  # type: ignore[arg-type]
            occurred_on=date(2026, 11, 20),
            **SPIP,
        ),
    )


def clearing_events() -> list[Envelope]:
    return [
        ReferralWithdrawn(
            source="routing",
            correlation_id=uuid.uuid4(),
            subject=REF,
            data=ReferralWithdrawnData(
                site=site("ARA-LYON"), reason="cancelled_by_prescriber", **SPIP
            ),
        ),
        ReferralEscalated(
            source="routing",
            correlation_id=uuid.uuid4(),
            subject=REF,
            data=ReferralEscalatedData(
                attempts=3, reason="attempts_exhausted", explanation="x", **SPIP
            ),
        ),
        ReferralWaitlisted(
            source="routing",
            correlation_id=uuid.uuid4(),
            subject=REF,
            data=ReferralWaitlistedData(
                decision_id=uuid.uuid4(),
                site=site("ARA-LYON"),
                service=ServiceCode.PSYCHOLOGICAL_FOLLOWUP,
                position=2,
                explanation="x",
                **SPIP,
            ),
        ),
        path("path_completed"),
        path("path_terminated"),
    ]


def test_an_offer_or_a_place_gives_the_referral_to_that_centre() -> None:
    assert holder_after(routed("ARA-LYON")) == Holder("ARA-LYON", "offered")
    assert holder_after(placed("NA-BORDEAUX")) == Holder("NA-BORDEAUX", "placed")


@pytest.mark.parametrize("event", clearing_events(), ids=lambda e: e.event_type)
def test_withdrawal_escalation_waiting_list_and_path_end_leave_no_holder(event: Envelope) -> None:
    assert holder_after(event) is None


@pytest.mark.parametrize("report", ["attended", "no_show", "appointment_scheduled"])
def test_path_steps_keep_the_holder(report: str) -> None:
    assert holder_after(path(report)) is UNCHANGED


OPEN = ReferralState(cancelled=False, purged=False, holder_centre_id="ARA-LYON")


@pytest.mark.parametrize(
    ("state", "centre", "seen", "expected"),
    [
        (OPEN, "ARA-LYON", True, Release.GRANTED),
        (OPEN, "ARA-LYON", None, Release.GRANTED),
        (OPEN, "NA-BORDEAUX", True, Release.NOT_HOLDER),
        (OPEN, "ARA-LYON", False, Release.NOT_YET_KNOWN),
        (None, "ARA-LYON", True, Release.UNKNOWN),
        (ReferralState(True, False, "ARA-LYON"), "ARA-LYON", True, Release.GONE),
        (ReferralState(False, True, "ARA-LYON"), "ARA-LYON", True, Release.GONE),
        (ReferralState(False, False, None), "ARA-LYON", True, Release.NOT_HOLDER),
    ],
)
def test_release_decisions(
    state: ReferralState | None, centre: str, seen: bool | None, expected: Release
) -> None:
    assert decide_release(state, centre, seen) is expected


SECRET = b"service-secret"


def test_a_signed_request_verifies_only_with_its_secret_body_and_window() -> None:
    body = b'{"referral_id":"ref-identity-0001","centre_id":"ARA-LYON"}'
    header = sign_request(SECRET, 1_000, body)
    assert verify_request(SECRET, header, body, 1_010, 60)
    assert not verify_request(b"other-secret", header, body, 1_010, 60)
    assert not verify_request(SECRET, header, body.replace(b"ARA-LYON", b"NA-BORDX"), 1_010, 60)
    assert not verify_request(SECRET, header, body, 1_061, 60)  # replayed too late
    assert not verify_request(SECRET, None, body, 1_000, 60)
    assert not verify_request(SECRET, "t=x,v1=00", body, 1_000, 60)
    assert not verify_request(b"", sign_request(b"", 1_000, body), body, 1_000, 60)


class FakeIntake(FakeUnitOfWork):
    """Holders and referrals in the fake store; identities are plain (sealing is tested apart)."""

    async def set_holder(self, referral_id: str, holder: Holder | None, event_id: Any) -> None:
        self.write("holders", (referral_id, holder))


class FakeReleaseStore:
    """The identity API's reads and audit over the same fake store, each its own transaction."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def _state(self, referral_id: str) -> ReferralState | None:
        referral = self.store.tables.get("referrals_by_id", [{}])[0].get(referral_id)
        if referral is None:
            return None
        holders = [h for r, h in self.store.rows("holders") if r == referral_id]
        holder = holders[-1] if holders else None
        return ReferralState(referral == "cancelled", False, holder.centre_id if holder else None)

    async def release_view(
        self, referral_id: str, consumer: str, offer_event_id: uuid.UUID | None
    ) -> ReleaseView:
        seen = None if offer_event_id is None else (consumer, offer_event_id) in self.store.claims
        return ReleaseView(seen, self._state(referral_id), object())

    async def audit_release(
        self, referral_id: str, centre_id: str, outcome: Release, view: ReleaseView
    ) -> bool:
        state = self._state(referral_id)
        if outcome is Release.GRANTED and (state is None or state.cancelled or state.purged):
            return False
        self.store.tables.setdefault("audit", []).append((referral_id, centre_id, str(outcome)))
        return True

    def open_identity(self, referral_id: str, sealed: object) -> Identity:
        return Identity(last_name="Zed", first_name="Ann", birth_date=date(1980, 1, 2))


async def test_only_the_current_holder_gets_the_identity_and_every_answer_is_audited() -> None:
    store = FakeStore()
    store.tables["referrals_by_id"] = [{REF: "open"}]

    def uow() -> FakeIntake:
        return FakeIntake(store)

    releases = FakeReleaseStore(store)
    first, second = routed("ARA-LYON"), routed("NA-BORDEAUX")
    not_yet = await release_identity(ReleaseRequest(REF, "ARA-LYON", first.event_id), releases)
    assert not_yet.outcome is Release.NOT_YET_KNOWN
    assert not_yet.identity is None

    assert await track_holder(first, uow)
    assert not await track_holder(first, uow)  # a redelivery changes nothing
    granted = await release_identity(ReleaseRequest(REF, "ARA-LYON", first.event_id), releases)
    assert granted.outcome is Release.GRANTED
    assert granted.identity is not None

    assert await track_holder(second, uow)  # re-routed: Lyon no longer holds it
    refused = await release_identity(ReleaseRequest(REF, "ARA-LYON", first.event_id), releases)
    assert refused.outcome is Release.NOT_HOLDER
    assert refused.identity is None
    assert (ROUTED_CONSUMER, second.event_id) in store.claims

    store.tables["referrals_by_id"] = [{REF: "cancelled"}]
    gone = await release_identity(ReleaseRequest(REF, "NA-BORDEAUX", second.event_id), releases)
    assert gone.outcome is Release.GONE
    unknown = await release_identity(ReleaseRequest("ref-nobody-01", "ARA-LYON"), releases)
    assert unknown.outcome is Release.UNKNOWN
    assert [row[2] for row in store.rows("audit")] == [
        "not_yet_known",
        "granted",
        "not_holder",
        "gone",
        "unknown",
    ]
    assert all("Zed" not in repr(row) for row in store.rows("audit"))


def test_only_the_centre_offer_webhook_carries_identity() -> None:
    assert carries_identity("centre", "webhook", "referral_offered")
    assert not carries_identity("centre", "email", "referral_offered")
    assert not carries_identity("centre", "kafka", "referral_offered")
    assert not carries_identity("prescriber", "webhook", "referral_offered")
    assert not carries_identity("centre", "webhook", "referral_withdrawn")


def test_intake_answers_read_as_lookups() -> None:
    person = {"last_name": "Zed"}
    granted = lookup_from_status(200, person)
    assert granted.outcome == "granted"
    assert granted.person == person
    assert "Zed" not in repr(granted)  # never printed, whatever shows the object
    assert lookup_from_status(403, None).reason == "not_holder"
    assert lookup_from_status(404, None).outcome == "refused"
    assert lookup_from_status(410, None).reason == "gone"
    for status in (409, 401, 500, 503):
        assert lookup_from_status(status, None).outcome == "unavailable"
    assert lookup_from_status(200, None).outcome == "unavailable"  # a 200 without a person


# The wire of intake's identity API, written out: what intake answers each release with, and
# what an asking service (notifications, the portal) does with it and records.
WIRE = {
    Release.GRANTED: (200, "granted", "granted"),
    Release.NOT_HOLDER: (403, "refused", "not_holder"),
    Release.UNKNOWN: (404, "refused", "unknown"),
    Release.GONE: (410, "refused", "gone"),
    Release.NOT_YET_KNOWN: (409, "unavailable", "http_409"),
}


async def _portal_reads(status: int, body: bytes) -> IdentityAnswer:
    def intake(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(intake)) as client:
        portal = PortalIdentityClient(client, "http://intake.test/identity", b"secret", 1.0)
        return await portal.lookup(REF, "ARA-LYON")


@pytest.mark.parametrize("release", list(Release))
async def test_every_answer_of_intake_is_read_alike_by_notifications_and_the_portal(
    release: Release,
) -> None:
    status, outcome, reason = WIRE[release]
    assert ANSWERS[release].status == status
    granted = release is Release.GRANTED
    body = json.dumps(
        {"referral_id": REF, "person": {"last_name": "Zed"}} if granted else {"error": release}
    ).encode()
    lookup = lookup_from_status(status, person_in(status, body))
    shown = await _portal_reads(status, body)
    assert (lookup.outcome, lookup.reason) == (shown.outcome, shown.reason) == (outcome, reason)
    assert lookup.person == shown.person == ({"last_name": "Zed"} if granted else None)
    # A 409 is the one answer notifications retries on its short schedule: intake is behind.
    assert (lookup.reason == INTAKE_LAGGING) is (release is Release.NOT_YET_KNOWN)


async def test_answers_intake_does_not_give_on_purpose_are_unavailable_to_both_callers() -> None:
    for status in (401, 500, 503):
        lookup = lookup_from_status(status, None)
        shown = await _portal_reads(status, b'{"error": "x"}')
        assert (lookup.outcome, lookup.reason) == (shown.outcome, shown.reason)
        assert (lookup.outcome, lookup.reason) == ("unavailable", f"http_{status}")
    # A 200 without a person: each keeps the reason it has always recorded.
    assert lookup_from_status(200, None).reason == "http_200"
    shown = await _portal_reads(200, b'{"referral_id": "x"}')
    assert (shown.outcome, shown.reason, shown.person) == ("unavailable", "bad_answer", None)


class CancelledAfterTheRead(FakeReleaseStore):
    """The referral is cancelled right after the request read it (as still open)."""

    async def release_view(
        self, referral_id: str, consumer: str, offer_event_id: uuid.UUID | None
    ) -> ReleaseView:
        view = await super().release_view(referral_id, consumer, offer_event_id)
        self.store.tables["referrals_by_id"] = [{referral_id: "cancelled"}]
        return view


async def test_a_referral_cancelled_during_a_request_is_never_released() -> None:
    store = FakeStore()
    store.tables["referrals_by_id"] = [{REF: "open"}]
    offer = routed("ARA-LYON")
    assert await track_holder(offer, lambda: FakeIntake(store))
    answer = await release_identity(
        ReleaseRequest(REF, "ARA-LYON", offer.event_id), CancelledAfterTheRead(store)
    )
    assert (answer.outcome, answer.identity) == (Release.GONE, None)
    assert [row[2] for row in store.rows("audit")] == ["gone"]


class AlwaysChanged(FakeReleaseStore):
    """Every grant's audit finds the referral changed since its read."""

    async def audit_release(
        self, referral_id: str, centre_id: str, outcome: Release, view: ReleaseView
    ) -> bool:
        return outcome is not Release.GRANTED and await super().audit_release(
            referral_id, centre_id, outcome, view
        )


async def test_a_referral_changing_at_every_read_is_an_error_never_a_release() -> None:
    store = FakeStore()
    store.tables["referrals_by_id"] = [{REF: "open"}]
    offer = routed("ARA-LYON")
    assert await track_holder(offer, lambda: FakeIntake(store))
    with pytest.raises(RuntimeError, match="changed"):
        await release_identity(
            ReleaseRequest(REF, "ARA-LYON", offer.event_id), AlwaysChanged(store)
        )
    assert store.rows("audit") == []
