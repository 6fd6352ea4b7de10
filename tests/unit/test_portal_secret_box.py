"""TOTP secrets sealed in the portal's schema: they open with the key and for their user only,
and a secret written before sealing still opens (it is sealed at the next start)."""

from __future__ import annotations

import base64
import os
import uuid

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.adapters.secret_box import PREFIX, SecretBox, SecretBoxError, is_sealed

KEY = base64.b64encode(b"k" * 32).decode()


@given(st.uuids())
def test_a_sealed_secret_opens_for_its_user_and_shows_nothing_of_itself(user: uuid.UUID) -> None:
    box, secret = SecretBox(KEY), pyotp.random_base32()
    sealed = box.seal(secret, user)
    assert is_sealed(sealed)
    assert secret not in sealed
    assert box.open(sealed, user) == secret
    assert box.seal(secret, user) != sealed  # a fresh nonce each time


def test_a_sealed_secret_moved_to_another_user_or_read_with_another_key_does_not_open() -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    sealed = SecretBox(KEY).seal(pyotp.random_base32(), user)
    with pytest.raises(SecretBoxError):
        SecretBox(KEY).open(sealed, other)
    with pytest.raises(SecretBoxError):
        SecretBox(base64.b64encode(os.urandom(32)).decode()).open(sealed, user)


def test_a_secret_from_before_sealing_reads_as_it_was() -> None:
    secret = pyotp.random_base32()
    assert not secret.startswith(PREFIX)
    assert SecretBox(KEY).open(secret, uuid.uuid4()) == secret


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_missing_or_malformed_key_is_refused_with_how_to_make_one(key: str) -> None:
    with pytest.raises(SecretBoxError, match="base64 of 32 random bytes"):
        SecretBox(key)
