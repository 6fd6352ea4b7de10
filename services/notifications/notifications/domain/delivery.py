"""What an attempt's outcome means for a delivery: delivered, retried later, or dead. Pure.

Transient: the same request may well succeed later (timeouts, refused connections, HTTP 5xx, 408,
429, SMTP 4xx). Permanent: repeating it cannot help (other HTTP 4xx, SMTP 5xx, a 3xx we will not
follow). Retries back off exponentially with jitter so that a recovering receiver is not hit by
every pending delivery at the same instant.

Held: nothing was sent because the identity the delivery must carry could not be fetched (intake
restarting, not caught up yet). That is not the receiver's failure, so it does not spend the
delivery's attempts: a held delivery waits on its own, longer schedule (``IdentityWaitPolicy``)
until intake answers, opens the recipient's next channel (the e-mail fallback, without identity)
once the wait is long enough to be worth telling, and dies only when the maximum wait is over.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from aiguillage_common.identity_requests import ANSWERS, Release, status_reason
from aiguillage_schemas.events.notifications import DeliveryChannel, RecipientKind

Outcome = Literal["delivered", "transient", "permanent", "held"]
State = Literal["pending", "delivered", "dead"]
DeadReason = Literal["permanent_failure", "retries_exhausted", "identity_wait_expired"]
# Why a recipient's next channel is opened: its primary died, or it is held for the identity.
FallbackReason = Literal["dead", "identity_wait"]


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


def smtp_result(code: int, latency_ms: int, *, about_message: bool = True) -> AttemptResult:
    """A refusal: 4xx is transient, 5xx permanent when it is about the message (its sender,
    recipient or content). A refused session (greeting, EHLO, STARTTLS, AUTH: say a rotated
    password or our address refused by the relay) is transient whatever its code: nothing is
    wrong with the message, and it goes once the relay or the settings are fixed."""
    permanent = about_message and not 400 <= code < 500
    outcome: Outcome = "permanent" if permanent else "transient"
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
class IdentityWaitPolicy:
    """How long a delivery held for the identity waits, and when the e-mail fallback goes.

    Like the retry schedules of webhook providers: seconds at first, then minutes, then hourly,
    for up to ``max_wait_s`` counted from the first held try; hundredths of a second at first when
    intake is only a little behind routing (a 409), which resolves in well under a second.
    """

    base_delay_s: float = 5.0
    max_delay_s: float = 3600.0
    max_wait_s: float = 72 * 3600.0
    # The recipient's next channel (e-mail, without identity) is opened by the first held try at
    # least this long into the wait: not by the common sub-second lag of intake, which would send
    # an extra e-mail with many offers, but well before the centre would miss the offer.
    fallback_after_s: float = 60.0
    # A try held because intake has not read the offer yet (409: it consumes the same routing
    # events, a little behind) is retried on this base instead: 25-50 ms, 50-100 ms, … The lag
    # is usually tens of milliseconds: the 5 s base made each such offer's webhook wait 2.5-5 s,
    # and a 0.2 s base still put these offers (0.4 % at 20 referrals/s) at 130-200 ms, the p99
    # of submit -> notifications.
    lag_base_delay_s: float = 0.05

    def delay_s(
        self, waits_done: int, rng: random.Random | None = None, *, lagging: bool = False
    ) -> float:
        base = self.lag_base_delay_s if lagging else self.base_delay_s
        ceiling = min(self.max_delay_s, base * 2 ** min(waits_done - 1, 62))
        return (rng or random).uniform(ceiling / 2, ceiling)


# What the identity client records when intake answered 409: the offer is not known there yet.
INTAKE_LAGGING = status_reason(ANSWERS[Release.NOT_YET_KNOWN].status)


@dataclass(frozen=True, slots=True)
class History:
    """What a delivery went through before the try being decided."""

    attempts: int = 0  # attempts counted against ``BackoffPolicy.max_attempts``
    identity_waits: int = 0  # tries held back for the identity (never counted as attempts)
    identity_wait_since: datetime | None = None  # the first held try; never reset
    is_fallback: bool = False  # a fallback does not fall back again


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    next_attempt_at: datetime | None
    dead_reason: DeadReason | None = None
    held: bool = False  # a held try: counts as an identity wait, not as an attempt
    identity_wait_since: datetime | None = None  # to persist when ``held``
    fallback: FallbackReason | None = None  # open the recipient's next channel now, and why


def decide(
    result: AttemptResult,
    history: History,
    policy: BackoffPolicy,
    now: datetime,
    rng: random.Random | None = None,
    identity_policy: IdentityWaitPolicy | None = None,
) -> Decision:
    """What follows the try whose ``result`` is given, for a delivery with that ``history``."""
    if result.outcome == "held":
        lagging = result.identity_release == INTAKE_LAGGING
        return _decide_held(history, identity_policy or IdentityWaitPolicy(), now, rng, lagging)
    attempts_done = history.attempts + 1
    fallback: FallbackReason | None = None if history.is_fallback else "dead"
    if result.outcome == "delivered":
        return Decision("delivered", None)
    if result.outcome == "permanent":
        return Decision("dead", None, "permanent_failure", fallback=fallback)
    if attempts_done >= policy.max_attempts:
        return Decision("dead", None, "retries_exhausted", fallback=fallback)
    return Decision("pending", now + timedelta(seconds=policy.delay_s(attempts_done, rng)))


def _decide_held(
    history: History,
    policy: IdentityWaitPolicy,
    now: datetime,
    rng: random.Random | None,
    lagging: bool = False,
) -> Decision:
    since = history.identity_wait_since or now
    deadline = since + timedelta(seconds=policy.max_wait_s)
    waited = now - since
    fallback: FallbackReason | None = None
    if not history.is_fallback and waited >= timedelta(seconds=policy.fallback_after_s):
        # Asked on every held try past the threshold: the fallback's id derives from this
        # delivery's and is inserted with ON CONFLICT DO NOTHING, so it exists once.
        fallback = "identity_wait"
    if now >= deadline:
        return Decision(
            "dead",
            None,
            "identity_wait_expired",
            held=True,
            identity_wait_since=since,
            fallback=None if history.is_fallback else "dead",
        )
    delay = policy.delay_s(history.identity_waits + 1, rng, lagging=lagging)
    retry_at = now + timedelta(seconds=delay)
    # The last try lands on the deadline itself, so the maximum wait is what was promised.
    return Decision(
        "pending",
        min(retry_at, deadline),
        held=True,
        identity_wait_since=since,
        fallback=fallback,
    )


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
    attempts: int  # attempts made before this one (held tries are not attempts)
    topic: str
    site_id: str | None
    title: str
    body: str
    email_text: str
    email_html: str
    facts: dict[str, str]
    caused_by_event_id: uuid.UUID | None = None  # the event this notification tells about
    identity_waits: int = 0
    identity_wait_since: datetime | None = None
    fallback_reason: FallbackReason | None = None  # for a fallback: why it was opened

    @property
    def history(self) -> History:
        return History(
            self.attempts,
            self.identity_waits,
            self.identity_wait_since,
            is_fallback=self.fallback_for is not None,
        )

    @property
    def tries(self) -> int:
        """Every try so far, held ones included: the delivery log's row count."""
        return self.attempts + self.identity_waits


@dataclass(frozen=True, slots=True)
class Settled:
    """A try whose outcome is known and decided: what the delivery log and the delivery record."""

    job: DeliveryJob
    attempt_id: int  # its 'started' row
    result: AttemptResult
    decision: Decision

    @property
    def last_error(self) -> str | None:
        if self.decision.dead_reason == "identity_wait_expired":
            return self.decision.dead_reason
        return self.result.error_class


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """A pending delivery a dead worker held, made due at once; ``interrupted_attempt`` is the
    attempt it had started (its outcome unknown: it is re-sent with the same idempotency key),
    None when it was leased but never started."""

    delivery_id: uuid.UUID
    referral_id: str
    correlation_id: uuid.UUID
    recipient_kind: RecipientKind
    recipient_id: str
    channel: DeliveryChannel
    interrupted_attempt: int | None
