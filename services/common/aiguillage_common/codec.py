"""Bytes <-> contracts. Decoding never raises anything but ``InvalidMessage`` with a precise reason.

Kept pure (no I/O) so that every rejection reason is unit-testable, and so that services decode in
their own handler rather than in FastStream's, where a bad payload would fail before our code runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.vocabulary import RejectionReason

# A rejection lists this many problems at most (the message says how many there were in all).
MAX_DETAILS = 10
MESSAGE_MAX = 500  # Rejection.message's bound


@dataclass(frozen=True, slots=True)
class Detail:
    """One problem found in a message: reason, a message that never echoes input, and where."""

    reason: RejectionReason
    message: str
    field_path: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """A machine-readable reason, a human message that never echoes the input, and where.

    ``details`` lists every problem found (at most ``MAX_DETAILS``) when there can be several,
    as for a payload that breaks several rules of its schema; the first is also ``reason`` /
    ``message`` / ``field_path``. Empty for a problem that stands alone (use ``all_details``).
    """

    reason: RejectionReason
    message: str
    field_path: str | None = None
    # Set only once the sender is authenticated, so that it (and nobody it claims to be) is told.
    prescriber_id: str | None = None
    details: tuple[Detail, ...] = ()

    def all_details(self) -> tuple[Detail, ...]:
        return self.details or (Detail(self.reason, self.message, self.field_path),)


class InvalidMessage(Exception):
    """A permanent failure: the same bytes will never be accepted, so retrying is pointless."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem


def sha256_hex(raw: bytes | None) -> str:
    return hashlib.sha256(raw or b"").hexdigest()


def encode_event(event: Envelope) -> bytes:
    return event.model_dump_json().encode("utf-8")


def decode_event(raw: bytes | None, accepted: Sequence[type[Envelope]]) -> Envelope:
    """Parse ``raw`` into the accepted event class that matches its type and version.

    Validation is strict (pydantic strict mode on the JSON, plus the wire formats of
    ``aiguillage_schemas.envelope``): ``"yes"``, ``1`` or ``"on"`` are not booleans, a number is
    not a date, a missing ``event_id`` is missing. So what is accepted here is what the published
    JSON Schema accepts. Every validation error is reported (the first ``MAX_DETAILS``).
    """
    document = _json_object(raw)
    cls = _select_class(document, accepted)
    assert raw is not None  # _json_object refused an empty value
    try:
        return cls.model_validate_json(raw, strict=True)
    except ValidationError as error:
        raise InvalidMessage(problem_from_validation(error)) from None


def _json_object(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        raise InvalidMessage(Problem(RejectionReason.EMPTY_MESSAGE, "the message has no value"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessage(
            Problem(RejectionReason.NOT_UTF8, f"the value is not UTF-8 (byte {error.start})")
        ) from None
    try:
        document = json.loads(text, parse_constant=_not_a_json_constant)
    except json.JSONDecodeError as error:
        raise InvalidMessage(
            Problem(
                RejectionReason.NOT_JSON,
                f"the value is not JSON ({error.msg} at line {error.lineno} column {error.colno})",
            )
        ) from None
    except (ValueError, RecursionError) as error:
        # NaN / Infinity (not JSON), an integer of thousands of digits, nesting too deep.
        raise InvalidMessage(
            Problem(RejectionReason.NOT_JSON, f"the value is not JSON we read ({_why(error)})")
        ) from None
    if not isinstance(document, dict):
        raise InvalidMessage(
            Problem(RejectionReason.WRONG_TYPE, "the value must be a JSON object", field_path="")
        )
    return document


def _not_a_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _why(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if "is not a JSON value" in str(error):
        return str(error)
    return "a number too long"


def _select_class(document: dict[str, Any], accepted: Sequence[type[Envelope]]) -> type[Envelope]:
    event_type = document.get("event_type")
    if event_type is None:
        raise InvalidMessage(
            Problem(RejectionReason.MISSING_FIELD, "event_type is required", "event_type")
        )
    if not isinstance(event_type, str):
        raise InvalidMessage(
            Problem(RejectionReason.WRONG_TYPE, "event_type must be a string", "event_type")
        )
    same_type = [cls for cls in accepted if event_type == cls.EVENT_TYPE]
    if not same_type:
        known = ", ".join(sorted({cls.EVENT_TYPE for cls in accepted}))
        raise InvalidMessage(
            Problem(
                RejectionReason.UNKNOWN_EVENT_TYPE,
                f"event_type is not one this topic accepts (accepted: {known})",
                "event_type",
            )
        )
    version = document.get("schema_version")
    if version is None:
        raise InvalidMessage(
            Problem(RejectionReason.MISSING_FIELD, "schema_version is required", "schema_version")
        )
    # An integer, not "2" nor true (JSON Schema: "type": "integer"); an unsupported one after.
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # 2.0 is the integer 2 for JSON Schema too
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidMessage(
            Problem(
                RejectionReason.WRONG_TYPE,
                "schema_version must be an integer, e.g. 2",
                "schema_version",
            )
        )
    for cls in same_type:
        if version == cls.SCHEMA_VERSION:
            return cls
    supported = ", ".join(str(cls.SCHEMA_VERSION) for cls in same_type)
    raise InvalidMessage(
        Problem(
            RejectionReason.UNKNOWN_SCHEMA_VERSION,
            f"schema_version is not supported for {event_type} (supported: {supported})",
            "schema_version",
        )
    )


def problem_from_validation(error: ValidationError) -> Problem:
    """Every validation error, classified (the first ``MAX_DETAILS``); the first one is also the
    problem's reason and field path. Messages come from pydantic with the input hidden."""
    found = error.errors(include_input=False, include_url=False)
    details = tuple(
        Detail(_reason_for(detail), _message_for(detail), _path_of(detail))
        for detail in found[:MAX_DETAILS]
    )
    first = details[0]
    return Problem(first.reason, _summary(details, len(found)), first.field_path, details=details)


def _summary(details: Sequence[Detail], total: int) -> str:
    """The first message alone, or how many problems there are and each in turn (bounded)."""
    if total == 1:
        return details[0].message
    listed = "; ".join(detail.message for detail in details)
    more = f" (first {len(details)} listed)" if total > len(details) else ""
    text = f"{total} problems{more}: {listed}"
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def _path_of(detail: ErrorDetails) -> str:
    return ".".join(str(part) for part in detail["loc"])


def _message_for(detail: ErrorDetails) -> str:
    path = _path_of(detail) or "the message"
    if detail["type"] == "extra_forbidden":
        return f"{path} is not a field of this schema"
    return f"{path}: {detail['msg']}"[:MESSAGE_MAX]


def _reason_for(detail: ErrorDetails) -> RejectionReason:
    kind = detail["type"]
    if kind == "missing":
        return RejectionReason.MISSING_FIELD
    if kind == "enum":
        return RejectionReason.UNKNOWN_ENUM_VALUE
    if kind.startswith(("date", "datetime")) and kind not in ("date_type", "datetime_type"):
        return RejectionReason.IMPOSSIBLE_DATE
    if kind.endswith(("_type", "_parsing")) or kind in ("model_attributes_type", "list_type"):
        return RejectionReason.WRONG_TYPE
    return RejectionReason.INVALID_VALUE
