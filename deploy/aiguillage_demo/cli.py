"""``aiguillage-demo``: run the three services on the real infrastructure and route a demo batch.

Expects Kafka and PostgreSQL to answer (``./run demo`` starts them first). Each run starts from a
known state: its own topics (prefix ``demo-<run>.``) and its own PostgreSQL schemas (suffix
``_demo<run>``), provisioned and migrated for it, so the directory is the fresh seed and no place
is held by an earlier run; both are dropped at the end unless ``--keep``. Starts each service as
its own process, waits until each one's ``/health/ready`` answers 200, publishes referrals across
several départements and needs plus two bad inputs, waits until every referral has its outcome,
prints where each went and what was notified, and the time from submit to the notifications. Then
stops the services with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aiguillage_common.codec import encode_event
from aiguillage_common.migrations.cli import MIGRATED, migrate_services
from aiguillage_common.provisioning import delete_groups, provision, unprovision
from aiguillage_demo.peers import free_port
from aiguillage_demo.samples import DEMO_CASES, make_referral
from aiguillage_demo.signing import (
    PORTAL_KEY_ID,
    ROUTING_SECRETS_ENV,
    SECRETS_ENV,
    demo_routing_secrets_json,
    demo_secret,
    demo_secrets_json,
    sign_as,
)
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted

# The pipeline's three services (the benches run these too) ...
COMMANDS = {
    "referral-intake": "aiguillage-intake",
    "routing": "aiguillage-routing",
    "notifications": "aiguillage-notifications",
}
# ... and what the demo runs: the pipeline and the portal.
DEMO_COMMANDS = {**COMMANDS, "portal": "aiguillage-portal"}
# ... and the schemas it migrates and drops: the processes', and where the operator console
# records replays and discards of dead letters.
DEMO_SCHEMAS = [*DEMO_COMMANDS, "operations"]
ENV_PREFIX = {
    "referral-intake": "AIGUILLAGE_INTAKE_",
    "routing": "AIGUILLAGE_ROUTING_",
    "notifications": "AIGUILLAGE_NOTIFICATIONS_",
    "portal": "AIGUILLAGE_PORTAL_",
}
DEMO_CENTRE_EMAIL = "centre.demo@aiguillage.invalid"
DEMO_PRESCRIBER_EMAIL = "greffe.demo@aiguillage.invalid"
DEMO_OPERATOR_EMAIL = "exploitation.demo@aiguillage.invalid"
WIDTH = 130  # of the summary
QUIET_S = 2.0  # nothing new for this long: everything the batch causes has arrived
# Notifications that are about the decision (not the receipt, not a later reminder).
NOT_ABOUT_THE_DECISION = frozenset({"referral_received", "answer_reminder"})


@dataclass(frozen=True, slots=True)
class DemoRun:
    """One run's private world on the shared broker and database."""

    token: str

    @classmethod
    def new(cls) -> DemoRun:
        return cls(uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:
        return f"demo-{self.token}."

    @property
    def suffix(self) -> str:
        return f"_demo{self.token}"

    def topic(self, topic: topics.Topic) -> str:
        return self.prefix + topic.name

    def schema(self, service: str) -> str:
        return MIGRATED[service][1] + self.suffix

    def referral_id(self, index: int) -> str:
        return f"demo-{index:02d}-{self.token}"


@dataclass
class Outcome:
    referral: ReferralSubmitted
    submitted_ms: int
    decision: dict[str, Any] | None = None
    notifications: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """routed, waiting, escalated, unroutable… or unfinished (from the last decision)."""
        if self.decision is None:
            return "unfinished"
        kind = str(self.decision["event_type"]).removeprefix("referral.")
        return "waiting" if kind == "waitlisted" else kind

    def _about_decision(self) -> list[tuple[int, dict[str, Any]]]:
        return [(ts, n) for ts, n in self.notifications if n["topic"] not in NOT_ABOUT_THE_DECISION]

    @property
    def done(self) -> bool:
        # Routed: the centre's offer and the prescriber's notice; otherwise the prescriber's.
        expected = 2 if self.kind == "routed" else 1
        return self.decision is not None and len(self._about_decision()) >= expected

    def latency_ms(self) -> int:
        """From the intake record's broker time to the last notification about the decision."""
        return max(ts for ts, _ in self._about_decision()) - self.submitted_ms


def describe(outcome: Outcome) -> str:
    decision = outcome.decision
    if decision is None:
        return "NO DECISION (see logs)"
    data = decision["data"]
    if outcome.kind == "routed":
        return f"{data['site']['site_id']} ({data['distance_km']} km)"
    if outcome.kind == "waiting":
        return f"waiting at {data['site']['site_id']} (position {data['position']})"
    return f"{outcome.kind}: {data.get('reason', '-')}"


def tally(outcomes: dict[str, Outcome], rejected: int) -> str:
    """One line: routed, waiting (with the sites), unroutable, any other outcome, unfinished and
    rejected. A referral on a waiting list is waiting, not unroutable."""
    finished = [o for o in outcomes.values() if o.done]
    kinds = Counter(o.kind for o in finished)
    sites = Counter(
        o.decision["data"]["site"]["site_id"]
        for o in finished
        if o.kind == "waiting" and o.decision is not None
    )
    where = ", ".join(f"{site} ×{n}" if n > 1 else site for site, n in sorted(sites.items()))
    parts = [
        f"{kinds.pop('routed', 0)} routed",
        f"{kinds.pop('waiting', 0)} waiting" + (f" ({where})" if where else ""),
        f"{kinds.pop('unroutable', 0)} unroutable",
        *(f"{n} {kind}" for kind, n in sorted(kinds.items())),  # escalated, placed...
        f"{len(outcomes) - len(finished)} unfinished",
        f"{rejected} rejected",
    ]
    return ", ".join(parts)


def _wrapped(text: str, indent: int, hanging: int = 0, width: int = WIDTH) -> list[str]:
    """``text`` on as many lines as it takes, each indented (continuations ``hanging`` more):
    nothing is cut."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + hanging),
        break_on_hyphens=False,
        break_long_words=True,
    ) or [" " * indent + "-"]


# The order of a journey, so that two runs print the same line whatever order notices arrived in.
JOURNEY = (
    "referral_received",
    "referral_offered",
    "referral_routed",
    "referral_rerouted",
    "referral_waitlisted",
    "referral_escalated",
    "referral_unroutable",
    "answer_reminder",
)


def _in_journey_order(notice: dict[str, Any]) -> tuple[int, str, str]:
    topic = str(notice["topic"])
    rank = JOURNEY.index(topic) if topic in JOURNEY else len(JOURNEY)
    return rank, topic, str(notice["recipient_id"])


def summary_lines(outcomes: dict[str, Outcome], rejected: list[dict[str, Any]]) -> list[str]:
    lines = [f"\n{'referral':<26} {'from':<6} {'needs':<48} → outcome", "-" * WIDTH]
    for outcome in outcomes.values():
        data = outcome.referral.data
        needs = ", ".join(data.needed_services)
        commune = data.person.residence.commune_insee or "?"
        lines.append(
            f"{outcome.referral.subject:<26} {commune:<6} {needs:<48} → {describe(outcome)}"
        )
        told = ", ".join(
            f"{n['topic']}:{n['recipient_id']}"
            for n in sorted((n for _, n in outcome.notifications), key=_in_journey_order)
        )
        lines += _wrapped(f"notified: {told or '-'}", 34, hanging=10)
    lines.append("\nRejected inputs (referrals.rejected), every problem listed:")
    for body in rejected:
        data = body["data"]
        lines.append(
            f"  {body['subject']:<26} {data['reason']:<20} {data.get('field_path') or '-'}"
            f"  (prescriber told: {data.get('prescriber_id') or 'nobody identified'})"
        )
        errors = data.get("errors") or [data]
        for error in errors:
            lines += _wrapped(f"- {error['message']}", 6, hanging=2)
    finished = [o for o in outcomes.values() if o.done]
    if finished:
        latencies = sorted(o.latency_ms() for o in finished)
        lines.append(
            f"\nSubmit → notifications about the decision on notifications.outbound, "
            f"{len(latencies)} referrals: median {statistics.median(latencies):.0f} ms, "
            f"worst {latencies[-1]} ms"
        )
    lines.append(tally(outcomes, len(rejected)))
    return lines


def service_env(
    run: DemoRun, service: str, bootstrap: str, database_url: str, health_port: int
) -> dict[str, str]:
    """What makes one service process this run's: its topics, schema, group and health port."""
    prefix = ENV_PREFIX[service]
    return {
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        f"{prefix}DATABASE_URL": database_url,
        f"{prefix}TOPIC_PREFIX": run.prefix,
        f"{prefix}DB_SCHEMA": run.schema(service),
        f"{prefix}CONSUMER_GROUP": f"{run.prefix}{service}",
        f"{prefix}HEALTH_HOST": "127.0.0.1",
        f"{prefix}HEALTH_PORT": str(health_port),
    }


def console_env(run: DemoRun) -> dict[str, str]:
    """Where the operator console reads this run's services and records its dead-letter actions."""
    prefix = ENV_PREFIX["portal"]
    return {
        f"{prefix}CONSOLE_{name.upper()}_SCHEMA": run.schema(service)
        for name, service in (
            ("intake", "referral-intake"),
            ("routing", "routing"),
            ("notifications", "notifications"),
            ("operations", "operations"),
        )
    }


def _start_services(
    run: DemoRun,
    bootstrap: str,
    database_url: str,
    log_dir: Path,
    extra_env: dict[str, dict[str, str]] | None = None,
) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    """Each service as a process with this run's topics, schema and group, and a health port."""
    log_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    started: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for service, command in DEMO_COMMANDS.items():
        health_port = free_port()
        env = {
            **os.environ,
            **service_env(run, service, bootstrap, database_url, health_port),
            **(extra_env or {}).get(service, {}),
        }
        env.setdefault("AIGUILLAGE_INTAKE_IDENTITY_MASTER_KEY", _demo_master_key(log_dir))
        env.setdefault(SECRETS_ENV, demo_secrets_json())
        # Routing authenticates centres' answers and directory updates with these (demo keys).
        env.setdefault(ROUTING_SECRETS_ENV, demo_routing_secrets_json())
        # Replays from the operator console are signed with it (intake and routing check it).
        env.setdefault("AIGUILLAGE_OPERATIONS_SECRET", demo_secret("operations"))
        # A fresh log per run ("wb"): what is in it is this run's, nothing older.
        with (log_dir / f"{service}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(bin_dir / command)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        started[service] = (process, health_port)
    return started


def _demo_master_key(log_dir: Path) -> str:
    """A demo key kept beside the demo's logs; production reads its key from a secret store."""
    path = log_dir.parent / "demo-master-key"
    if not path.exists():
        path.write_text(base64.b64encode(os.urandom(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


async def _wait_ready(
    services: dict[str, tuple[subprocess.Popen[bytes], int]], log_dir: Path, timeout_s: float = 90
) -> None:
    """Until each service's own /health/ready answers 200 (this run's process, on its port)."""
    pending = dict(services)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for service, (process, port) in list(pending.items()):
                if process.poll() is not None:
                    raise SystemExit(
                        f"{service} exited at start; see {log_dir / (service + '.log')}"
                    )
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/health/ready")
                except httpx.TransportError:
                    continue  # not listening yet
                if answer.status_code == 200:
                    del pending[service]
            if pending:
                await asyncio.sleep(0.2)
    if pending:
        raise SystemExit(f"not ready in {timeout_s:.0f} s: {', '.join(pending)}; see {log_dir}")


async def _prepare(run: DemoRun, bootstrap: str, database_url: str) -> None:
    await provision(bootstrap, prefix=run.prefix)
    await migrate_services(database_url, DEMO_SCHEMAS, run.suffix)


async def _drop(run: DemoRun, bootstrap: str, database_url: str) -> None:
    """Deletes this run's topics, consumer groups (its services have stopped) and schemas."""
    await unprovision(bootstrap, run.prefix)
    await delete_groups(bootstrap, run.prefix)
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        for service in DEMO_SCHEMAS:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{run.schema(service)}" CASCADE')
    finally:
        await connection.close()


@dataclass(frozen=True, slots=True)
class DemoPortal:
    """The portal of this run: where it listens, and what the other services need to trust it."""

    port: int
    signing_secret: str
    password: str
    totp_key: str  # seals the TOTP secrets in the portal's schema; made up per run

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def new(cls, port: int | None) -> DemoPortal:
        return cls(
            port or free_port(),
            # The demo key routing is given with the others (demo_routing_secrets_json).
            demo_secret(PORTAL_KEY_ID),
            # Made up per run, printed for the person trying the demo.
            "demo-" + base64.b32encode(os.urandom(10)).decode().lower(),
            base64.b64encode(os.urandom(32)).decode(),
        )

    def env(self, peers: _Peers) -> dict[str, str]:
        prefix = ENV_PREFIX["portal"]
        intake = peers.intake_env
        return {
            f"{prefix}HTTP_PORT": str(self.port),
            f"{prefix}PUBLIC_URL": self.url,
            # Plain http on the loopback for the demo; behind HTTPS in production.
            f"{prefix}COOKIE_SECURE": "false",
            f"{prefix}SIGNING_KEY_ID": PORTAL_KEY_ID,
            f"{prefix}SIGNING_SECRET": self.signing_secret,
            f"{prefix}TOTP_KEY": self.totp_key,
            f"{prefix}INTAKE_IDENTITY_URL": (
                f"http://127.0.0.1:{intake['AIGUILLAGE_INTAKE_IDENTITY_API_PORT']}"
                "/internal/v1/identity-releases"
            ),
            f"{prefix}IDENTITY_API_SECRET": intake["AIGUILLAGE_INTAKE_IDENTITY_API_SECRET"],
        }

    async def create_users(
        self, run: DemoRun, database_url: str, centre_id: str, prescriber_id: str
    ) -> list[tuple[str, str, str]]:
        """A centre user, a prescriber user and an operator, enrolled: (label, e-mail, TOTP
        secret)."""
        from datetime import UTC, datetime

        from portal.adapters.passwords import hash_password
        from portal.adapters.postgres import PortalStore
        from portal.adapters.secret_box import SecretBox
        from portal.use_cases.accounts import create_enrolled_user

        pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=1,
            server_settings={"search_path": run.schema("portal")},
        )
        assert pool is not None
        made = []
        try:
            for label, email, role, centre, prescriber in (
                (f"centre {centre_id}", DEMO_CENTRE_EMAIL, "centre", centre_id, None),
                (
                    f"prescriber {prescriber_id}",
                    DEMO_PRESCRIBER_EMAIL,
                    "prescriber",
                    None,
                    prescriber_id,
                ),
                ("operator", DEMO_OPERATOR_EMAIL, "operator", None, None),
            ):
                _, secret = await create_enrolled_user(
                    PortalStore(pool, SecretBox(self.totp_key)),
                    email,
                    f"Démo {label}",
                    role,  # type: ignore[arg-type]
                    centre,
                    prescriber,
                    self.password,
                    datetime.now(UTC),
                    hash_password,
                )
                made.append((label, email, secret))
        finally:
            await pool.close()
        return made

    def credentials(self, users: list[tuple[str, str, str]], offer: str | None) -> list[str]:
        import pyotp

        lines = [f"\nPortal: {self.url}  (sign in with e-mail, password and the 6-digit code)"]
        for label, email, secret in users:
            lines += [
                f"  {label}: {email}  password {self.password}",
                f"    TOTP secret {secret} (add it to an authenticator app) — code now: "
                f"{pyotp.TOTP(secret).now()}",
            ]
        lines.append(
            '  A fresh code: .venv/bin/python -c "import pyotp; '
            "print(pyotp.TOTP('<secret>').now())\""
        )
        if offer:
            lines.append(f"  An offer waiting for the centre: {self.url}/centre/offres/{offer}")
            lines.append(
                f"  Its timeline (operator console): {self.url}/operateur/orientations/{offer}"
            )
        lines.append(
            f"  Operator console: {self.url}/operateur/indicateurs (map and indicators), "
            f"{self.url}/operateur/reseau (places), {self.url}/operateur/lettres-mortes"
        )
        return lines


def _first_offer(outcomes: dict[str, Outcome]) -> tuple[str, str, str] | None:
    """(referral, centre, prescriber) of the first referral routed (by reference: the same
    demo case each run)."""
    for subject in sorted(outcomes):
        outcome = outcomes[subject]
        if outcome.kind == "routed" and outcome.decision is not None:
            data = outcome.decision["data"]
            return subject, data["site"]["centre_id"], data["prescriber_id"]
    return None


async def _serve_until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("\nThe services keep running (--serve); Ctrl-C stops them.", flush=True)
    await stop.wait()


async def _run(
    bootstrap: str,
    database_url: str,
    count: int,
    log_dir: Path,
    keep: bool,
    serve: bool = False,
    portal_port: int | None = None,
) -> int:
    run = DemoRun.new()
    print(
        f"Demo run {run.token}: topics {run.prefix}*, schemas "
        f"{', '.join(run.schema(s) for s in DEMO_SCHEMAS)} (fresh; dropped at the end"
        f"{' — kept: --keep' if keep else ' unless --keep'})"
    )
    services: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    peers: _Peers | None = None
    codes: list[int | None] = []
    portal = DemoPortal.new(portal_port)
    credentials: list[str] = []
    try:
        await _prepare(run, bootstrap, database_url)
        peers = await _start_peers(portal.url)
        services = _start_services(
            run,
            bootstrap,
            database_url,
            log_dir,
            {
                "notifications": peers.env,
                "referral-intake": peers.intake_env,
                "portal": {**portal.env(peers), **console_env(run)},
            },
        )
        ready_from = time.monotonic()
        await _wait_ready(services, log_dir)
        print(f"Services ready (GET /health/ready → 200) in {time.monotonic() - ready_from:.1f} s")
        outcomes, rejected = await _exchange(run, bootstrap, count)
        await peers.wait_for(outcomes)
        first = _first_offer(outcomes)
        centre_id, prescriber_id = (
            (first[1], first[2]) if first else ("HDF-ARRAS", "parquet-tj-lille")
        )
        users = await portal.create_users(run, database_url, centre_id, prescriber_id)
        credentials = portal.credentials(users, first[0] if first else None)
        if serve:
            print("\n".join(summary_lines(outcomes, rejected)))
            print("\n".join(credentials), flush=True)
            await _serve_until_interrupted()
    finally:
        for process, _ in services.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process, _ in services.values()]
        if peers is not None:
            await peers.stop()
        if not keep:
            await _drop(run, bootstrap, database_url)
    if not serve:
        print("\n".join(summary_lines(outcomes, rejected)))
    assert peers is not None
    peers.print_summary(outcomes)
    if not serve:
        print("\n".join(credentials))
        print("  (--serve keeps the services and the portal running to sign in.)")
    print(f"\nServices stopped with SIGTERM, exit codes {codes}. Logs (this run's): {log_dir}")
    if keep:
        print(f"Kept: topics {run.prefix}*, schemas *{run.suffix}.")
    return 0 if all(o.done for o in outcomes.values()) and not any(codes) else 1


async def _exchange(
    run: DemoRun, bootstrap: str, count: int
) -> tuple[dict[str, Outcome], list[dict[str, Any]]]:
    # This run's topics are new: reading them from the beginning misses nothing.
    reader = AIOKafkaConsumer(
        run.topic(topics.ROUTED),
        run.topic(topics.NOTIFICATIONS_OUTBOUND),
        run.topic(topics.REJECTED),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    intake = run.topic(topics.INTAKE)
    outcomes: dict[str, Outcome] = {}
    rejected: list[dict[str, Any]] = []
    try:
        for index in range(count):
            referral = make_referral(index, referral_id=run.referral_id(index))
            value = encode_event(referral)
            sent = await producer.send_and_wait(
                intake,
                value,
                key=referral.subject.encode(),
                headers=_signed(referral.data.prescriber.prescriber_id, value),
            )
            outcomes[referral.subject] = Outcome(referral, sent.timestamp)
        for value, key, sender in _bad_inputs(run, count):
            await producer.send_and_wait(
                intake, value, key=key.encode(), headers=_signed(sender, value)
            )
        deadline = time.monotonic() + 120
        last_news = time.monotonic()
        # Until every referral has its outcome, then until nothing more arrives for QUIET_S (a
        # reminder, a re-told position): the summary shows all, the same from run to run.
        while time.monotonic() < deadline and (
            not all(o.done for o in outcomes.values())
            or len(rejected) < 2
            or time.monotonic() - last_news < QUIET_S
        ):
            for records in (await reader.getmany(timeout_ms=200)).values():
                last_news = time.monotonic()
                for record in records:
                    body = json.loads(record.value or b"{}")
                    if record.topic == run.topic(topics.REJECTED):
                        rejected.append(body)
                        continue
                    outcome = outcomes.get(body.get("subject", ""))
                    if outcome is None:
                        continue
                    if record.topic == run.topic(topics.ROUTED):
                        outcome.decision = body
                    else:
                        outcome.notifications.append((record.timestamp, body["data"]))
    finally:
        await producer.stop()
        await reader.stop()
    rejected.sort(key=lambda body: str(body["subject"]))
    return outcomes, rejected


def _bad_inputs(run: DemoRun, count: int) -> list[tuple[bytes, str, str]]:
    """Two inputs a prescriber's system could get wrong: not JSON at all, and a referral that
    breaks two rules of its schema at once (both are reported)."""
    not_json = b"<referral>not json</referral>"
    wrong = make_referral(0, referral_id=run.referral_id(count + 1)).model_dump(mode="json")
    wrong["data"]["needed_services"] = ["astrology"]
    wrong["data"]["person"]["interpreter_needed"] = "yes"
    sender = wrong["data"]["prescriber"]["prescriber_id"]
    return [
        (not_json, run.referral_id(count), "parquet-tj-lille"),
        (json.dumps(wrong).encode(), wrong["subject"], sender),
    ]


def _signed(prescriber_id: str, value: bytes) -> list[tuple[str, bytes]]:
    """Demo prescribers sign like real ones (with made-up secrets)."""
    return [(k, v.encode()) for k, v in sign_as(prescriber_id, value).items()]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2 * len(DEMO_CASES))
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "AIGUILLAGE_DATABASE_URL",
            "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage",
        ),
    )
    parser.add_argument("--log-dir", type=Path, default=Path(".local/demo/logs"))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep this run's topics and schemas (to inspect them) instead of dropping them",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the batch, keep the services and the portal running until Ctrl-C",
    )
    parser.add_argument(
        "--portal-port", type=int, default=None, help="the portal's port (default: a free one)"
    )
    args = parser.parse_args()
    sys.exit(
        asyncio.run(
            _run(
                args.bootstrap,
                args.database_url,
                args.count,
                args.log_dir,
                args.keep,
                args.serve,
                args.portal_port,
            )
        )
    )


