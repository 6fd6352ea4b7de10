"""Asks intake, at each view of the offer page, for the person's identity, as the holding centre.

The same signed request as notifications' webhook lookups (``docs/intake.md``, identity release):
intake checks that this centre holds the referral and audits the request. The answer lives in
memory for one page render: never stored, never logged, never in an exception message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from aiguillage_common.identity_requests import Outcome as AnswerOutcome
from aiguillage_common.identity_requests import identity_request, person_in, read_answer

Outcome = AnswerOutcome | Literal["not_configured"]


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
        body, headers = identity_request(
            referral_id, centre_id, None, self._secret, int(self._clock())
        )
        try:
            response = await self._client.post(
                self._url, content=body, headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as error:
            return IdentityAnswer("unavailable", type(error).__name__.lower())
        status = response.status_code
        person = person_in(status, response.content)
        outcome, reason = read_answer(status, person)
        if outcome == "unavailable" and status == 200:
            reason = "bad_answer"  # what the audit has always said of a 200 without a person
        return IdentityAnswer(outcome, reason, person)  # a person only ever comes with a grant
