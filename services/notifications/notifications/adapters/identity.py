"""Client of intake's identity API: asks, right before a webhook attempt, for the person's identity.

The request is signed with the service secret (``aiguillage_common.service_auth``) and bounded by
a short timeout; the answer lives only in memory for the one attempt. Nothing here logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, sign_request
from notifications.adapters.http import HttpClient, HttpFailure
from notifications.domain.identity import IdentityLookup, lookup_from_status

# What the delivery log says when intake could not be reached (as with the earlier client).
_UNREACHABLE = {"timeout": "timeout", "connect": "connecterror", "bad_url": "bad_url"}


class IdentityClient:
    def __init__(
        self,
        client: HttpClient,
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

    async def lookup(
        self, referral_id: str, centre_id: str, offer_event_id: UUID | None
    ) -> IdentityLookup:
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
            SERVICE_SIGNATURE_HEADER: sign_request(self._secret, int(self._clock()), body),
        }
        try:
            answer = await self._client.post(self._url, body, headers, self._timeout_s)
        except HttpFailure as failure:
            return IdentityLookup("unavailable", _UNREACHABLE.get(failure.kind, failure.name))
        person: dict[str, Any] | None = None
        if answer.status == 200:
            try:
                document = json.loads(answer.body)
                candidate = document.get("person") if isinstance(document, dict) else None
                person = candidate if isinstance(candidate, dict) else None
            except ValueError:
                person = None
        return lookup_from_status(answer.status, person)