@dataclass
class _Peers:
    """The demo's local SMTP sink and webhook receiver, and the env pointing notifications there."""

    smtp: Any
    hooks: Any
    env: dict[str, str]
    intake_env: dict[str, str] = field(default_factory=dict)

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.hooks.stop()

    def _mails(self, outcomes: dict[str, Outcome]) -> list[Any]:
        return [m for m in self.smtp.received if m.message["X-Aiguillage-Reference"] in outcomes]

    def _calls(self, outcomes: dict[str, Outcome]) -> list[Any]:
        return [c for c in self.hooks.calls if c.json().get("reference") in outcomes]

    async def wait_for(self, outcomes: dict[str, Outcome], timeout_s: float = 60) -> None:
        """Until every routed referral's centre was called and e-mailed, then until no call and
        no e-mail arrived for QUIET_S (or the deadline)."""
        routed = sum(1 for o in outcomes.values() if o.kind == "routed")
        deadline = time.monotonic() + timeout_s
        seen, since = (-1, -1), time.monotonic()
        while time.monotonic() < deadline:
            calls, mails = self._calls(outcomes), self._mails(outcomes)
            if (len(calls), len(mails)) != seen:
                seen, since = (len(calls), len(mails)), time.monotonic()
            offered = [c for c in calls if c.json()["topic"] == "referral_offered"]
            all_there = len(offered) >= routed and len(mails) >= routed
            if all_there and time.monotonic() - since >= QUIET_S:
                return
            await asyncio.sleep(0.2)

    def print_summary(self, outcomes: dict[str, Outcome]) -> None:
        mails, calls = self._mails(outcomes), self._calls(outcomes)
        print(f"\nE-mails captured by the local SMTP sink (port {self.smtp.port}): {len(mails)}")
        # The first referral's, whatever order they arrived in: two runs show the same one.
        to_centres = [m for m in mails if "coordination@" in m.rcpt_tos[0]] or mails
        example = min(
            to_centres, key=lambda m: str(m.message["X-Aiguillage-Reference"]), default=None
        )
        if example is not None:
            print(f"  To: {', '.join(example.rcpt_tos)}")
            print(f"  Subject: {example.subject}")
            print(f"  Message-ID: {example.message_id}")
            for line in [ln for ln in example.text().splitlines() if ln.strip()][:4]:
                print("\n".join(_wrapped(f"| {line}", 2, hanging=2)))
        verified = sum(1 for c in calls if c.signature_ok)
        call_topics = Counter(c.json()["topic"] for c in calls)
        print(
            f"\nWebhook calls received by the local receiver (port {self.hooks.port}): "
            f"{len(calls)} ({', '.join(f'{t} {n}' for t, n in sorted(call_topics.items()))}), "
            f"signature verified on {verified}"
        )
        offered = [c for c in calls if c.json()["topic"] == "referral_offered"]
        if offered:
            delays = sorted(
                c.at * 1000 - outcomes[c.json()["reference"]].submitted_ms for c in offered
            )
            print(
                f"  submit → centre's webhook called, {len(delays)} referrals: "
                f"median {statistics.median(delays):.0f} ms, worst {delays[-1]:.0f} ms"
            )
            # Only that the identity arrived, inside a verified body; never the identity itself.
            with_person = [
                c for c in offered if c.signature_ok and isinstance(c.json().get("person"), dict)
            ]
            print(
                f"  offers carrying the person's identity (from intake, signature verified): "
                f"{len(with_person)} of {len(offered)}"
            )
        if offered:
            call = min(offered, key=lambda c: str(c.json()["reference"]))
            body = call.json()
            print(f"  POST {call.path} -> {call.status}")
            signature = call.headers.get("x-aiguillage-signature", "")
            print(f"  X-Aiguillage-Signature: {signature[:40]}...")
            print(f"  Idempotency-Key: {call.idempotency_key}")
            print(f"  topic={body['topic']} reference={body['reference']} title={body['title']!r}")


