"""A request to intake's identity API (``docs/intake.md``, identity release), as notifications
(for an offer's webhook) and the portal (for the offer page) both make it, and how its answer is
read. Signed with the service secret; the person read back is never logged or stored here."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, sign_request

# Intake refused for a reason retrying cannot change.
REFUSALS: dict[int, str] = {403: "not_holder", 404: "unknown", 410: "gone"}


def identity_request(
    referral_id: str, centre_id: str, offer_event_id: UUID | None, secret: bytes, now_s: int
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one signed request."""
    body = json.dumps(
        {
            "referral_id": referral_id,
            "centre_id": centre_id,
            "offer_event_id": str(offer_event_id) if offer_event_id else None,
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        SERVICE_SIGNATURE_HEADER: sign_request(secret, now_s, body),
    }
    return body, headers


def person_in(status: int, body: bytes) -> dict[str, Any] | None:
    """The person of a 200 answer; None for any other answer or a malformed one."""
    if status != 200:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    person = document.get("person") if isinstance(document, dict) else None
    return person if isinstance(person, dict) else None
