"""Webhook channel: a signed HTTPS POST with a JSON body, an idempotency key and short timeouts.

Signature: ``X-Aiguillage-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
the Stripe-like scheme receivers already know: the timestamp lets them refuse replays, the body is
signed byte for byte. ``Idempotency-Key`` is the delivery id, identical on every retry, so a
receiver that saw a call whose answer was lost can recognise the re-sent one.

An offer to a centre carries the person's identity under ``"person"`` when an identity source is
configured: it is asked right before each attempt (so a referral cancelled or re-routed meanwhile is
never revealed), kept in memory for that attempt only, and what intake answered is recorded with the
attempt (see ``notifications.domain.identity``). When intake cannot answer, nothing is posted: the
try is ``held`` and waits for intake (``notifications.domain.delivery.IdentityWaitPolicy``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from uuid import UUID

from aiguillage_common.service_auth import sign_request, verify_request
from notifications.adapters.http import HttpClient, HttpFailure
from notifications.domain.delivery import AttemptResult, DeliveryJob, http_result
from notifications.domain.identity import IdentityLookup, carries_identity

SIGNATURE_HEADER = "X-Aiguillage-Signature"


# One signature scheme for centres' webhooks and service-to-service calls: one thing to review.
sign = sign_request


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does; used by the tests' and the demo's receivers."""
    return verify_request(secret, header, body, now, tolerance_s)


def payload(job: DeliveryJob) -> dict[str, Any]:
    return {
        "delivery_id": str(job.delivery_id),
        "notification_id": str(job.notification_id),
        "topic": job.topic,
        "reference": job.referral_id,
        "correlation_id": str(job.correlation_id),
        "recipient": {"kind": job.recipient_kind, "id": job.recipient_id},
        "site_id": job.site_id,
        "title": job.title,
        "text": job.body,
        "facts": job.facts,
        "fallback_from": job.fallback_from_channel,
    }


class IdentitySource(Protocol):
    async def lookup(
        self, referral_id: str, centre_id: str, offer_event_id: UUID | None
    ) -> IdentityLookup: ...


class WebhookSender:
    def __init__(
        self,
        client: HttpClient,
        secret_for: Callable[[str, str], bytes | None],
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        identity: IdentitySource | None = None,
    ) -> None:
        self._client = client
        self._secret_for = secret_for
        self._timeout_s = timeout_s
        self._clock = clock
        self._identity = identity

    async def send(self, job: DeliveryJob) -> AttemptResult:
        secret = self._secret_for(job.recipient_kind, job.recipient_id)
        if not secret:
            return AttemptResult("permanent", 0, "no_webhook_secret")
        document = payload(job)
        release: str | None = None
        if self._identity is not None and carries_identity(
            job.recipient_kind, job.channel, job.topic
        ):
            started = time.monotonic()
            found = await self._identity.lookup(
                job.referral_id, job.recipient_id, job.caused_by_event_id
            )
            release = found.reason
            if found.outcome == "unavailable":
                # Held back, rather than sent without the identity the centre is entitled to;
                # nothing was sent, so the delivery's own schedule of identity waits applies.
                return AttemptResult(
                    "held", _ms(started), "identity_unavailable", identity_release=release
                )
            if found.person is not None:
                document["person"] = found.person
        result = await self._post(job, secret, document)
        return dataclasses.replace(result, identity_release=release) if release else result

    async def _post(
        self, job: DeliveryJob, secret: bytes, document: dict[str, Any]
    ) -> AttemptResult:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        headers: Mapping[str, str] = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(secret, int(self._clock()), body),
            "Idempotency-Key": str(job.delivery_id),
            "X-Correlation-Id": str(job.correlation_id),
            "X-Aiguillage-Attempt": str(job.attempts + 1),
        }
        started = time.monotonic()
        try:
            answer = await self._client.post(job.target, body, headers, self._timeout_s)
        except HttpFailure as failure:
            if failure.kind == "bad_url":
                return AttemptResult("permanent", _ms(started), "bad_url")
            kind = failure.name if failure.kind == "transport" else failure.kind
            return AttemptResult("transient", _ms(started), kind)
        return http_result(answer.status, _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
