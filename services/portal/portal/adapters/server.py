"""The web server as a background worker of the service process: started after the pool and
the outbox relay, stopped before them, in the same event loop as the consumers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from aiguillage_common.logging import get_logger

log = get_logger("aiguillage.portal")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service's runtime owns SIGTERM/SIGINT (FastStream stops the consumers, then the
        # workers): uvicorn must neither take them nor raise them again on exit.
        yield


class WebServer:
    def __init__(
        self,
        app_factory: Callable[[], Any],
        host: str,
        port: int,
        graceful_timeout_s: float,
    ) -> None:
        self._app_factory = app_factory
        self._host = host
        self._port = port
        self._graceful_timeout_s = graceful_timeout_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app_factory(),
            host=self._host,
            port=self._port,
            log_config=None,
            # Request lines carry referral ids and enrolment tokens in their paths: not logged.
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(self._graceful_timeout_s),
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(), name="portal-web")
        while not server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (e.g. port taken)
                raise RuntimeError("the web server stopped while starting")
            await asyncio.sleep(0.02)
        self.bound_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("portal.web_listening", host=self._host, port=self.bound_port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, self._graceful_timeout_s + 5)
        self._server = None
        self._task = None
