"""argon2id password hashes (argon2-cffi's defaults: RFC 9106 low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Checked against when the account does not exist, so that an unknown e-mail costs the same
# time as a wrong password and does not reveal which accounts exist.
_DUMMY = _hasher.hash("not-a-password-of-anyone")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
