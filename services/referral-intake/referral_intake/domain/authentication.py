"""Is a record really from the prescriber it names, and fresh? Pure: the clock is a value.

Checked before the body is parsed, so unauthenticated input is answered with nothing but an
authentication reason, and only an authenticated sender is named (and notified) in a rejection.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiguillage_common.codec import Problem
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_matches,
)
from aiguillage_schemas.vocabulary import RejectionReason


def signing_key_id(headers: Mapping[str, str]) -> str | Problem:
    missing = [h for h in (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not headers.get(h)]
    if missing:
        return Problem(
            RejectionReason.BAD_SIGNATURE,
            f"the record is not signed (missing header {missing[0]})",
            f"headers.{missing[0]}",
        )
    return headers[KEY_ID_HEADER]


def authenticate(
    headers: Mapping[str, str],
    value: bytes,
    entry: PrescriberEntry | None,
    secret: bytes | None,
    now_s: float,
    window_s: int,
) -> PrescriberEntry | Problem:
    if entry is None:
        return Problem(
            RejectionReason.UNKNOWN_PRESCRIBER,
            "the signing key id belongs to no active prescriber",
            f"headers.{KEY_ID_HEADER}",
        )
    if secret is None:
        return Problem(
            RejectionReason.UNKNOWN_PRESCRIBER,
            "no secret is provisioned for this signing key id; contact the operators",
            f"headers.{KEY_ID_HEADER}",
        )
    # The key id is real, so its owner is told: either it signs wrongly, or someone tries.
    if not signature_matches(secret, headers, value):
        return Problem(
            RejectionReason.BAD_SIGNATURE,
            "the signature does not match the value and timestamp",
            f"headers.{SIGNATURE_HEADER}",
            entry.prescriber_id,
        )
    # Authentic from here on, so the timestamp can be trusted to say when it was signed.
    if abs(now_s - int(headers[TIMESTAMP_HEADER])) > window_s:
        return Problem(
            RejectionReason.REPLAYED_MESSAGE,
            f"the signed timestamp is more than {window_s} s away from now",
            f"headers.{TIMESTAMP_HEADER}",
            entry.prescriber_id,
        )
    return entry
