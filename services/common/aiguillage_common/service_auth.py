"""Service-to-service request signing: HMAC-SHA256 of a shared secret over timestamp and body.

The same scheme as the centres' webhooks (``t=<unix seconds>,v1=<hex HMAC(secret, "<t>.<body>")>``)
so there is one scheme to review. The timestamp bounds replays to a window; the body is signed
byte for byte, so a captured request cannot be replayed for another referral or centre. Pure: the
clock is passed in.
"""

from __future__ import annotations

import hashlib
import hmac

SERVICE_SIGNATURE_HEADER = "X-Aiguillage-Service-Signature"


def sign_request(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_request(
    secret: bytes, header: str | None, body: bytes, now: float, window_s: float
) -> bool:
    """True only for a well-formed header, inside the window, whose MAC matches (constant time)."""
    if not secret or not header:
        return False
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > window_s:
        return False
    expected = sign_request(secret, timestamp, body).split("v1=", 1)[1]
    # Bytes: compare_digest raises TypeError on non-ASCII text; a bad header is just "no".
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8"))
