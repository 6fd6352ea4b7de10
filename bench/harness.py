"""What the benchmarks that run the whole system share (``bench/chaos.py``, ``bench/e2e.py``).

- ``Infra``: one ``deploy/local/infra.sh`` copy (state directory and ports) to start, stop and
  break; ``private_infra`` builds one from the command line and refuses the shared one's ports;
  ``locate_infra`` finds the copy that serves a database URL.
- ``Service``: one service process, run from its console script as in production, with a fresh
  health port at each start (readiness is ``GET /health/ready`` answering 200); ``launch`` and
  ``wait_ready`` start the three; ``service_env`` points one at a private topic set (prefix) and
  private schemas (suffix), which ``create_world`` / ``drop_world`` make and remove.
- ``Peers``: the demo's local SMTP sink and webhook receiver; ``Peers.env`` wires the services to
  them (centres' webhooks, everyone's e-mail) and turns intake's identity API on, so that centre
  offers fetch the person's identity as the demo does.
- ``prepare_inputs``: signed referrals, valid or invalid in every known way, ready to publish.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import httpx
import structlog

from aiguillage_common.codec import encode_event
from aiguillage_common.migrations.cli import SERVICES as MIGRATED
from aiguillage_common.migrations.cli import migrate_services
from aiguillage_common.provisioning import provision, unprovision

# The services' console scripts and settings prefixes, as the demo runs them.
from aiguillage_demo.cli import COMMANDS as COMMANDS
from aiguillage_demo.cli import ENV_PREFIX as ENV_PREFIX
from aiguillage_demo.peers import SmtpSink, WebhookReceiver, free_port
from aiguillage_demo.samples import DEMO_CASES, make_referral
from aiguillage_demo.signing import (
    ROUTING_SECRETS_ENV,
    SECRETS_ENV,
    demo_routing_secrets_json,
    demo_secrets_json,
    sign_as,
)
from aiguillage_schemas.signing import sign
from bench import chaos_report as report

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "deploy" / "local" / "infra.sh"
HOST = "127.0.0.1"
INPUT_HEADER = "x-bench-input"  # which input a record is (read back from referrals.intake)
# The shared infrastructure (infra.sh's defaults) that other work uses: never ours to break.
SHARED_PORTS = {"kafka": 19092, "controller": 19093, "pg": 15432}


Say = Callable[[str], None]


def sayer(tag: str) -> Say:
    """Progress lines on stderr (stdout is kept for the table), e.g. ``[chaos 12:00:01] ...``."""

    def say(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return say


def quiet_client_logs() -> None:
    """The migration runner logs with structlog: keep stdout for the table. The scripts say
    themselves what their clients go through (aiokafka would log every refused connection)."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------------------- inputs