async def _start_peers(portal_url: str = "") -> _Peers:
    from aiguillage_demo.peers import SmtpSink, WebhookReceiver

    secret = base64.b64encode(os.urandom(24)).decode()
    smtp, hooks = SmtpSink(), WebhookReceiver(secret.encode())
    await smtp.start()
    await hooks.start()
    prefix = "AIGUILLAGE_NOTIFICATIONS_"
    env = {
        f"{prefix}WEBHOOK_URL_TEMPLATE": hooks.base_url + "/hooks/{kind}/{id}",
        f"{prefix}WEBHOOK_SECRET": secret,
        f"{prefix}SMTP_HOST": "127.0.0.1",
        f"{prefix}SMTP_PORT": str(smtp.port),
        f"{prefix}DELIVERY_POLL_INTERVAL_S": "0.2",
        # Offers and reminders link to the offer's page in this run's portal.
        f"{prefix}PORTAL_URL": portal_url,
    }
    # Intake's identity API on a free local port, with a per-run service secret, so that the
    # centres' offer webhooks carry the person (docs/intake.md).
    service_secret = base64.b64encode(os.urandom(24)).decode()
    port = free_port()
    intake_env = {
        "AIGUILLAGE_INTAKE_IDENTITY_API_HOST": "127.0.0.1",
        "AIGUILLAGE_INTAKE_IDENTITY_API_PORT": str(port),
        "AIGUILLAGE_INTAKE_IDENTITY_API_SECRET": service_secret,
    }
    env[f"{prefix}INTAKE_IDENTITY_URL"] = f"http://127.0.0.1:{port}/internal/v1/identity-releases"
    env[f"{prefix}IDENTITY_API_SECRET"] = service_secret
    return _Peers(smtp, hooks, env, intake_env)
