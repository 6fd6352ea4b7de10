"""Identity sealed per person: readable with the keys, unreadable once the person key is gone."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest
from cryptography.exceptions import InvalidTag

from aiguillage_demo.samples import make_referral
from referral_intake.adapters.identity_cipher import IdentityCipher

KEY = base64.b64encode(os.urandom(32)).decode()


def test_seal_and_open_round_trip_without_clear_text_at_rest() -> None:
    identity = make_referral(0, last_name="Canaryname").data.identity
    cipher = IdentityCipher(KEY, "k1")
    sealed = cipher.seal("ref-000001", identity)
    assert b"Canaryname" not in sealed.ciphertext
    assert cipher.open("ref-000001", sealed) == identity


def test_another_referral_or_master_key_cannot_open_it() -> None:
    sealed = IdentityCipher(KEY, "k1").seal("ref-000001", make_referral(0).data.identity)
    with pytest.raises(InvalidTag):
        IdentityCipher(KEY, "k1").open("ref-000002", sealed)
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(InvalidTag):
        IdentityCipher(other, "k2").open("ref-000001", sealed)


def test_a_destroyed_person_key_makes_the_identity_unreadable() -> None:
    cipher = IdentityCipher(KEY, "k1")
    sealed = cipher.seal("ref-000001", make_referral(0).data.identity)
    destroyed = dataclasses.replace(sealed, wrapped_key=os.urandom(len(sealed.wrapped_key)))
    with pytest.raises(InvalidTag):
        cipher.open("ref-000001", destroyed)


def test_a_master_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        IdentityCipher(base64.b64encode(b"short").decode(), "k1")
