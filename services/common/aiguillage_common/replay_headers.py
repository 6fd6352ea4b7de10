"""Headers an operator's replay adds to a record it puts back on its source topic. Pure.

A replayed record reaches the broker again long after it was first published, so checks that
compare a signed time with the broker's time (intake's replay window) must measure against the
*original* arrival. That original time travels in a header; since anyone could write a header,
it only counts when signed with the operations secret, over the original coordinates, the
original time and the value's hash (so it cannot be moved to another record).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiguillage_common.codec import sha256_hex
from aiguillage_common.service_auth import sign_request, verify_request

REPLAY_OF_HEADER = "x-aiguillage-replay-of"  # "<topic>:<partition>:<offset>" of the original
REPLAY_TIMESTAMP_HEADER = "x-aiguillage-replay-timestamp"  # original broker time, ms
REPLAY_SIGNATURE_HEADER = "x-aiguillage-replay-signature"  # t=<s>,v1=<hmac>, service_auth scheme
REPLAY_HEADERS = (REPLAY_OF_HEADER, REPLAY_TIMESTAMP_HEADER, REPLAY_SIGNATURE_HEADER)

# How far the replay's own signing time may be from when the replayed record reached the broker.
REPLAY_SIGNATURE_WINDOW_S = 300.0


def _signed_text(replay_of: str, original_timestamp_ms: int, value: bytes | None) -> bytes:
    return f"{replay_of}|{original_timestamp_ms}|{sha256_hex(value)}".encode()


def replay_headers(
    secret: bytes, replay_of: str, original_timestamp_ms: int, value: bytes | None, now_s: int
) -> dict[str, str]:
    """The three headers to add to a replayed record (its other headers are kept as they were)."""
    return {
        REPLAY_OF_HEADER: replay_of,
        REPLAY_TIMESTAMP_HEADER: str(original_timestamp_ms),
        REPLAY_SIGNATURE_HEADER: sign_request(
            secret, now_s, _signed_text(replay_of, original_timestamp_ms, value)
        ),
    }


def original_timestamp_ms(
    headers: Mapping[str, str], value: bytes | None, secret: bytes, broker_time_s: float
) -> int | None:
    """The original broker time of a replayed record, or None when the record is no verified
    replay (no headers, no secret configured, a bad signature, or a malformed timestamp).

    ``broker_time_s``: when the replayed record itself reached the broker, so a replay that
    waits in the topic (its consumer down) is still recognised when it is finally read.
    """
    replay_of = headers.get(REPLAY_OF_HEADER)
    stamp = headers.get(REPLAY_TIMESTAMP_HEADER)
    signature = headers.get(REPLAY_SIGNATURE_HEADER)
    if not secret or not replay_of or not stamp or not signature:
        return None
    # Only the canonical form the signer writes: int() would also take "+1", " 1", "1_0" and
    # non-ASCII digits, several spellings for one signed value.
    if not (stamp.isascii() and stamp.isdigit()):
        return None
    # hmac.compare_digest raises TypeError on non-ASCII text instead of saying "no match".
    if not signature.isascii():
        return None
    original = int(stamp)
    text = _signed_text(replay_of, original, value)
    if not verify_request(secret, signature, text, broker_time_s, REPLAY_SIGNATURE_WINDOW_S):
        return None
    return original
