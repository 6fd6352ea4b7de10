"""Sealing the secrets the portal must read back: each user's TOTP seed.

A password hash is one-way; a TOTP seed cannot be: the server computes the expected code from it.
So it is sealed with AES-256-GCM under a key that lives outside the database (setting
``AIGUILLAGE_PORTAL_TOTP_KEY``, from a secret store): a copy of the portal's schema (a backup, a
replica, an SQL injection elsewhere) gives no one the second factor of every account. The user
id is the associated data, so a sealed seed moved onto another user's row does not open.

Stored form: ``v1:`` + base64(nonce ‖ ciphertext ‖ tag). A value without the prefix is a seed
written before sealing existed; ``PortalStore.seal_clear_totp_secrets`` seals those at start.
"""

from __future__ import annotations

import base64
import binascii
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"
_NONCE = 12


class SecretBoxError(ValueError):
    """The key is malformed, or a sealed value does not open with it (wrong key, or tampered)."""


class SecretBox:
    def __init__(self, key_b64: str) -> None:
        try:
            key = base64.b64decode(key_b64, validate=True)
        except binascii.Error:
            key = b""
        if len(key) != 32:
            raise SecretBoxError(
                "AIGUILLAGE_PORTAL_TOTP_KEY must be base64 of 32 random bytes "
                "(python3 -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')"
            )
        self._aead = AESGCM(key)

    def seal(self, plain: str, user_id: UUID) -> str:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, plain.encode("utf-8"), user_id.bytes)
        return PREFIX + base64.b64encode(sealed).decode("ascii")

    def open(self, stored: str, user_id: UUID) -> str:
        if not is_sealed(stored):
            return stored  # written before sealing; sealed at the next start
        raw = base64.b64decode(stored.removeprefix(PREFIX))
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], user_id.bytes).decode("utf-8")
        except InvalidTag:
            raise SecretBoxError("a sealed TOTP secret does not open with this key") from None


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)
