"""``aiguillage-demo``: run the three services on the real infrastructure and route a demo batch.

Expects Kafka and PostgreSQL to answer (``./run demo`` starts them first). Migrates, starts each
service as its own process, publishes referrals across several départements and needs plus two bad
inputs, waits until every referral has its outcome, prints where each went and what was notified,
and the time from submit to both notifications. Then stops the services with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aiguillage_common.codec import encode_event
from aiguillage_common.migrations.cli import migrate_services
from aiguillage_common.provisioning import provision
from aiguillage_demo.samples import DEMO_CASES, make_referral, new_referral_id
from aiguillage_demo.signing import SECRETS_ENV, demo_secrets_json, sign_as
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted

COMMANDS = {
    "referral-intake": "aiguillage-intake",
    "routing": "aiguillage-routing",
    "notifications": "aiguillage-notifications",
}
ENV_PREFIX = {
    "referral-intake": "AIGUILLAGE_INTAKE_",
    "routing": "AIGUILLAGE_ROUTING_",
    "notifications": "AIGUILLAGE_NOTIFICATIONS_",
}


@dataclass
class Outcome:
    referral: ReferralSubmitted
    submitted_ms: int
    decision: dict[str, Any] | None = None
    notifications: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        expected = 2 if self.decision and self.decision["event_type"] == "referral.routed" else 1
        # "Received" comes from intake's acceptance, not from the routing decision.
        about_decision = [n for _, n in self.notifications if n["topic"] != "referral_received"]
        return self.decision is not None and len(about_decision) >= expected

    def latency_ms(self) -> int:
        return max(ts for ts, _ in self.notifications) - self.submitted_ms


def _start_services(
    bootstrap: str,
    database_url: str,
    log_dir: Path,
    extra_env: dict[str, dict[str, str]] | None = None,
) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    processes = []
    for service, command in COMMANDS.items():
        prefix = ENV_PREFIX[service]
        env = {
            **os.environ,
            f"{prefix}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            f"{prefix}DATABASE_URL": database_url,
            **(extra_env or {}).get(service, {}),
        }
        env.setdefault("AIGUILLAGE_INTAKE_IDENTITY_MASTER_KEY", _demo_master_key(log_dir))
        env.setdefault(SECRETS_ENV, demo_secrets_json())
        with (log_dir / f"{service}.log").open("ab") as log:
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / command)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def _demo_master_key(log_dir: Path) -> str:
    """A demo key kept beside the demo's logs; production reads its key from a secret store."""
    import base64

    path = log_dir.parent / "demo-master-key"
    if not path.exists():
        path.write_text(base64.b64encode(os.urandom(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


async def _wait_started(log_dir: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for service, process in zip(COMMANDS, processes, strict=True):
            if process.poll() is not None:
                raise SystemExit(f"{service} exited at start; see {log_dir / (service + '.log')}")
        started = [
            '"event": "service.started"' in (log_dir / f"{s}.log").read_text(errors="replace")
            for s in COMMANDS
        ]
        if all(started):
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"services did not start in time; see {log_dir}")


async def _run(bootstrap: str, database_url: str, count: int, log_dir: Path) -> int:
    await provision(bootstrap)
    await migrate_services(database_url, list(COMMANDS))
    peers = await _start_peers()
    processes = _start_services(
        bootstrap,
        database_url,
        log_dir,
        {"notifications": peers.env, "referral-intake": peers.intake_env},
    )
    try:
        await _wait_started(log_dir, processes)
        outcomes, rejected = await _exchange(bootstrap, count)
        await peers.wait_for(outcomes)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in processes]
        await peers.stop()
    _print_summary(outcomes, rejected)
    peers.print_summary(outcomes)
    print(f"\nServices stopped with SIGTERM, exit codes {codes}. Logs: {log_dir}")
    return 0 if all(o.done for o in outcomes.values()) and not any(codes) else 1


async def _exchange(bootstrap: str, count: int) -> tuple[dict[str, Outcome], list[dict[str, Any]]]:
    reader = AIOKafkaConsumer(
        topics.ROUTED.name,
        topics.NOTIFICATIONS_OUTBOUND.name,
        topics.REJECTED.name,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    await reader.start()
    await reader.getmany(timeout_ms=500)  # settle on the end of each partition before publishing
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    outcomes: dict[str, Outcome] = {}
    rejected: list[dict[str, Any]] = []
    try:
        for index in range(count):
            referral = make_referral(index, referral_id=new_referral_id("demo"))
            value = encode_event(referral)
            sent = await producer.send_and_wait(
                topics.INTAKE.name,
                value,
                key=referral.subject.encode(),
                headers=_signed(referral.data.prescriber.prescriber_id, value),
            )
            outcomes[referral.subject] = Outcome(referral, sent.timestamp)
        bad_key = new_referral_id("demo-bad")
        not_json = b"<referral>not json</referral>"
        await producer.send_and_wait(
            topics.INTAKE.name,
            not_json,
            key=bad_key.encode(),
            headers=_signed("parquet-tj-lille", not_json),
        )
        wrong = make_referral(0, referral_id=new_referral_id("demo-bad")).model_dump(mode="json")
        wrong["data"]["needed_services"] = ["astrology"]
        import json

        wrong_value = json.dumps(wrong).encode()
        await producer.send_and_wait(
            topics.INTAKE.name,
            wrong_value,
            key=wrong["subject"].encode(),
            headers=_signed(wrong["data"]["prescriber"]["prescriber_id"], wrong_value),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not all(o.done for o in outcomes.values()) or len(rejected) < 2
        ):
            for records in (await reader.getmany(timeout_ms=500)).values():
                for record in records:
                    body = json.loads(record.value or b"{}")
                    if record.topic == topics.REJECTED.name:
                        rejected.append(body)
                        continue
                    outcome = outcomes.get(body.get("subject", ""))
                    if outcome is None:
                        continue
                    if record.topic == topics.ROUTED.name:
                        outcome.decision = body
                    else:
                        outcome.notifications.append((record.timestamp, body["data"]))
    finally:
        await producer.stop()
        await reader.stop()
    return outcomes, rejected


def _signed(prescriber_id: str, value: bytes) -> list[tuple[str, bytes]]:
    """Demo prescribers sign like real ones (with made-up secrets)."""
    return [(k, v.encode()) for k, v in sign_as(prescriber_id, value).items()]


def _print_summary(outcomes: dict[str, Outcome], rejected: list[dict[str, Any]]) -> None:
    print(f"\n{'referral':<30} {'from':<6} {'needs':<48} → outcome")
    print("-" * 130)
    for outcome in outcomes.values():
        data = outcome.referral.data
        needs = ", ".join(data.needed_services)
        commune = data.person.residence.commune_insee or "?"
        decision = outcome.decision
        if decision is None:
            result = "NO DECISION (see logs)"
        elif decision["event_type"] == "referral.routed":
            site = decision["data"]["site"]
            result = f"{site['site_id']} ({decision['data']['distance_km']} km)"
        elif decision["event_type"] == "referral.waitlisted":
            data_w = decision["data"]
            result = f"waiting at {data_w['site']['site_id']} (position {data_w['position']})"
        else:
            result = f"{decision['event_type']}: {decision['data'].get('reason', '-')}"
        told = ", ".join(
            f"{n['recipient_kind']}:{n['recipient_id']}" for _, n in outcome.notifications
        )
        print(f"{outcome.referral.subject:<30} {commune:<6} {needs[:48]:<48} → {result}")
        print(f"{'':<30} {'':<6} {'notified':<48}   {told or '-'}")
    print("\nRejected inputs (referrals.rejected):")
    for body in rejected:
        data = body["data"]
        print(
            f"  {body['subject']:<30} {data['reason']:<22} {data.get('field_path') or '-':<28} "
            f"{data['message'][:60]}"
        )
    finished = [o for o in outcomes.values() if o.done]
    if finished:
        latencies = sorted(o.latency_ms() for o in finished)
        print(
            f"\nSubmit → all notifications on notifications.outbound, {len(latencies)} referrals: "
            f"median {statistics.median(latencies):.0f} ms, worst {latencies[-1]} ms"
        )
    routed = sum(
        1 for o in finished if o.decision and o.decision["event_type"] == "referral.routed"
    )
    print(
        f"{routed} routed, {len(finished) - routed} unroutable, "
        f"{len(outcomes) - len(finished)} unfinished, {len(rejected)} rejected"
    )


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
    args = parser.parse_args()
    sys.exit(asyncio.run(_run(args.bootstrap, args.database_url, args.count, args.log_dir)))


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
        """Until every routed referral's centre was called and e-mailed (or the deadline)."""
        routed = sum(
            1
            for o in outcomes.values()
            if o.decision and o.decision["event_type"] == "referral.routed"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            offered = [c for c in self._calls(outcomes) if c.json()["topic"] == "referral_offered"]
            if len(offered) >= routed and len(self._mails(outcomes)) >= routed:
                return
            await asyncio.sleep(0.2)

    def print_summary(self, outcomes: dict[str, Outcome]) -> None:
        mails, calls = self._mails(outcomes), self._calls(outcomes)
        print(f"\nE-mails captured by the local SMTP sink (port {self.smtp.port}): {len(mails)}")
        example = next((m for m in mails if "coordination@" in m.rcpt_tos[0]), None) or (
            mails[0] if mails else None
        )
        if example is not None:
            print(f"  To: {', '.join(example.rcpt_tos)}")
            print(f"  Subject: {example.subject}")
            print(f"  Message-ID: {example.message_id}")
            for line in [ln for ln in example.text().splitlines() if ln.strip()][:4]:
                print(f"  | {line}")
        verified = sum(1 for c in calls if c.signature_ok)
        print(
            f"\nWebhook calls received by the local receiver (port {self.hooks.port}): "
            f"{len(calls)}, signature verified on {verified}"
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
        if calls:
            call = calls[0]
            body = call.json()
            print(f"  POST {call.path} -> {call.status}")
            signature = call.headers.get("x-aiguillage-signature", "")
            print(f"  X-Aiguillage-Signature: {signature[:40]}...")
            print(f"  Idempotency-Key: {call.idempotency_key}")
            print(f"  topic={body['topic']} reference={body['reference']} title={body['title']!r}")


async def _start_peers() -> _Peers:
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
    }
    # Intake's identity API on a free local port, with a per-run service secret, so that the
    # centres' offer webhooks carry the person (docs/intake.md).
    service_secret = base64.b64encode(os.urandom(24)).decode()
    port = _free_port()
    intake_env = {
        "AIGUILLAGE_INTAKE_IDENTITY_API_HOST": "127.0.0.1",
        "AIGUILLAGE_INTAKE_IDENTITY_API_PORT": str(port),
        "AIGUILLAGE_INTAKE_IDENTITY_API_SECRET": service_secret,
    }
    env[f"{prefix}INTAKE_IDENTITY_URL"] = f"http://127.0.0.1:{port}/internal/v1/identity-releases"
    env[f"{prefix}IDENTITY_API_SECRET"] = service_secret
    return _Peers(smtp, hooks, env, intake_env)


def _free_port() -> int:
    """A port free now; intake binds it a moment later (good enough for a local demo)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
