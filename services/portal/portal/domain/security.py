"""Session, second-factor and throttling rules. Pure: clocks and secrets are passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import pyotp

SessionState = Literal["valid", "idle_expired", "expired"]
TOTP_STEP_S = 30
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """A session ends after ``idle`` without a request, and after ``absolute`` whatever happens
    (a stolen cookie is worth a working day at most)."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=10)

    def state(self, created_at: datetime, last_seen_at: datetime, now: datetime) -> SessionState:
        if now - created_at >= self.absolute:
            return "expired"
        if now - last_seen_at >= self.idle:
            return "idle_expired"
        return "valid"


def totp_step(now: datetime) -> int:
    return int(now.timestamp()) // TOTP_STEP_S


def accepted_totp_step(
    secret: str, code: str, now: datetime, last_used_step: int | None, drift_steps: int = 1
) -> int | None:
    """The time step ``code`` belongs to, if it is valid now (one step of clock drift either way)
    and newer than the last code used: a code seen once (shoulder-surfed, phished, replayed) never
    opens a second session. None when refused."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp_step(now)
    for step in range(current - drift_steps, current + drift_steps + 1):
        if totp.at(step * TOTP_STEP_S) == code:
            if last_used_step is not None and step <= last_used_step:
                return None
            return step
    return None


def password_problem(password: str, confirmation: str) -> str | None:
    if password != confirmation:
        return "Les deux mots de passe ne sont pas identiques."
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Le mot de passe doit compter au moins {MIN_PASSWORD_LENGTH} caractères."
    return None


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Sign-in attempts that failed recently, per account and per client address. Past the limit
    every attempt is refused, right password or not, until the oldest failure leaves the window:
    guessing a password and a TOTP code becomes too slow to matter, and the lock lifts itself."""

    max_failures_per_account: int = 5
    max_failures_per_address: int = 30
    window: timedelta = timedelta(minutes=15)

    def since(self, now: datetime) -> datetime:
        return now - self.window

    def retry_after(
        self, failures: Sequence[datetime], limit: int, now: datetime
    ) -> timedelta | None:
        """None when another attempt may be made; else how long until one may."""
        recent = sorted(at for at in failures if at > now - self.window)
        if len(recent) < limit:
            return None
        # The attempt that would free a slot is the (len - limit + 1)-th oldest.
        freeing = recent[len(recent) - limit]
        return max(timedelta(seconds=1), freeing + self.window - now)

    def blocked(
        self,
        account_failures: Sequence[datetime],
        address_failures: Sequence[datetime],
        now: datetime,
    ) -> timedelta | None:
        waits = [
            wait
            for wait in (
                self.retry_after(account_failures, self.max_failures_per_account, now),
                self.retry_after(address_failures, self.max_failures_per_address, now),
            )
            if wait is not None
        ]
        return max(waits) if waits else None