class InputPlan(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def invalid_share(self) -> float: ...


INVALID_KINDS = (
    "bad_signature",
    "not_json",
    "missing_field",
    "unknown_prescriber",
    "unknown_enum_value",
    "wrong_type",
    "not_utf8",
    "impossible_date",
    "unknown_commune",
    "key_mismatch",
    "replayed_message",
    "outside_jurisdiction",
    "missing_key",
)


@dataclass
class Prepared:
    """One input, ready to (re)send: headers are signed at each attempt, as a prescriber would."""

    item: report.Input
    key: bytes | None
    value: bytes
    signer: Callable[[bytes], dict[str, str]]
    correlation_id: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        headers = {**self.signer(self.value), INPUT_HEADER: str(self.item.index)}
        if self.correlation_id:
            headers["correlation_id"] = self.correlation_id
        return [(k, v.encode()) for k, v in headers.items()]


def _signed_by(prescriber_id: str) -> Callable[[bytes], dict[str, str]]:
    return lambda value: sign_as(prescriber_id, value)


def prepare_inputs(
    plan: InputPlan, today: date | None = None, label: str = "chaos"
) -> list[Prepared]:
    """``plan.count`` inputs; ``invalid_share`` of them invalid, at seeded positions, cycling
    through every kind of invalid input. Referral ids (``<label>-<seed>-<index>``), contents and
    kinds follow the seed."""
    rng = random.Random(plan.seed)  # noqa: S311 - made-up data
    invalid_count = round(plan.count * plan.invalid_share)
    invalid_at = set(rng.sample(range(plan.count), invalid_count))
    kinds = list(INVALID_KINDS)
    rng.shuffle(kinds)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"aiguillage-{label}:{plan.seed}")
    prepared = []
    invalid_seen = 0
    for index in range(plan.count):
        referral_id = f"{label}-{plan.seed}-{index:05d}"
        case = rng.randrange(len(DEMO_CASES))
        referral = make_referral(
            case,
            referral_id=referral_id,
            rng=random.Random(plan.seed * 1_000_003 + index),  # noqa: S311 - made-up data
            today=today,
        ).model_copy(
            update={
                "event_id": uuid.uuid5(namespace, f"event:{index}"),
                "correlation_id": uuid.uuid5(namespace, f"correlation:{index}"),
            }
        )
        prescriber = referral.data.prescriber.prescriber_id
        correlation = str(referral.correlation_id)
        if index not in invalid_at:
            prepared.append(
                Prepared(
                    report.Input(index, "valid", referral_id),
                    referral_id.encode(),
                    encode_event(referral),
                    _signed_by(prescriber),
                    correlation,
                )
            )
            continue
        kind = kinds[invalid_seen % len(kinds)]
        invalid_seen += 1
        prepared.append(_invalid(kind, index, referral_id, referral.model_dump(mode="json")))
    return prepared


def _invalid(kind: str, index: int, referral_id: str, document: dict[str, Any]) -> Prepared:
    """One invalid input of ``kind``, built from a valid referral's document."""
    prescriber = document["data"]["prescriber"]["prescriber_id"]
    key: bytes | None = referral_id.encode()
    signer = _signed_by(prescriber)
    data = document["data"]
    reason = kind
    if kind == "bad_signature":  # signed, then altered: a trailing space keeps it valid JSON
        original = json.dumps(document).encode()
        return Prepared(
            report.Input(index, kind, referral_id, "bad_signature"),
            key,
            original + b" ",
            lambda _value: sign_as(prescriber, original),
        )
    if kind == "not_json":
        value = f"<referral id='{referral_id}'/>".encode()
    elif kind == "wrong_type":
        value = json.dumps([1, 2, referral_id]).encode()
    elif kind == "not_utf8":
        value = b'{"subject": "' + referral_id.encode() + b'", "x": "\xff\xfe"}'
    else:
        if kind == "missing_field":
            del data["frame"]
        elif kind == "unknown_enum_value":
            data["needed_services"] = ["astrology"]
        elif kind == "impossible_date":
            data["frame"]["decision_date"] = "2026-02-30"
        elif kind == "unknown_commune":
            data["person"]["residence"]["commune_insee"] = "99999"
        elif kind == "key_mismatch":
            key = f"{referral_id}-other".encode()
        elif kind == "missing_key":
            key = None
        elif kind == "outside_jurisdiction":
            # Lille's prosecutor refers someone living in Lyon (a commune outside the Nord).
            prescriber = "parquet-tj-lille"
            data["prescriber"].update(
                prescriber_id=prescriber, kind="parquet", jurisdiction=prescriber
            )
            document["source"] = prescriber
            data["person"]["residence"]["commune_insee"] = "69381"
            signer = _signed_by(prescriber)
        elif kind == "unknown_prescriber":
            signer = lambda value: sign(value, "nobody-2026", b"not-a-registered-secret")  # noqa: E731
        elif kind == "replayed_message":
            signer = lambda value: sign_as(prescriber, value, int(time.time()) - 3600)  # noqa: E731
        value = json.dumps(document).encode()
    return Prepared(report.Input(index, kind, referral_id, reason), key, value, signer)


# ----------------------------------------------------------------------------------- infra


