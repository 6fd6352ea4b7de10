"""The versioned envelope every event travels in.

The envelope is what operators and consumers rely on without knowing the payload: a unique event id
(consumers deduplicate on it), the type and schema version (consumers dispatch on them), when and by
whom it was produced, the correlation id that ties one referral's journey together across services,
and the subject, the pseudonymous referral id, which is also the Kafka key so that one referral's
events stay ordered on one partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# Inbound models hide the offending input in validation errors: a pydantic error message would
# otherwise carry a person's name or a free-text field into a log line or a rejection event.
STRICT_CONFIG = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Contract(BaseModel):
    """Base of every model on the wire: unknown fields are refused, values are immutable."""

    model_config = STRICT_CONFIG


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(Contract):
    """Fields common to every event. Subclasses pin ``event_type`` and ``schema_version``."""

    EVENT_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; consumers dedupe on it.")
    event_type: str = Field(description="Stable name of the event, e.g. 'referral.submitted'.")
    schema_version: int = Field(ge=1, description="Version of this event type's payload schema.")
    occurred_at: AwareDatetime = Field(
        default_factory=utc_now, description="When the fact happened (UTC)."
    )
    source: str = Field(
        min_length=1, max_length=128, description="Producer: a service or a prescriber id."
    )
    correlation_id: UUID = Field(description="Ties together every event of one referral journey.")
    subject: str = Field(
        min_length=1,
        max_length=64,
        description="Pseudonymous referral id; also the Kafka message key.",
    )

    @classmethod
    def schema_name(cls) -> str:
        return f"{cls.EVENT_TYPE}.v{cls.SCHEMA_VERSION}"
