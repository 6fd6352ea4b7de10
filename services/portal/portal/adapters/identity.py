"""Asks intake, at each view of the offer page, for the person's identity, as the holding centre.

The same signed request as notifications' webhook lookups (``docs/intake.md``, identity release):
intake checks that this centre holds the referral and audits the request. The answer lives in
memory for one page render: never stored, never logged, never in an exception message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, sign_request

Outcome = Literal["granted", "refused", "unavailable", "not_configured"]
REFUSALS = {403: "not_holder", 404: "unknown", 410: "gone"}


@dataclass(frozen=True, slots=True)
class IdentityAnswer:
    outcome: Outcome
    reason: str
    person: dict[str, Any] | None = None

    def __repr__(self) -> str:
        # Never print the person, whatever a log line or a traceback shows of this object.
        return f"IdentityAnswer(outcome={self.outcome!r}, reason={self.reason!r})"


class IdentityClient:
    def __init__(
        self,
        client: httpx.AsyncClient | None,
        url: str,
        secret: bytes,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._clock = clock

    async def lookup(self, referral_id: str, centre_id: str) -> IdentityAnswer:
        if self._client is None or not self._url or not self._secret:
            return IdentityAnswer("not_configured", "not_configured")
        body = json.dumps(
            {"referral_id": referral_id, "centre_id": centre_id, "offer_event_id": None},
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SERVICE_SIGNATURE_HEADER: sign_request(self._secret, int(self._clock()), body),
        }
        try:
            response = await self._client.post(
                self._url, content=body, headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as error:
            return IdentityAnswer("unavailable", type(error).__name__.lower())
        if response.status_code == 200:
            try:
                person = response.json().get("person")
            except (ValueError, AttributeError):
                person = None
            if isinstance(person, dict):
                return IdentityAnswer("granted", "granted", person)
            return IdentityAnswer("unavailable", "bad_answer")
        if response.status_code in REFUSALS:
            return IdentityAnswer("refused", REFUSALS[response.status_code])
        return IdentityAnswer("unavailable", f"http_{response.status_code}")
