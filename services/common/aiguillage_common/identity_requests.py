"""A request to intake's identity API (``docs/intake.md``, identity release), as notifications
(for an offer's webhook) and the portal (for the offer page) both make it, what intake answers,
and how its answer is read. Signed with the service secret; the person read back is never logged
or stored here."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal
from uuid import UUID

from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, sign_request


class Release(enum.StrEnum):
    """What intake decides on a request for the identity; also its audit, log and metric value,
    and the reason a caller records for a refusal."""

    GRANTED = "granted"
    NOT_HOLDER = "not_holder"
    UNKNOWN = "unknown"
    GONE = "gone"
    NOT_YET_KNOWN = "not_yet_known"


# What the asking service does with an answer: use the person, go on without it (a refusal
# retrying cannot change), or hold back and ask again later.
Outcome = Literal["granted", "refused", "unavailable"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # the HTTP status intake answers with
    outcome: Outcome  # what the asking service does when it reads that status


# The one table of the identity API's answers: intake answers with it, notifications and the
# portal read it back. 409 is no refusal: intake has not yet read the offer the request names
# (it consumes the same routing events a little later), so the caller asks again.
ANSWERS: Final[Mapping[Release, Answer]] = MappingProxyType(
    {
        Release.GRANTED: Answer(200, "granted"),
        Release.NOT_HOLDER: Answer(403, "refused"),
        Release.UNKNOWN: Answer(404, "refused"),
        Release.GONE: Answer(410, "refused"),
        Release.NOT_YET_KNOWN: Answer(409, "unavailable"),
    }
)
_RELEASE_OF_STATUS: Final[Mapping[int, Release]] = MappingProxyType(
    {answer.status: release for release, answer in ANSWERS.items()}
)


def status_reason(status: int) -> str:
    """What a caller records for an answer it cannot use: 'http_409', 'http_503'..."""
    return f"http_{status}"


def read_answer(status: int, person: dict[str, Any] | None) -> tuple[Outcome, str]:
    """The outcome of intake's answer and the reason the caller records: 'granted' with the
    person; a refusal with its release ('not_holder'...); any other answer (409, 5xx, a 401 from
    a wrong secret, a 200 without a person) is unavailable, worth asking again, with its status.
    ``person`` is ``person_in``'s: there is one only in a 200 answer, so only with a grant."""
    release = _RELEASE_OF_STATUS.get(status)
    if release is not None:
        outcome = ANSWERS[release].outcome
        if outcome == "refused" or (outcome == "granted" and person is not None):
            return outcome, str(release)
    return "unavailable", status_reason(status)


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
