"""Client of intake's identity API: asks, right before a webhook attempt, for the person's identity.

The request is signed with the service secret (``aiguillage_common.service_auth``) and bounded by
a short timeout; the answer lives only in memory for the one attempt. Nothing here logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from aiguillage_common.identity_requests import identity_request, person_in
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
        body, headers = identity_request(
            referral_id, centre_id, offer_event_id, self._secret, int(self._clock())
        )
        try:
            answer = await self._client.post(self._url, body, headers, self._timeout_s)
        except HttpFailure as failure:
            return IdentityLookup("unavailable", _UNREACHABLE.get(failure.kind, failure.name))
        return lookup_from_status(answer.status, person_in(answer.status, answer.body))
