"""What an attempt's outcome means for a delivery: delivered, retried later, or dead. Pure.

Transient: the same request may well succeed later (timeouts, refused connections, HTTP 5xx, 408,
429, SMTP 4xx). Permanent: repeating it cannot help (other HTTP 4xx, SMTP 5xx, a 3xx we will not
follow). Retries back off exponentially with jitter so that a recovering receiver is not hit by
every pending delivery at the same instant.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from aiguillage_schemas.events.notifications import DeliveryChannel, RecipientKind

Outcome = Literal["delivered", "transient", "permanent"]
State = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: Outcome
    latency_ms: int
    error_class: str | None = None  # e.g. "http_500", "smtp_451", "timeout", "connect"
    http_status: int | None = None
    smtp_code: int | None = None
    # For deliveries that carry the person's identity: what intake answered (never the identity).
    identity_release: str | None = None


def http_result(status: int, latency_ms: int) -> AttemptResult:
    if 200 <= status < 300:
        return AttemptResult("delivered", latency_ms, None, status)
    transient = status >= 500 or status in (408, 429)
    return AttemptResult(
        "transient" if transient else "permanent", latency_ms, f"http_{status}", status
    )


def smtp_result(code: int, latency_ms: int) -> AttemptResult:
    outcome: Outcome = "transient" if 400 <= code < 500 else "permanent"
    return AttemptResult(outcome, latency_ms, f"smtp_{code}", smtp_code=code)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    max_attempts: int = 8
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0

    def delay_s(self, attempts_done: int, rng: random.Random | None = None) -> float:
        """Jitter within the upper half of the exponential ceiling: spread, yet still growing."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempts_done - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    next_attempt_at: datetime | None
    dead_reason: Literal["permanent_failure", "retries_exhausted"] | None = None


def decide(
    result: AttemptResult,
    attempts_done: int,
    policy: BackoffPolicy,
    now: datetime,
    rng: random.Random | None = None,
) -> Decision:
    """``attempts_done`` counts the attempt just made."""
    if result.outcome == "delivered":
        return Decision("delivered", None)
    if result.outcome == "permanent":
        return Decision("dead", None, "permanent_failure")
    if attempts_done >= policy.max_attempts:
        return Decision("dead", None, "retries_exhausted")
    return Decision("pending", now + timedelta(seconds=policy.delay_s(attempts_done, rng)))


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """A due delivery with what its channel needs to send it."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    referral_id: str
    correlation_id: uuid.UUID
    recipient_kind: RecipientKind
    recipient_id: str
    channel: DeliveryChannel
    target: str
    position: int
    fallback_for: uuid.UUID | None
    fallback_from_channel: str | None  # the failed primary's channel, for a fallback delivery
    attempts: int  # attempts made before this one
    topic: str
    site_id: str | None
    title: str
    body: str
    email_text: str
    email_html: str
    facts: dict[str, str]
    caused_by_event_id: uuid.UUID | None = None  # the event this notification tells about
