"""The portal's rules with fakes: who may see and do what, sessions, TOTP, throttling, and the
events a centre user's action publishes (always naming the user)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import pyotp
import pytest

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.routing_decisions import (
    PathReported,
    PathReportedData,
    ReferralRouted,
    ReferralRoutedData,
    SiteRef,
)
from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode
from portal.adapters.passwords import hash_password, verify_password
from portal.domain import access, labels
from portal.domain.access import Principal, ReferralView
from portal.domain.projection import routing_change
from portal.domain.responses import ActionRefused, OfferContext, offer_answer, path_report
from portal.domain.security import (
    SessionPolicy,
    ThrottlePolicy,
    accepted_totp_step,
    password_problem,
    totp_step,
)
from portal.use_cases import accounts, centre_actions
from portal.use_cases.centre_actions import NotFound, Topics
from tests.support.portal_sessions import InMemorySessions

NOW = datetime(2026, 11, 30, 10, 0, 7, tzinfo=UTC)
ARRAS = Principal(uuid.uuid4(), "centre", centre_id="HDF-ARRAS")
CREIL = Principal(uuid.uuid4(), "centre", centre_id="HDF-CREIL")
LILLE = Principal(uuid.uuid4(), "prescriber", prescriber_id="parquet-tj-lille")
OPERATOR = Principal(uuid.uuid4(), "operator")


def offered(
    centre: str = "HDF-ARRAS", status: str = "offered", pending: str | None = None
) -> ReferralView:
    return ReferralView("REF-000001", "parquet-tj-lille", status, centre, f"{centre}-62", pending)


# --- who may see and do what --------------------------------------------------------------
def test_only_the_holding_centre_sees_and_answers_an_offer() -> None:
    assert access.may_see_offer(ARRAS, offered())
    assert access.may_answer_offer(ARRAS, offered())
    assert access.may_read_identity(ARRAS, offered())
    for other in (CREIL, LILLE, OPERATOR):
        assert not access.may_see_offer(other, offered())
        assert not access.may_read_identity(other, offered())
        assert not access.may_answer_offer(other, offered())


def test_a_centre_loses_the_referral_once_it_is_offered_elsewhere_or_closed() -> None:
    assert not access.may_see_offer(ARRAS, offered(centre="HDF-CREIL"))
    for status in ("waitlisted", "withdrawn", "completed", "escalated", "received"):
        assert not access.may_see_offer(ARRAS, offered(status=status))


def test_an_answer_is_given_once_and_the_path_is_reported_only_once_placed() -> None:
    assert not access.may_answer_offer(ARRAS, offered(pending="accepted"))
    assert not access.may_report_path(ARRAS, offered())
    assert access.may_report_path(ARRAS, offered(status="placed"))
    assert not access.may_answer_offer(ARRAS, offered(status="placed"))


def test_prescribers_see_their_own_referrals_only() -> None:
    assert access.may_see_as_prescriber(LILLE, "parquet-tj-lille")
    assert not access.may_see_as_prescriber(LILLE, "spip-69")
    assert not access.may_see_as_prescriber(ARRAS, "parquet-tj-lille")
    assert not access.may_see_as_prescriber(OPERATOR, "parquet-tj-lille")


def test_only_operators_operate_and_capacity_is_changed_by_its_own_centre() -> None:
    assert access.may_operate(OPERATOR)
    assert not any(access.may_operate(p) for p in (ARRAS, LILLE))
    assert access.may_change_capacity(ARRAS, "HDF-ARRAS")
    assert not access.may_change_capacity(ARRAS, "HDF-CREIL")
    assert not access.may_change_capacity(OPERATOR, "HDF-ARRAS")


def test_a_user_belongs_to_exactly_what_their_role_needs() -> None:
    assert access.affiliation_problem("centre", "HDF-ARRAS", None) is None
    assert access.affiliation_problem("centre", None, None)
    assert access.affiliation_problem("centre", "HDF-ARRAS", "spip-69")
    assert access.affiliation_problem("prescriber", None, "spip-69") is None
    assert access.affiliation_problem("operator", "HDF-ARRAS", None)


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/centre/offres/REF-1", True),
        ("//evil.example/x", False),
        ("https://evil.example", False),
        ("/\\evil.example", False),
        ("", False),
    ],
)
def test_after_sign_in_only_a_path_of_this_site_is_followed(target: str | None, kept: bool) -> None:
    assert access.safe_next(target) == (target if kept else None)


# --- sessions, TOTP, passwords, throttling --------------------------------------------------
def test_sessions_end_when_idle_and_after_the_absolute_limit() -> None:
    policy = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=10))
    start = NOW
    assert policy.state(start, start, start + timedelta(minutes=29)) == "valid"
    assert policy.state(start, start, start + timedelta(minutes=30)) == "idle_expired"
    busy = start + timedelta(hours=9, minutes=59)
    assert policy.state(start, busy, busy + timedelta(minutes=1)) == "expired"


def test_a_totp_code_is_accepted_once_with_one_step_of_drift() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    code = totp.at(NOW)
    step = accepted_totp_step(secret, code, NOW, None)
    assert step == totp_step(NOW)
    assert accepted_totp_step(secret, code, NOW, step) is None  # replayed
    assert accepted_totp_step(secret, totp.at(NOW - timedelta(seconds=30)), NOW, None) is not None
    assert accepted_totp_step(secret, totp.at(NOW - timedelta(seconds=90)), NOW, None) is None
    assert accepted_totp_step(secret, "12345", NOW, None) is None
    assert accepted_totp_step(secret, "abcdef", NOW, None) is None


def test_passwords_are_argon2id_and_long_enough() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong horse battery")
    assert not verify_password(None, "anything at all")
    assert password_problem("short", "short")
    assert password_problem("a long password!", "another one!!!")
    assert password_problem("a long password!", "a long password!") is None


def test_throttling_blocks_past_the_limit_and_lifts_itself() -> None:
    policy = ThrottlePolicy(
        max_failures_per_account=3, max_failures_per_address=10, window=timedelta(minutes=15)
    )
    failures = [NOW - timedelta(minutes=m) for m in (14, 5, 1)]
    wait = policy.blocked(failures, [], NOW)
    assert wait == timedelta(minutes=1)  # the oldest failure leaves the window in a minute
    assert policy.blocked(failures[1:], [], NOW) is None
    assert policy.blocked(failures, [], NOW + timedelta(minutes=1)) is None
    many = [NOW - timedelta(seconds=s) for s in range(10)]
    assert policy.blocked([], many, NOW) is not None


# --- sign-in use case with a fake store ------------------------------------------------------
class FakeUser:
    def __init__(self, secret: str, *, enrolled: bool = True, disabled: bool = False) -> None:
        self.user_id = uuid.uuid4()
        self.role = "centre"
        self.password_hash = hash_password("a very long password")
        self.totp_secret = secret
        self.totp_last_step: int | None = None
        self.enrolled = enrolled
        self.disabled = disabled

    def principal(self) -> Principal:
        return Principal(self.user_id, "centre", centre_id="HDF-ARRAS")


class FakeAccounts(InMemorySessions):
    def __init__(self, user: FakeUser) -> None:
        super().__init__()
        self.user = user
        self.failures: list[tuple[str, str, datetime]] = []
        self.audit: list[str] = []

    async def user_by_email(self, email: str) -> FakeUser | None:
        return self.user if email == "agent@arras.example" else None

    async def failures_since(
        self, email: str, client_address: str, since: datetime
    ) -> tuple[list[datetime], list[datetime]]:
        return (
            [at for e, _, at in self.failures if e == email and at > since],
            [at for _, a, at in self.failures if a == client_address and at > since],
        )

    async def claim_totp_step(self, user_id: uuid.UUID, step: int) -> bool:
        if self.user.totp_last_step is not None and step <= self.user.totp_last_step:
            return False
        self.user.totp_last_step = step
        return True

    async def record_sign_in(
        self,
        email: str,
        client_address: str,
        outcome: str,
        user_id: uuid.UUID | None,
        now: datetime,
    ) -> None:
        self.audit.append(outcome)
        if outcome not in ("ok", "throttled"):
            self.failures.append((email, client_address, now))

    async def open_session(
        self, session_sha256: str, user_id: uuid.UUID, csrf_token: str, now: datetime
    ) -> None:
        self.add_session(session_sha256, user_id, csrf_token, now)

    def session_ended(self, reason: str) -> None:
        self.audit.append(f"ended:{reason}")


async def _sign_in(store: FakeAccounts, password: str, code: str, now: datetime = NOW) -> Any:
    return await accounts.sign_in(
        store,
        "Agent@Arras.example ",
        password,
        code,
        "10.0.0.1",
        now,
        ThrottlePolicy(max_failures_per_account=3),
        verify_password,
    )


async def test_sign_in_needs_the_password_and_a_fresh_totp_code() -> None:
    secret = pyotp.random_base32()
    store = FakeAccounts(FakeUser(secret))
    code = pyotp.TOTP(secret).at(NOW)
    assert (await _sign_in(store, "wrong password!!", code)).outcome == "refused"
    assert (
        await _sign_in(store, "a very long password", "000000" if code != "000000" else "111111")
    ).outcome == "refused"
    result = await _sign_in(store, "a very long password", code)
    assert result.outcome == "ok"
    assert result.principal.centre_id == "HDF-ARRAS"
    # The same code a second time (a replay) opens nothing.
    assert (await _sign_in(store, "a very long password", code)).outcome == "refused"
    assert store.audit == ["bad_password", "bad_totp", "ok", "bad_totp"]
    # The session token is never stored as such.
    assert result.session_token not in store.sessions
    assert accounts.digest(result.session_token) in store.sessions


async def test_after_too_many_failures_even_the_right_credentials_wait() -> None:
    secret = pyotp.random_base32()
    store = FakeAccounts(FakeUser(secret))
    for _ in range(3):
        await _sign_in(store, "wrong password!!", "123456")
    result = await _sign_in(store, "a very long password", pyotp.TOTP(secret).at(NOW))
    assert result.outcome == "throttled"
    assert result.retry_after is not None
    later = NOW + timedelta(minutes=16)
    assert (
        await _sign_in(store, "a very long password", pyotp.TOTP(secret).at(later), later)
    ).outcome == "ok"


async def test_disabled_or_unenrolled_accounts_cannot_sign_in() -> None:
    secret = pyotp.random_base32()
    for user in (FakeUser(secret, disabled=True), FakeUser(secret, enrolled=False)):
        store = FakeAccounts(user)
        assert (
            await _sign_in(store, "a very long password", pyotp.TOTP(secret).at(NOW))
        ).outcome == "refused"


async def test_a_session_expires_when_idle_and_is_then_forgotten() -> None:
    secret = pyotp.random_base32()
    store = FakeAccounts(FakeUser(secret))
    result = await _sign_in(store, "a very long password", pyotp.TOTP(secret).at(NOW))
    policy = SessionPolicy(idle=timedelta(minutes=30))
    token = result.session_token
    assert await accounts.resolve_session(store, token, NOW + timedelta(minutes=20), policy)
    assert await accounts.resolve_session(store, token, NOW + timedelta(minutes=45), policy)
    assert await accounts.resolve_session(store, token, NOW + timedelta(minutes=80), policy) is None
    assert await accounts.resolve_session(store, token, NOW + timedelta(minutes=81), policy) is None
    assert "ended:idle_expired" in store.audit
    assert await accounts.resolve_session(store, "forged", NOW, policy) is None


def test_enrolment_proves_the_authenticator_works() -> None:
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(NOW)
    assert accounts.check_enrolment(secret, "a long password!", "a long password!", code, NOW)[1]
    problem, step = accounts.check_enrolment(
        secret,
        "a long password!",
        "a long password!",
        "000000" if code != "000000" else "111111",
        NOW,
    )
    assert problem
    assert step is None


# --- what a centre user's action publishes --------------------------------------------------
SITE = SiteRef(
    centre_id="HDF-ARRAS",
    centre_name="CPCA Arras",
    site_id="HDF-ARRAS-62",
    site_commune_insee="62041",
    site_departement="62",
    address_confidential=False,
)
OFFER = OfferContext("REF-000001", uuid.uuid4(), "HDF-ARRAS", "HDF-ARRAS-62")


def test_answers_name_the_user_and_a_decline_needs_its_reason() -> None:
    event = offer_answer(ARRAS, OFFER, "declined", "no_capacity", None, NOW)
    assert event.data.actor is not None
    assert (event.data.actor.kind, event.data.actor.id) == ("centre_user", f"u:{ARRAS.user_id}")
    assert event.subject == "REF-000001"
    assert event.data.site_id == "HDF-ARRAS-62"
    with pytest.raises(ActionRefused):
        offer_answer(ARRAS, OFFER, "declined", None, None, NOW)
    # Free text goes only with 'other' (the contract's rule).
    assert (
        offer_answer(ARRAS, OFFER, "declined", "not_eligible", "note", NOW).data.decline_text
        is None
    )
    assert offer_answer(ARRAS, OFFER, "declined", "other", "note", NOW).data.decline_text == "note"


def test_path_reports_keep_only_the_fields_of_their_kind() -> None:
    today = date(2026, 11, 30)
    report = path_report(ARRAS, OFFER, "path_completed", today, today, justified=True)
    assert report.data.justified is None
    assert report.data.actor is not None
    with pytest.raises(ActionRefused):
        path_report(ARRAS, OFFER, "attended", today + timedelta(days=1), today)
    with pytest.raises(ActionRefused):
        path_report(ARRAS, OFFER, "path_terminated", today, today)
    with pytest.raises(ActionRefused):
        path_report(ARRAS, OFFER, "module_completed", today, today)


def test_projection_reads_offers_and_reports_in_french() -> None:
    routed = ReferralRouted(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject="REF-000001",
        data=ReferralRoutedData(
            decision_id=uuid.uuid4(),
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            site=SITE,
            services=[ServiceCode.RESPONSIBILITY_COURSE],
            distance_km=3.0,
            explanation="x",
            attempt=2,
            answer_by=NOW,
            previous_site_id="HDF-ARRAS-59",
        ),
    )
    change = routing_change(routed)
    assert change.status == "offered"
    assert change.answer_by == NOW
    assert change.attempt == 2
    assert change.history.summary == "Proposée à nouveau (essai 2) à CPCA Arras, site HDF-ARRAS-62"
    completed = PathReported(
        source="routing",
        correlation_id=uuid.uuid4(),
        subject="REF-000001",
        data=PathReportedData(
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            site=SITE,
            report="path_completed",
            occurred_on=date(2026, 11, 29),
        ),
    )
    assert routing_change(completed).status == "completed"
    assert routing_change(completed).history.summary.startswith("Parcours terminé le 29/11/2026")


def test_every_code_shown_has_french_words() -> None:
    from typing import get_args

    from aiguillage_schemas.events.centres import DeclineReason
    from aiguillage_schemas.events.routing_decisions import PathReportKind, TerminationReason
    from aiguillage_schemas.vocabulary import JudicialFrame, RejectionReason

    assert set(get_args(DeclineReason)) <= set(labels.DECLINE_REASONS)
    assert set(get_args(PathReportKind)) <= set(labels.PATH_REPORTS)
    assert set(get_args(TerminationReason)) <= set(labels.TERMINATION_REASONS)
    assert {f.value for f in JudicialFrame} <= set(labels.FRAMES)
    assert {s.value for s in ServiceCode} <= set(labels.SERVICES)
    assert {r.value for r in RejectionReason} <= set(labels.REJECTION_REASONS)


# --- centre actions with a fake unit of work -------------------------------------------------
class FakeActions:
    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.outbox: list[tuple[str, Envelope]] = []
        self.audit_rows: list[tuple[str, str]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        return True

    async def emit(self, topic: str, event: Envelope) -> None:
        self.outbox.append((topic, event))

    async def referral_for_update(self, referral_id: str) -> dict[str, Any] | None:
        return self.rows.get(referral_id)

    async def site_for_update(self, site_id: str, service: str) -> dict[str, Any] | None:
        return (
            {"centre_id": "HDF-ARRAS", "places_total": 4}
            if site_id.startswith("HDF-ARRAS")
            else None
        )

    async def set_pending(self, referral_id: str, action: str | None) -> None:
        self.rows[referral_id]["pending_action"] = action

    async def set_capacity(self, *args: Any, **kwargs: Any) -> bool:
        return True

    async def audit(self, action: str, outcome: str, **fields: Any) -> None:
        self.audit_rows.append((action, outcome))


TOPICS = Topics("centres.responses", "directory.updates")


async def test_answering_publishes_once_and_another_centre_gets_not_found() -> None:
    row = {
        "referral_id": "REF-000001",
        "prescriber_id": "parquet-tj-lille",
        "status": "offered",
        "centre_id": "HDF-ARRAS",
        "site_id": "HDF-ARRAS-62",
        "pending_action": None,
        "correlation_id": uuid.uuid4(),
    }
    uow = FakeActions({"REF-000001": row})
    with pytest.raises(NotFound):
        await centre_actions.answer_offer(
            CREIL, "REF-000001", "accepted", None, None, lambda: uow, TOPICS, NOW
        )
    with pytest.raises(NotFound):
        await centre_actions.answer_offer(
            ARRAS, "REF-UNKNOWN", "accepted", None, None, lambda: uow, TOPICS, NOW
        )
    await centre_actions.answer_offer(
        ARRAS, "REF-000001", "accepted", None, None, lambda: uow, TOPICS, NOW
    )
    with pytest.raises(ActionRefused):  # the second click
        await centre_actions.answer_offer(
            ARRAS, "REF-000001", "declined", "other", None, lambda: uow, TOPICS, NOW
        )
    assert [(t, e.event_type) for t, e in uow.outbox] == [
        ("centres.responses", "centre.offer_answered")
    ]
    assert uow.audit_rows == [("offer_answered", "accepted")]


async def test_capacity_of_another_centre_is_not_found_and_a_confirmation_is_audited() -> None:
    uow = FakeActions({})
    with pytest.raises(NotFound):
        await centre_actions.set_capacity(
            ARRAS, "HDF-CREIL-60", ServiceCode.DISCUSSION_GROUP, 3, lambda: uow, TOPICS, NOW
        )
    event = await centre_actions.set_capacity(
        ARRAS, "HDF-ARRAS-62", ServiceCode.DISCUSSION_GROUP, 4, lambda: uow, TOPICS, NOW
    )
    assert event.subject == "HDF-ARRAS-62"
    assert uow.outbox[0][0] == "directory.updates"
    assert uow.audit_rows == [("capacity_confirmed", "ok")]


def test_a_count_of_places_is_fresh_then_due_then_stale_and_a_seed_count_is_stale() -> None:
    from portal.domain.capacity import FreshnessPolicy

    policy = FreshnessPolicy(timedelta(days=30), timedelta(days=7))
    assert policy.state(NOW, False, NOW + timedelta(days=22)) == "fresh"
    assert policy.state(NOW, False, NOW + timedelta(days=23)) == "due_soon"
    assert policy.state(NOW, False, NOW + timedelta(days=30)) == "stale"
    assert policy.state(NOW, True, NOW) == "stale"
