"""Identity encrypted at rest: a key per person, wrapped by a master key from settings.

Destroying a person's wrapped key (retention purge) makes every copy of their identity unreadable,
wherever it was left. The master key id is stored beside each wrapped key so keys can be rotated.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aiguillage_schemas.events.referral_submitted import Identity

_NONCE = 12


@dataclass(frozen=True, slots=True)
class SealedIdentity:
    ciphertext: bytes
    wrapped_key: bytes
    master_key_id: str


class IdentityCipher:
    def __init__(self, master_key_b64: str, master_key_id: str) -> None:
        key = base64.b64decode(master_key_b64)
        if len(key) != 32:
            raise ValueError("the identity master key must be 32 bytes, base64-encoded")
        self._master = AESGCM(key)
        self._master_key_id = master_key_id

    def seal(self, referral_id: str, identity: Identity) -> SealedIdentity:
        person_key = AESGCM.generate_key(bit_length=256)
        aad = referral_id.encode("utf-8")
        nonce = os.urandom(_NONCE)
        ciphertext = nonce + AESGCM(person_key).encrypt(
            nonce, identity.model_dump_json().encode("utf-8"), aad
        )
        wrap_nonce = os.urandom(_NONCE)
        wrapped = wrap_nonce + self._master.encrypt(wrap_nonce, person_key, aad)
        return SealedIdentity(ciphertext, wrapped, self._master_key_id)

    def open(self, referral_id: str, sealed: SealedIdentity) -> Identity:
        aad = referral_id.encode("utf-8")
        person_key = self._master.decrypt(
            sealed.wrapped_key[:_NONCE], sealed.wrapped_key[_NONCE:], aad
        )
        plain = AESGCM(person_key).decrypt(
            sealed.ciphertext[:_NONCE], sealed.ciphertext[_NONCE:], aad
        )
        return Identity.model_validate_json(plain)
