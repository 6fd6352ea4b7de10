"""How a prescriber signs what it publishes on ``referrals.intake`` (and a centre's system or the
portal what it publishes on ``centres.responses`` and ``directory.updates``): the reference
implementation.

The signature is HMAC-SHA256, keyed by the prescriber's secret, over ``<timestamp>.<value bytes>``:
the timestamp is the decimal Unix time in seconds and the value bytes are exactly the bytes of the
Kafka record's value (no re-serialisation, so any JSON library can produce them). Three headers
travel with the record:

- ``x-aiguillage-key-id``: the signing key id from the prescriber registry (routing's sender
  registry, ``data/centre_senders.json``, for the centres' topics);
- ``x-aiguillage-timestamp``: the same timestamp as signed;
- ``x-aiguillage-signature``: the lowercase hex digest.

Intake (and routing) refuse a record whose timestamp is outside the replay window, so a captured
record cannot be replayed later. Only the Python standard library is used, so this file can be
copied as is.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

KEY_ID_HEADER = "x-aiguillage-key-id"
TIMESTAMP_HEADER = "x-aiguillage-timestamp"
SIGNATURE_HEADER = "x-aiguillage-signature"
SIGNING_HEADERS = (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)


def signature(secret: bytes, timestamp: int, value: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode("ascii") + value, hashlib.sha256).hexdigest()


def sign(value: bytes, key_id: str, secret: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers to send with ``value``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        KEY_ID_HEADER: key_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, value),
    }


def signature_matches(secret: bytes, headers: Mapping[str, str], value: bytes) -> bool:
    """Constant-time check of the signature header against the timestamp header and ``value``."""
    try:
        timestamp = int(headers[TIMESTAMP_HEADER])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, value)
    # Bytes, not str: compare_digest raises TypeError on non-ASCII text, which would turn a
    # forged header into a processing error instead of a bad signature.
    given = headers.get(SIGNATURE_HEADER, "").lower().encode("utf-8")
    return hmac.compare_digest(expected.encode("ascii"), given)
