"""The versioned envelope every event travels in.

The envelope is what operators and consumers rely on without knowing the payload: a unique event id
(consumers deduplicate on it), the type and schema version (consumers dispatch on them), when and by
whom it was produced, the correlation id that ties one referral's journey together across services,
and the subject, the pseudonymous referral id, which is also the Kafka key so that one referral's
events stay ordered on one partition.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid4

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Inbound models hide the offending input in validation errors: a pydantic error message would
# otherwise carry a person's name or a free-text field into a log line or a rejection event.
STRICT_CONFIG = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

# What the published JSON Schemas say (format uuid / date / date-time), checked on the wire so
# that the server refuses what the schema refuses. Pydantic alone accepts more, even in strict
# mode: "86400" as a date (a Unix time), "urn:uuid:…" or 32 bare hex digits as a UUID,
# "2026-01-01 10:00Z" (no seconds, a space) as a date-time. ASCII digits only ([0-9], not \d,
# which matches any Unicode digit in Python and Rust regexes but not in JavaScript's).
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


# Each parses a string itself, after checking its form: validation is strict (see
# aiguillage_common.codec), and a strict validator takes a date, not a string, from a function.
def _canonical_uuid(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _CANONICAL_UUID.fullmatch(value):
        raise PydanticCustomError(
            "uuid_parsing", "Input should be a UUID written as 8-4-4-4-12 hexadecimal digits"
        )
    return UUID(value)


def _iso_date(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _ISO_DATE.fullmatch(value):
        raise PydanticCustomError("date_parsing", "Input should be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "date_parsing", "Input should be a valid date: the month or day is out of range"
        ) from None


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_parsing",
            "Input should be an RFC 3339 date-time with seconds and an offset, "
            "e.g. 2026-11-30T09:15:00Z",
        )
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise PydanticCustomError(
            "datetime_parsing", "Input should be a valid date-time: a field is out of range"
        ) from None


WireUUID = Annotated[UUID, BeforeValidator(_canonical_uuid)]
WireDate = Annotated[date, BeforeValidator(_iso_date)]
WireDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
# Required in every event on the wire (the JSON Schemas list them), defaulted only when an event
# is built in Python.
WIRE_REQUIRED = ("event_id", "event_type", "schema_version")


def _wire_required(schema: dict[str, Any]) -> None:
    required = schema.setdefault("required", [])
    schema["required"] = [*WIRE_REQUIRED, *(name for name in required if name not in WIRE_REQUIRED)]


class Contract(BaseModel):
    """Base of every model on the wire: unknown fields are refused, values are immutable."""

    model_config = STRICT_CONFIG


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(Contract):
    """Fields common to every event. Subclasses pin ``event_type`` and ``schema_version``."""

    model_config = ConfigDict(**STRICT_CONFIG, json_schema_extra=_wire_required)

    EVENT_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    event_id: WireUUID = Field(
        default_factory=uuid4,
        validate_default=True,
        description="Unique id, fresh for each event (required); consumers dedupe on it.",
    )
    event_type: str = Field(description="Stable name of the event, e.g. 'referral.submitted'.")
    schema_version: int = Field(ge=1, description="Version of this event type's payload schema.")
    occurred_at: WireDatetime = Field(
        default_factory=utc_now, description="When the fact happened (RFC 3339, with an offset)."
    )
    source: str = Field(
        min_length=1, max_length=128, description="Producer: a service or a prescriber id."
    )
    correlation_id: WireUUID = Field(
        description="Ties together every event of one referral journey."
    )
    subject: str = Field(
        min_length=1,
        max_length=64,
        description="Pseudonymous referral id; also the Kafka message key.",
    )

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id_on_the_wire(cls, value: Any, info: ValidationInfo) -> Any:
        """Required in JSON: consumers deduplicate on it, so a record without one would get a
        new random id at each delivery and its redelivery would count twice. Code building an
        event in Python gets a fresh one (a JSON input can never hold a UUID object yet)."""
        if info.mode == "json" and isinstance(value, UUID):
            raise PydanticCustomError("missing", "Field required")
        return value

    @classmethod
    def schema_name(cls) -> str:
        return f"{cls.EVENT_TYPE}.v{cls.SCHEMA_VERSION}"
