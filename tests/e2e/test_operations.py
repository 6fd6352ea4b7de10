"""What operators rely on: clean SIGTERM, and one referral followed across services by its id."""

from __future__ import annotations

import json

from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually


async def test_sigterm_finishes_in_flight_work_and_a_restart_redoes_nothing(
    isolated: Isolated,
) -> None:
    (intake,) = await isolated.start_all("referral-intake")
    referrals = [make_referral(i, referral_id=f"term{isolated.suffix}-{i:03d}") for i in range(40)]
    for referral in referrals:
        await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    table = f"{isolated.schema('referral-intake')}.referrals"
    await eventually(
        lambda: isolated.count(f"SELECT count(*) FROM {table}"),
        lambda n: n > 0,
        interval_s=0.01,
        what="intake to start on the batch",
    )

    assert intake.terminate(timeout_s=30) == 0
    assert '"event": "service.stopped"' in intake.logs()

    intake.start()
    await wait_started(intake)
    await eventually(
        lambda: isolated.count(f"SELECT count(*) FROM {table}"),
        lambda n: n == len(referrals),
        timeout_s=60,
        what="every referral stored",
    )
    accepted = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ACCEPTED)),
        lambda records: len({r.headers["event_id"] for r in records}) == len(referrals),
        what="one accepted event per referral",
    )
    # A clean stop commits what it finished: nothing is handled twice after the restart.
    second_run = intake.logs().split('"event": "service.stopped"', 1)[1]
    assert '"event": "referral.duplicate"' not in second_run
    assert len(accepted) == len(referrals)


async def test_an_operator_follows_one_referral_by_grepping_its_id(isolated: Isolated) -> None:
    services = await isolated.start_all()
    referral = make_referral(4, referral_id=f"grep{isolated.suffix}-000001")
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
        lambda records: len(records) == 3,
        timeout_s=60,
        what="received, offered and routed notifications",
    )
    steps: dict[str, list[str]] = {}
    for service in services:
        for line in service.logs().splitlines():
            if referral.subject in line:
                entry = json.loads(line)  # every line is JSON
                assert entry["correlation_id"] == str(referral.correlation_id)
                steps.setdefault(service.name, []).append(entry["event"])
    assert "referral.accepted" in steps["referral-intake"]
    assert "referral.offered" in steps["routing"]
    # One line per notification: issued on its channels, or no channel configured (the centre's
    # webhook and e-mail are not configured in this test).
    told = [
        s for s in steps["notifications"] if s in ("notification.issued", "notification.no_channel")
    ]
    assert len(told) == 3
