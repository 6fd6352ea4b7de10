"""Use cases of accounts: create a user with a one-time enrolment link, enrol, sign in, resolve
a session. The rules are the pure ones of ``portal.domain.security``; the store is a port."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4

import pyotp

from portal.domain.access import Principal, Role, affiliation_problem
from portal.domain.security import (
    SessionPolicy,
    ThrottlePolicy,
    accepted_totp_step,
    password_problem,
)


class AccountRecord(Protocol):
    user_id: UUID
    role: Role
    password_hash: str | None
    totp_secret: str | None
    totp_last_step: int | None
    enrolled: bool
    disabled: bool

    def principal(self) -> Principal: ...


class AccountStore(Protocol):
    async def user_by_email(self, email: str) -> Any: ...

    async def failures_since(
        self, email: str, client_address: str, since: datetime
    ) -> tuple[list[datetime], list[datetime]]: ...

    async def claim_totp_step(self, user_id: UUID, step: int) -> bool: ...

    async def record_sign_in(
        self, email: str, client_address: str, outcome: str, user_id: UUID | None, now: datetime
    ) -> None: ...

    async def open_session(
        self, session_sha256: str, user_id: UUID, csrf_token: str, now: datetime
    ) -> None: ...

    async def session(self, session_sha256: str) -> Any: ...

    async def touch_session(self, session_sha256: str, now: datetime) -> None: ...

    async def end_session(self, session_sha256: str, now: datetime, reason: str) -> None: ...


def digest(token: str) -> str:
    """What the database keeps of a session token or an enrolment link: a leaked table opens
    no session and enrols nobody."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SignIn:
    outcome: Literal["ok", "refused", "throttled"]
    session_token: str | None = None
    principal: Principal | None = None
    retry_after: timedelta | None = None


async def sign_in(
    store: AccountStore,
    email: str,
    password: str,
    code: str,
    client_address: str,
    now: datetime,
    policy: ThrottlePolicy,
    verify_password: Callable[[str | None, str], bool],
) -> SignIn:
    """Password and TOTP code together; the answer never says which one was wrong, nor whether
    the account exists."""
    email = email.strip().lower()
    mine, here = await store.failures_since(email, client_address, policy.since(now))
    wait = policy.blocked(mine, here, now)
    if wait is not None:
        await store.record_sign_in(email, client_address, "throttled", None, now)
        return SignIn("throttled", retry_after=wait)
    user: AccountRecord | None = await store.user_by_email(email)
    # argon2id costs tens of milliseconds of CPU: off the event loop that also runs the
    # portal's consumers and outbox relay.
    password_ok = await asyncio.to_thread(
        verify_password, user.password_hash if user else None, password
    )
    if user is None or user.disabled or not user.enrolled or not password_ok:
        outcome = "disabled" if user is not None and user.disabled else "bad_password"
        await store.record_sign_in(
            email, client_address, outcome, user.user_id if user else None, now
        )
        return SignIn("refused")
    step = accepted_totp_step(user.totp_secret or "", code, now, user.totp_last_step)
    if step is None or not await store.claim_totp_step(user.user_id, step):
        await store.record_sign_in(email, client_address, "bad_totp", user.user_id, now)
        return SignIn("refused")
    token = new_token()
    await store.open_session(digest(token), user.user_id, new_token(), now)
    await store.record_sign_in(email, client_address, "ok", user.user_id, now)
    return SignIn("ok", token, user.principal())


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf_token: str
    display_name: str
    token_sha256: str


async def resolve_session(
    store: AccountStore, token: str | None, now: datetime, policy: SessionPolicy
) -> Session | None:
    if not token:
        return None
    key = digest(token)
    row = await store.session(key)
    if row is None:
        return None
    state = policy.state(row["created_at"], row["last_seen_at"], now)
    if state != "valid":
        await store.end_session(key, now, state)
        return None
    await store.touch_session(key, now)
    principal = Principal(row["user_id"], row["role"], row["centre_id"], row["prescriber_id"])
    return Session(principal, row["csrf_token"], row["display_name"], key)


class UserStore(Protocol):
    async def create_user(
        self,
        user_id: UUID,
        email: str,
        display_name: str,
        role: Role,
        centre_id: str | None,
        prescriber_id: str | None,
        token_sha256: str,
        totp_secret: str,
        expires_at: datetime,
        created_by: UUID | None,
    ) -> bool: ...


class AccountRefused(ValueError):
    """The message is French, for the page or the CLI."""


@dataclass(frozen=True, slots=True)
class NewUser:
    user_id: UUID
    enrolment_token: str

    def link(self, public_url: str) -> str:
        return f"{public_url.rstrip('/')}/enrolement/{self.enrolment_token}"


async def create_user(
    store: UserStore,
    email: str,
    display_name: str,
    role: Role,
    centre_id: str | None,
    prescriber_id: str | None,
    now: datetime,
    valid_for: timedelta,
    created_by: UUID | None = None,
    known_centres: set[str] | None = None,
) -> NewUser:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise AccountRefused("Adresse électronique invalide.")
    if not display_name.strip():
        raise AccountRefused("Indiquez le nom affiché.")
    centre_id = centre_id or None
    prescriber_id = prescriber_id or None
    problem = affiliation_problem(role, centre_id, prescriber_id)
    if problem:
        raise AccountRefused(problem[0].upper() + problem[1:] + ".")
    if known_centres is not None and centre_id is not None and centre_id not in known_centres:
        raise AccountRefused(f"Centre inconnu : {centre_id}.")
    user_id, token = uuid4(), new_token()
    created = await store.create_user(
        user_id,
        email,
        display_name.strip(),
        role,
        centre_id,
        prescriber_id,
        digest(token),
        pyotp.random_base32(),
        now + valid_for,
        created_by,
    )
    if not created:
        raise AccountRefused("Un compte existe déjà avec cette adresse.")
    return NewUser(user_id, token)


def check_enrolment(
    totp_secret: str, password: str, confirmation: str, code: str, now: datetime
) -> tuple[str | None, int | None]:
    """(problem, time step of the code): the user proves their authenticator works before the
    account is usable, so nobody is locked out by a mistyped secret."""
    problem = password_problem(password, confirmation)
    if problem:
        return problem, None
    step = accepted_totp_step(totp_secret, code, now, None)
    if step is None:
        return "Le code à usage unique est incorrect : vérifiez l'heure de votre appareil.", None
    return None, step


async def create_enrolled_user(
    store: Any,
    email: str,
    display_name: str,
    role: Role,
    centre_id: str | None,
    prescriber_id: str | None,
    password: str,
    now: datetime,
    hash_password: Callable[[str], str],
) -> tuple[UUID, str]:
    """A user ready to sign in, without the enrolment page: for the demo and the tests, which
    print or compute the TOTP codes. Returns (user id, TOTP secret)."""
    created = await create_user(
        store, email, display_name, role, centre_id, prescriber_id, now, timedelta(minutes=5)
    )
    key = digest(created.enrolment_token)
    found = await store.enrolment(key, now)
    if found is None:
        raise AccountRefused("enrolment vanished")
    _, secret = found
    await store.complete_enrolment(
        key, created.user_id, hash_password(password), secret, None, now, "provisioning"
    )
    return created.user_id, secret
