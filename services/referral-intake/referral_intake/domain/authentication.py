"""Is a record really from the prescriber it names, and fresh? Pure: every time is a value.

Checked before the body is parsed, so unauthenticated input is answered with nothing but an
authentication reason, and only an authenticated sender is named (and notified) in a rejection.

The checks themselves (headers, HMAC, window measured from the broker's LogAppendTime or an
operator's verified replay) are shared with routing in ``aiguillage_common.signed_records``; here
they are named with intake's published reason codes, which predate routing's.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiguillage_common.codec import Problem
from aiguillage_common.signed_records import (
    ReferenceSource,
    SignatureFault,
    WindowReference,
    missing_signing_header,
    verify,
    window_reference,
)
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.signing import KEY_ID_HEADER
from aiguillage_schemas.vocabulary import RejectionReason

__all__ = [
    "ReferenceSource",
    "WindowReference",
    "authenticate",
    "signing_key_id",
    "window_reference",
]

# Intake's codes: an unsigned record was always a bad signature, an unknown key an unknown
# prescriber, a stale one a replay (referrals.rejected contract).
_REASONS = {
    SignatureFault.UNSIGNED: RejectionReason.BAD_SIGNATURE,
    SignatureFault.UNKNOWN_KEY: RejectionReason.UNKNOWN_PRESCRIBER,
    SignatureFault.BAD_SIGNATURE: RejectionReason.BAD_SIGNATURE,
    SignatureFault.STALE: RejectionReason.REPLAYED_MESSAGE,
}


def signing_key_id(headers: Mapping[str, str]) -> str | Problem:
    missing = missing_signing_header(headers)
    if missing is not None:
        return Problem(_REASONS[missing.fault], missing.message, missing.field_path)
    return headers[KEY_ID_HEADER]


def authenticate(
    headers: Mapping[str, str],
    value: bytes,
    entry: PrescriberEntry | None,
    secret: bytes | None,
    reference_s: float,
    window_s: int,
) -> PrescriberEntry | Problem:
    """The registry entry of the sender, or why it is refused. ``reference_s``: when the record
    reached the broker (``window_reference``), the time its signed timestamp must be close to."""
    refusal = verify(headers, value, entry is not None, secret, reference_s, window_s)
    if refusal is None:
        assert entry is not None
        return entry
    message = refusal.message
    if refusal.fault is SignatureFault.UNKNOWN_KEY and entry is None:
        message = "the signing key id belongs to no active prescriber"
    # Once the key id is real, its owner is told: either it signs wrongly, or someone tries.
    named = entry.prescriber_id if entry is not None and secret is not None else None
    return Problem(_REASONS[refusal.fault], message, refusal.field_path, named)