def _infra_env(state_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {**os.environ, "AIGUILLAGE_STATE_DIR": str(state_dir)}
    env.setdefault("AIGUILLAGE_PYTHON", sys.executable)
    names = {
        "kafka": "AIGUILLAGE_KAFKA_PORT",
        "controller": "AIGUILLAGE_KAFKA_CONTROLLER_PORT",
        "pg": "AIGUILLAGE_PG_PORT",
    }
    for what, port in ports.items():
        env[names[what]] = str(port)
    return env


@dataclass
class Infra:
    """One ``deploy/local/infra.sh`` state directory and its ports: start, stop and break it.

    Every command runs infra.sh with this state directory and these ports, so it acts on this
    copy only (infra.sh itself checks that the broker it kills runs with this state's config)."""

    state_dir: Path
    ports: dict[str, int]  # kafka, controller, pg (those known)
    log_path: Path
    say: Say = field(default_factory=lambda: sayer("infra"))

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.ports['kafka']}"

    @property
    def database_url(self) -> str:
        return f"postgresql://aiguillage:aiguillage@{HOST}:{self.ports['pg']}/aiguillage"

    async def run(self, command: str, timeout_s: float = 900.0) -> None:
        """``infra.sh <command>``; output appended to the log file (not a pipe: the daemons it
        starts would hold a pipe open)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                "bash",
                str(INFRA),
                command,
                env=_infra_env(self.state_dir, self.ports),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                code = await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise RuntimeError(
                    f"infra.sh {command} did not finish in {timeout_s:.0f}s"
                ) from None
        if code != 0:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"infra.sh {command} failed ({code}); log {self.log_path}:\n{tail}")

    async def pg_stop(self) -> None:
        await self.run("pg-crash", 120)  # pg_ctl stop -m immediate

    async def pg_start(self) -> None:
        await self._until_done("pg-start", 300)

    async def _until_done(self, command: str, timeout_s: float) -> None:
        """Idempotent start commands are run again when they fail: ``pg-start`` can give up
        before the new postmaster has written its pid file, although the server comes up."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.run(command, max(30.0, deadline - time.monotonic()))
            except RuntimeError as error:
                if time.monotonic() > deadline:
                    raise
                self.say(
                    f"infra.sh {command} failed, running it again ({str(error).splitlines()[0]})"
                )
                await asyncio.sleep(1.0)
                continue
            return

    async def broker_kill(self) -> None:
        await self.run("kafka-kill", 60)  # SIGKILL of this state's broker only

    async def broker_restart(self) -> None:
        await self._until_done("up", 600)

    def broker_pid(self) -> int | None:
        """The broker's JVM (infra.sh's pid file), if it runs."""
        return _pid_from(self.state_dir / "kafka" / "kafka.pid")

    def postgres_pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers), if it runs."""
        postmaster = _pid_from(self.state_dir / "pg" / "data" / "postmaster.pid")
        if postmaster is None:
            return []
        return [postmaster, *children_of(postmaster)]


def _conf_value(path: Path, key: str) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip().strip("'")
    return None


def locate_infra(
    database_url: str,
    state_dir: Path | None = None,
    log_path: Path | None = None,
    say: Say | None = None,
) -> Infra:
    """The infra.sh state directory whose PostgreSQL serves ``database_url``, so that a caller
    (the quick test) can stop and restart that very cluster. ``state_dir`` defaults to
    ``$AIGUILLAGE_STATE_DIR`` or ``<repo>/.local``, as infra.sh does. Refuses anything that is
    not a loopback cluster managed by that state directory (never stops a stranger's server).
    ``log_path`` receives infra.sh's output (default: a file in the state directory)."""
    found = state_dir or Path(os.environ.get("AIGUILLAGE_STATE_DIR") or REPO / ".local")
    found = found.resolve()
    url = urlsplit(database_url)
    if url.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise RuntimeError(f"{database_url} is not on this machine's loopback")
    conf = found / "pg" / "data" / "aiguillage.conf"
    port = _conf_value(conf, "port")
    if port is None or int(port) != (url.port or 5432):
        raise RuntimeError(
            f"no infra.sh PostgreSQL cluster for port {url.port} under {found} "
            f"(found port {port} in {conf}); set AIGUILLAGE_STATE_DIR to its state directory"
        )
    ports = {"pg": int(port)}
    listeners = _conf_value(found / "kafka" / "server.properties", "listeners") or ""
    for part in listeners.split(","):
        name, _, address = part.partition("://")
        if address.rpartition(":")[2].isdigit():
            what = {"PLAINTEXT": "kafka", "CONTROLLER": "controller"}.get(name)
            if what:
                ports[what] = int(address.rpartition(":")[2])
    return Infra(found, ports, log_path or found / "bench-infra.log", say or sayer("infra"))


# ------------------------------------------------------------------------------- processes


def _pid_from(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    if not first.isdigit() or not Path(f"/proc/{first}").exists():
        return None
    return int(first)


def children_of(parent: int) -> list[int]:
    """Live processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def add_infra_arguments(
    parser: argparse.ArgumentParser, state_dir: Path, ports: dict[str, int]
) -> None:
    """``--state-dir``, ``--kafka-port``, ``--controller-port``, ``--pg-port``, ``--keep-infra``."""
    parser.add_argument("--keep-infra", action="store_true", help="leave Kafka/PostgreSQL up")
    parser.add_argument("--state-dir", type=Path, default=state_dir)
    parser.add_argument("--kafka-port", type=int, default=ports["kafka"])
    parser.add_argument("--controller-port", type=int, default=ports["controller"])
    parser.add_argument("--pg-port", type=int, default=ports["pg"])


@contextlib.asynccontextmanager
async def infra_up(infra: Infra, keep: bool) -> AsyncIterator[Infra]:
    """``infra.sh up`` for the duration, then ``down`` unless ``keep``."""
    ports = infra.ports
    infra.say(
        f"starting Kafka {infra.bootstrap} and PostgreSQL :{ports['pg']} in {infra.state_dir}"
    )
    await infra.run("up")
    try:
        yield infra
    finally:
        if not keep:
            infra.say(f"stopping Kafka and PostgreSQL of {infra.state_dir} (infra.sh down)")
            await infra.run("down", 180)


def private_infra(args: argparse.Namespace, log_name: str, say: Say) -> Infra:
    """The infra.sh copy the arguments name, refusing the shared one's ports or state directory."""
    state_dir = args.state_dir.resolve()
    ports = {"kafka": args.kafka_port, "controller": args.controller_port, "pg": args.pg_port}
    if any(ports[k] == SHARED_PORTS[k] for k in ports) or state_dir == (REPO / ".local").resolve():
        raise SystemExit("refusing the shared infrastructure's ports or state directory")
    return Infra(state_dir, ports, state_dir / log_name, say)


# ------------------------------------------------------------------------------- processes


@dataclass
class Service:
    """One service process (restartable): a fresh log file and health port at each start."""

    name: str
    label: str  # e.g. "routing#2"
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    health_port: int = 0
    expected_exit: bool = True  # set while the script kills, stops or has not started it
    restart_at: float | None = None  # the supervisor restarts an unexpected exit then
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def start(self) -> None:
        self.starts += 1
        self.health_port = free_port()
        prefix = ENV_PREFIX[self.name]
        log_path = self.log_dir / f"{self.label.replace('#', '-')}.{self.starts}.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own console script
                [str(Path(sys.executable).parent / COMMANDS[self.name])],
                env={**self.env, f"{prefix}HEALTH_PORT": str(self.health_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the script is not theirs
            )
        self.expected_exit = False
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def ready(self, client: httpx.AsyncClient) -> bool:
        if not self.running():
            return False
        try:
            answer = await client.get(f"http://{HOST}:{self.health_port}/health/ready")
        except httpx.HTTPError:
            return False
        return bool(answer.status_code == 200 and answer.json().get("status") == "ready")

    async def wait_ready(self, client: httpx.AsyncClient, timeout_s: float) -> float | None:
        """Seconds until ready, or None at the deadline."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await self.ready(client):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None

    async def _wait_exit(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: nothing is flushed, committed or drained."""
        self.expected_exit = True
        if self.running() and self.process is not None:
            self.process.send_signal(signal.SIGKILL)
        await self._wait_exit(10)

    async def terminate(self, timeout_s: float = 40.0) -> int | None:
        self.expected_exit = True
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        await self._wait_exit(timeout_s)
        return self.process.returncode


def service_env(
    name: str, bootstrap: str, database_url: str, prefix: str, suffix: str, extra: dict[str, str]
) -> dict[str, str]:
    own = ENV_PREFIX[name]
    # Nothing inherited may point a service elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(ENV_PREFIX.values()))}
    env.update(
        {
            f"{own}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            f"{own}DATABASE_URL": database_url,
            f"{own}TOPIC_PREFIX": prefix,
            f"{own}DB_SCHEMA": MIGRATED[name][1] + suffix,
            f"{own}CONSUMER_GROUP": f"{prefix}{name}",
            f"{own}HEALTH_HOST": HOST,
        }
    )
    env.update(extra)
    return env


# --------------------------------------------------------------------------------- the run


def launch(envs: dict[str, dict[str, str]], log_dir: Path) -> dict[str, Service]:
    """The three services started, one process each (labels are the service names)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    services = {name: Service(name, name, envs[name], log_dir) for name in COMMANDS}
    for service in services.values():
        service.start()
    return services


async def wait_ready(
    services: dict[str, Service], client: httpx.AsyncClient, timeout_s: float
) -> None:
    """Until every one answers ready; RuntimeError naming the late ones at the deadline."""
    waits = await asyncio.gather(*(s.wait_ready(client, timeout_s) for s in services.values()))
    if any(w is None for w in waits):
        late = [s.label for s, w in zip(services.values(), waits, strict=True) if w is None]
        raise RuntimeError(f"not ready after {timeout_s:.0f}s: {late}")


async def create_world(bootstrap: str, database_url: str, prefix: str, suffix: str) -> None:
    """A private topic set (``prefix``) and the services' schemas (``<schema><suffix>``)."""
    await provision(bootstrap, prefix=prefix)
    await migrate_services(database_url, list(MIGRATED), suffix)


async def drop_world(bootstrap: str, database_url: str, prefix: str, suffix: str) -> None:
    with contextlib.suppress(Exception):
        await unprovision(bootstrap, prefix)
    with contextlib.suppress(Exception):
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            for service in MIGRATED:
                schema = MIGRATED[service][1] + suffix
                await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


# ------------------------------------------------------------------------------------ peers


@dataclass
class Peers:
    """The demo's SMTP sink and webhook receiver (real servers in this event loop)."""

    smtp: SmtpSink
    hooks: WebhookReceiver

    @classmethod
    async def start(cls, smtp: SmtpSink | None = None) -> Peers:
        peers = cls(smtp or SmtpSink(), WebhookReceiver(base64.b64encode(os.urandom(24))))
        await peers.smtp.start()
        await peers.hooks.start()
        return peers

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.hooks.stop()

    def env(self) -> dict[str, dict[str, str]]:
        """Per service: the centres' webhooks and everyone's e-mail point at these peers, as in
        the demo; intake's identity API on a free port with a per-run secret."""
        prefix = ENV_PREFIX["notifications"]
        service_secret = base64.b64encode(os.urandom(24)).decode()
        identity_port = free_port()
        return {
            "referral-intake": {
                "AIGUILLAGE_INTAKE_IDENTITY_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
                SECRETS_ENV: demo_secrets_json(),
                "AIGUILLAGE_INTAKE_IDENTITY_API_HOST": HOST,
                "AIGUILLAGE_INTAKE_IDENTITY_API_PORT": str(identity_port),
                "AIGUILLAGE_INTAKE_IDENTITY_API_SECRET": service_secret,
            },
            "routing": {ROUTING_SECRETS_ENV: demo_routing_secrets_json()},
            "notifications": {
                f"{prefix}WEBHOOK_URL_TEMPLATE": self.hooks.base_url + "/hooks/{kind}/{id}",
                f"{prefix}WEBHOOK_SECRET": self.hooks.secret.decode(),
                f"{prefix}SMTP_HOST": HOST,
                f"{prefix}SMTP_PORT": str(self.smtp.port),
                f"{prefix}INTAKE_IDENTITY_URL": (
                    f"http://{HOST}:{identity_port}/internal/v1/identity-releases"
                ),
                f"{prefix}IDENTITY_API_SECRET": service_secret,
            },
        }
