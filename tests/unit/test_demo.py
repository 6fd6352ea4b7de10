"""The demo's own parts: a run of its own, readiness by health endpoint, an honest tally, and
rejection messages printed whole."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiguillage_demo.cli import (
    DemoRun,
    Outcome,
    _wait_ready,
    service_env,
    summary_lines,
    tally,
)
from aiguillage_demo.samples import make_referral
from tests.support.services import free_port


def _notice(topic: str, recipient: str, ts: int) -> tuple[int, dict[str, Any]]:
    return ts, {"topic": topic, "recipient_id": recipient, "recipient_kind": "prescriber"}


def _outcome(index: int, event_type: str | None, **data: Any) -> Outcome:
    outcome = Outcome(make_referral(index, referral_id=f"demo-{index:02d}-test0000"), 1_000)
    if event_type is not None:
        outcome.decision = {"event_type": event_type, "data": data}
    return outcome


def _routed(index: int) -> Outcome:
    outcome = _outcome(index, "referral.routed", site={"site_id": "HDF-ARRAS-59"}, distance_km=0)
    outcome.notifications += [
        _notice("referral_received", "parquet-tj-lille", 1_200),
        _notice("referral_offered", "HDF-ARRAS", 2_000),
        _notice("referral_routed", "parquet-tj-lille", 2_100),
        _notice("answer_reminder", "HDF-ARRAS", 9_000),  # later, and not about the decision
    ]
    return outcome


def _waiting(index: int) -> Outcome:
    site = {"site_id": "OCC-TOULOUSE-31"}
    outcome = _outcome(index, "referral.waitlisted", site=site, position=index)
    outcome.notifications.append(_notice("referral_waitlisted", "parquet-tj-toulouse", 1_500))
    return outcome


def test_waitlisted_referrals_are_counted_as_waiting_with_their_site_not_unroutable() -> None:
    outcomes = {o.referral.subject: o for o in (_routed(0), _waiting(3), _waiting(15))}
    unroutable = _outcome(11, "referral.unroutable", reason="no_site_offers_the_services")
    unroutable.notifications.append(_notice("referral_unroutable", "parquet-tj-dijon", 1_300))
    outcomes[unroutable.referral.subject] = unroutable
    outcomes["demo-20-test0000"] = _outcome(20, None)  # no decision yet
    assert tally(outcomes, rejected=2) == (
        "1 routed, 2 waiting (OCC-TOULOUSE-31 ×2), 1 unroutable, 1 unfinished, 2 rejected"
    )
    lines = "\n".join(summary_lines(outcomes, []))
    assert "waiting at OCC-TOULOUSE-31 (position 3)" in lines


def test_latency_is_to_the_last_notice_about_the_decision_not_a_later_reminder() -> None:
    outcome = _routed(0)
    assert outcome.done
    assert outcome.latency_ms() == 1_100


def test_rejection_messages_are_wrapped_whole_with_every_problem() -> None:
    long_message = (
        "data.needed_services.0: Input should be 'initial_assessment', 'responsibility_course', "
        "'discussion_group', 'psychological_followup', 'psychiatric_followup', 'addiction_care', "
        "'social_support', 'employment_support', 'eviction_housing' or 'helpline_orientation'"
    )
    rejected = [
        {
            "subject": "demo-25-test0000",
            "data": {
                "reason": "unknown_enum_value",
                "field_path": "data.needed_services.0",
                "message": "2 problems: …",
                "prescriber_id": "parquet-tj-lille",
                "errors": [
                    {"message": long_message},
                    {"message": "data.person.interpreter_needed: Input should be a valid boolean"},
                ],
            },
        }
    ]
    lines = summary_lines({}, rejected)
    printed = " ".join(" ".join(lines).split())
    assert long_message in printed  # every word, in order: wrapped, never cut
    assert "data.person.interpreter_needed: Input should be a valid boolean" in printed
    assert all(len(line) <= 130 for line in lines)


def test_each_run_has_its_own_topics_schemas_group_and_health_port() -> None:
    first, second = DemoRun.new(), DemoRun.new()
    assert first.prefix != second.prefix
    assert first.suffix != second.suffix
    env = service_env(first, "routing", "k:9092", "postgresql://db", 4321)
    assert env["AIGUILLAGE_ROUTING_TOPIC_PREFIX"] == first.prefix
    assert env["AIGUILLAGE_ROUTING_DB_SCHEMA"] == f"routing_demo{first.token}"
    assert env["AIGUILLAGE_ROUTING_CONSUMER_GROUP"] == f"{first.prefix}routing"
    assert env["AIGUILLAGE_ROUTING_HEALTH_PORT"] == "4321"
    # Referral ids say which demo case they are, so two runs compare line by line.
    assert first.referral_id(3) == f"demo-03-{first.token}"


async def _health_server(statuses: list[int]) -> tuple[web.AppRunner, int, list[int]]:
    served: list[int] = []

    async def ready(_request: web.Request) -> web.Response:
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        served.append(status)
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_get("/health/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port, served


@pytest.fixture
def running() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def exited() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    return process


async def test_readiness_waits_for_the_services_own_endpoint_to_answer_200(
    tmp_path: Path, running: subprocess.Popen[bytes]
) -> None:
    runner, port, served = await _health_server([503, 503, 200])
    try:
        await _wait_ready({"routing": (running, port)}, tmp_path, timeout_s=30)
    finally:
        await runner.cleanup()
    assert served == [503, 503, 200]


async def test_a_service_that_exits_at_start_stops_the_demo_at_once(
    tmp_path: Path, exited: subprocess.Popen[bytes]
) -> None:
    with pytest.raises(SystemExit, match="routing exited at start"):
        await _wait_ready({"routing": (exited, free_port())}, tmp_path, timeout_s=30)
