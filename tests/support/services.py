"""Run Aiguillage's services as real processes, as in production, and kill them for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aiguillage_demo.peers import free_port as free_port
from aiguillage_demo.signing import (
    ROUTING_SECRETS_ENV,
    SECRETS_ENV,
    demo_routing_secrets_json,
    demo_secrets_json,
)

BIN = Path(sys.executable).parent
SERVICES = {
    "referral-intake": ("aiguillage-intake", "AIGUILLAGE_INTAKE_"),
    "routing": ("aiguillage-routing", "AIGUILLAGE_ROUTING_"),
    "notifications": ("aiguillage-notifications", "AIGUILLAGE_NOTIFICATIONS_"),
    "portal": ("aiguillage-portal", "AIGUILLAGE_PORTAL_"),
}
# The three services every pipeline test runs; the portal is started by the tests that use it.
PIPELINE = ("referral-intake", "routing", "notifications")
TEST_MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, tests only
TEST_TOTP_KEY = "dG90cC1rZXktZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM="  # 32 bytes, tests only


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _logs: list[Path] = field(default_factory=list)

    health_port: int = 0
    http_port: int = 0  # the portal's web server

    def start(self) -> None:
        command, prefix = SERVICES[self.name]
        self.health_port = free_port()
        self.env[f"{prefix}HEALTH_PORT"] = str(self.health_port)
        if self.name == "portal":
            self.http_port = free_port()
            self.env[f"{prefix}HTTP_PORT"] = str(self.http_port)
            self.env[f"{prefix}PUBLIC_URL"] = self.url
            self.env.setdefault(f"{prefix}COOKIE_SECURE", "false")
            self.env.setdefault(f"{prefix}TOTP_KEY", TEST_TOTP_KEY)
        self.starts += 1
        path = self.log_path.with_suffix(f".{self.starts}.log")
        self._logs.append(path)
        handle = path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN / command)],
            env={**os.environ, **self.env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or committed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self._logs if p.exists())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def readiness(self) -> tuple[int, dict[str, object]]:
        """What this run's /health/ready says: (HTTP status, body); (0, {}) before it listens."""
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(f"http://127.0.0.1:{self.health_port}/health/ready")
        except httpx.TransportError:
            return 0, {}
        return response.status_code, response.json()

    async def ready(self) -> bool:
        status, _ = await self.readiness()
        return status == 200


def service_env(
    name: str,
    bootstrap: str,
    database_url: str,
    topic_prefix: str,
    schema_suffix: str,
    schema: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    _, prefix = SERVICES[name]
    env = {
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        f"{prefix}DATABASE_URL": database_url,
        f"{prefix}TOPIC_PREFIX": topic_prefix,
        f"{prefix}DB_SCHEMA": schema + schema_suffix,
        f"{prefix}CONSUMER_GROUP": f"{topic_prefix}{name}",
        f"{prefix}OUTBOX_POLL_INTERVAL_S": "0.5",
        f"{prefix}RETRY_BASE_DELAY_S": "0.05",
        "AIGUILLAGE_INTAKE_IDENTITY_MASTER_KEY": TEST_MASTER_KEY,
        SECRETS_ENV: demo_secrets_json(),
        ROUTING_SECRETS_ENV: demo_routing_secrets_json(),
    }
    if name == "portal":
        # The operator console reads the other services' schemas: this test's copies of them.
        for service, owned in (
            ("INTAKE", "intake"),
            ("ROUTING", "routing"),
            ("NOTIFICATIONS", "notifications"),
        ):
            env[f"AIGUILLAGE_PORTAL_CONSOLE_{service}_SCHEMA"] = owned + schema_suffix
    env.update(extra or {})
    return env
