"""Intake's internal HTTP API: the identity, released to the centre holding the referral only.

``POST /internal/v1/identity-releases`` with ``{"referral_id", "centre_id", "offer_event_id"?}``,
signed with the service secret (``X-Aiguillage-Service-Signature``, see
``aiguillage_common.service_auth``). Answers: 200 ``{"referral_id", "person"}`` to the holder;
403 another centre; 404 unknown referral; 410 cancelled or purged; 409 the named offer is not
known here yet (retry); 401 bad or missing signature; 400 malformed body; 503 database trouble.

aiohttp's server runs in the service's own event loop, next to the Kafka consumers, as a
``BackgroundWorker``: no second process, no thread. Its access log is off: the log lines are ours
and carry the referral id and the outcome only, never a body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiguillage_common.consumer import where
from aiguillage_common.identity_requests import ANSWERS, Release
from aiguillage_common.logging import get_logger
from aiguillage_common.service_auth import SERVICE_SIGNATURE_HEADER, verify_request
from aiguillage_schemas.events.referral_submitted import ReferralId
from referral_intake.use_cases.identity_release import (
    ReleaseRequest,
    ReleaseStore,
    release_identity,
)

log = get_logger("aiguillage.intake.identity_api")
PATH = "/internal/v1/identity-releases"
MAX_BODY_BYTES = 4096
# The database is down or busy: the caller may retry; nothing was released.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    referral_id: ReferralId
    centre_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    offer_event_id: UUID | None = None


def _error(status: int, code: str) -> tuple[str, web.Response]:
    return code, web.json_response({"error": code}, status=status)


class IdentityApi:
    """A ``BackgroundWorker``: starts listening after the pool is open, stops before it closes."""

    def __init__(
        self,
        store: ReleaseStore,
        secret: bytes,
        host: str,
        port: int,
        replay_window_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._secret = secret
        self._host = host
        self._port = port
        self._window_s = replay_window_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._on_answer = on_answer  # metrics: each answer's outcome (granted, or the refusal)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self._answer)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        address: Any = self._runner.addresses[0]
        self.bound_port = int(address[1])
        log.info("identity_api.listening", host=self._host, port=self.bound_port, path=PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _answer(self, request: web.Request) -> web.Response:
        outcome, response = await self._release(request)
        if self._on_answer is not None:
            self._on_answer(outcome)
        return response

    async def _release(self, request: web.Request) -> tuple[str, web.Response]:
        """The answer, and its outcome: granted, or the refusal's code."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large")
        if not verify_request(
            self._secret,
            request.headers.get(SERVICE_SIGNATURE_HEADER),
            body,
            self._clock(),
            self._window_s,
        ):
            # Nothing from an unauthenticated body is trusted, logged or audited.
            log.warning("identity_release.unauthenticated")
            return _error(401, "bad_signature")
        try:
            parsed = ReleaseBody.model_validate_json(body)
        except ValidationError:
            log.warning("identity_release.malformed")
            return _error(400, "malformed")
        try:
            answer = await asyncio.wait_for(
                release_identity(
                    ReleaseRequest(parsed.referral_id, parsed.centre_id, parsed.offer_event_id),
                    self._store,
                ),
                self._timeout_s,
            )
        except UNAVAILABLE as error:
            log.error(
                "identity_release.failed",
                referral_id=parsed.referral_id,
                error_type=type(error).__name__,
            )
            return _error(503, "unavailable")
        except Exception as error:
            # A bug, or an identity that cannot be opened: the exception may quote data, so only
            # its type and place are logged, and nothing is released.
            log.error(
                "identity_release.failed",
                referral_id=parsed.referral_id,
                error_type=type(error).__name__,
                at=where(error),
            )
            return _error(500, "internal")
        log.info(
            "identity_release.answered", referral_id=parsed.referral_id, outcome=str(answer.outcome)
        )
        if answer.outcome is Release.GRANTED:
            assert answer.identity is not None
            return str(answer.outcome), web.json_response(
                {
                    "referral_id": parsed.referral_id,
                    "person": answer.identity.model_dump(mode="json"),
                }
            )
        return _error(ANSWERS[answer.outcome].status, str(answer.outcome))
