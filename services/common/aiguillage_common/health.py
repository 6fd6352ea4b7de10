"""Liveness and readiness over HTTP, so a supervisor or an operator sees what a service waits for.

``GET /metrics``       the Prometheus exposition (aiguillage_common.metrics), on the same port.
``GET /health/live``  200 while the process runs its event loop (it never exits for an outage).
``GET /health/ready`` 200 ``{"status": "ready", ...}`` when PostgreSQL and Kafka answer now and the
consumers run; else 503 ``{"status": "not_ready", "missing": [...], ...}`` naming each missing
dependency, and which consumers hold a record while waiting for one.

The probes run on request (a ``SELECT 1`` and a metadata request, each bounded by a short
timeout): readiness says what is true now, not what the last message saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from aiguillage_common.failures import Dependency
from aiguillage_common.logging import get_logger
from aiguillage_common.metrics import CONTENT_TYPE

log = get_logger("aiguillage.health")
PROBE_TIMEOUT_S = 2.0


@dataclass
class HealthState:
    """What the running service knows of itself; filled in by the runtime and the consumers."""

    service: str
    phase: str = "starting"  # starting -> waiting -> running -> stopping
    waiting_for: set[str] = field(default_factory=set)  # dependencies the startup waits for
    consumers_waiting: dict[str, str] = field(default_factory=dict)  # consumer -> dependency
    started_at: float = field(default_factory=time.time)

    def consumer_wait(self, consumer: str, dependency: Dependency | None) -> None:
        if dependency is None:
            self.consumers_waiting.pop(consumer, None)
        else:
            self.consumers_waiting[consumer] = dependency


Probe = Callable[[], Awaitable[bool]]


async def database_answers(pool: asyncpg.Pool | None) -> bool:
    if pool is None:
        return False
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return bool(await pool.fetchval("SELECT 1"))
    except Exception:
        return False


@dataclass
class Readiness:
    state: HealthState
    probes: dict[str, Probe]

    async def report(self) -> tuple[bool, dict[str, Any]]:
        results = await asyncio.gather(*(probe() for probe in self.probes.values()))
        answers = dict(zip(self.probes, results, strict=True))
        missing = sorted(
            {name for name, ok in answers.items() if not ok}
            | set(self.state.waiting_for)
            | set(self.state.consumers_waiting.values())
        )
        ready = self.state.phase == "running" and not missing
        return ready, {
            "status": "ready" if ready else "not_ready",
            "service": self.state.service,
            "phase": self.state.phase,
            "missing": missing,
            "dependencies": {name: "ok" if ok else "unreachable" for name, ok in answers.items()},
            "consumers_waiting": dict(self.state.consumers_waiting),
            "uptime_s": round(time.time() - self.state.started_at, 1),
        }


class HealthServer:
    """A tiny aiohttp server on the service's own event loop; off when the port is 0."""

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Callable[[], Readiness],
        metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._metrics = metrics
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._port == 0:
            return
        app = web.Application()
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._render_metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("health.listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def _ready(self, _request: web.Request) -> web.Response:
        ready, body = await self._readiness().report()
        return web.json_response(body, status=200 if ready else 503)

    async def _render_metrics(self, _request: web.Request) -> web.Response:
        assert self._metrics is not None
        body = await self._metrics()
        # Content type with its version parameter, as Prometheus negotiates it.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
