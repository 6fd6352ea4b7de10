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


@dataclass(frozen=True, slots=True)
class Problem:
    """A machine-readable reason, a human message that never echoes the input, and where."""

    reason: RejectionReason
    message: str
    field_path: str | None = None
    # Set only once the sender is authenticated, so that it (and nobody it claims to be) is told.
    prescriber_id: str | None = None


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
    """Parse ``raw`` into the accepted event class that matches its type and version."""
    document = _json_object(raw)
    cls = _select_class(document, accepted)
    try:
        return cls.model_validate(document)
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
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidMessage(
            Problem(
                RejectionReason.NOT_JSON,
                f"the value is not JSON ({error.msg} at line {error.lineno} column {error.colno})",
            )
        ) from None
    if not isinstance(document, dict):
        raise InvalidMessage(
            Problem(RejectionReason.WRONG_TYPE, "the value must be a JSON object", field_path="")
        )
    return document


def _select_class(document: dict[str, Any], accepted: Sequence[type[Envelope]]) -> type[Envelope]:
    event_type = document.get("event_type")
    if event_type is None:
        raise InvalidMessage(
            Problem(RejectionReason.MISSING_FIELD, "event_type is required", "event_type")
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
    for cls in same_type:
        if version == cls.SCHEMA_VERSION and not isinstance(version, bool):
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
    """The first validation error, classified. Messages come from pydantic with input hidden."""
    first = error.errors(include_input=False, include_url=False)[0]
    return Problem(_reason_for(first), _message_for(first), _path_of(first))


def _path_of(detail: ErrorDetails) -> str:
    return ".".join(str(part) for part in detail["loc"])


def _message_for(detail: ErrorDetails) -> str:
    path = _path_of(detail) or "the message"
    if detail["type"] == "extra_forbidden":
        return f"{path} is not a field of this schema"
    return f"{path}: {detail['msg']}"[:500]


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
