"""``aiguillage timeline``: one referral offered, refused a stranger's answer, declined, re-routed,
accepted and completed, told in order with who acted and why, from the three services' own
records, on the real broker and database with the services running as processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from aiguillage_common.migrations.cli import migrate_services
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.events.centres import Actor
from tests.conftest import Isolated
from tests.support.routing_events import answer, path_report
from tests.support.services import BIN, free_port
from tests.support.waiting import eventually


def cli_env(isolated: Isolated) -> dict[str, str]:
    """The services' own settings, as an operator has them (each service's schema and topics)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGUILLAGE_")}
    return env | {
        "AIGUILLAGE_DATABASE_URL": isolated.endpoints.database_url,
        "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS": isolated.endpoints.kafka_bootstrap_servers,
        "AIGUILLAGE_INTAKE_DB_SCHEMA": isolated.schema("referral-intake"),
        "AIGUILLAGE_ROUTING_DB_SCHEMA": isolated.schema("routing"),
        "AIGUILLAGE_NOTIFICATIONS_DB_SCHEMA": isolated.schema("notifications"),
        "AIGUILLAGE_OPERATIONS_DB_SCHEMA": f"operations{isolated.suffix}",
        "AIGUILLAGE_PORTAL_DB_SCHEMA": isolated.schema("portal"),
        "AIGUILLAGE_ROUTING_TOPIC_PREFIX": isolated.prefix,
        "AIGUILLAGE_TOPIC_PREFIX": isolated.prefix,  # read by the dead-letter commands
        **{
            f"AIGUILLAGE_{service}_CONSUMER_GROUP": f"{isolated.prefix}{name}"
            for service, name in (
                ("INTAKE", "referral-intake"),
                ("ROUTING", "routing"),
                ("NOTIFICATIONS", "notifications"),
            )
        },
        "COLUMNS": "200",
    }


async def aiguillage(isolated: Isolated, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "aiguillage"), *args],
        env=cli_env(isolated),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def routing_state(isolated: Isolated, referral_id: str) -> tuple[str, str, int] | None:
    row = await isolated.db.fetchrow(
        f"SELECT status, site_id, attempt FROM {isolated.schema('routing')}.referrals"
        " WHERE referral_id = $1",
        referral_id,
    )
    return None if row is None else (row["status"], row["site_id"], row["attempt"])


async def centre_of(isolated: Isolated, site_id: str) -> str:
    centre: str = await isolated.db.fetchval(
        f"SELECT centre_id FROM {isolated.schema('routing')}.sites WHERE site_id = $1", site_id
    )
    return centre


async def offers_told(isolated: Isolated, referral_id: str, count: int) -> None:
    table = f"{isolated.schema('notifications')}.notifications"
    await eventually(
        lambda: isolated.count(
            f"SELECT count(*) FROM {table} WHERE referral_id = $1 AND topic = 'referral_offered'",
            referral_id,
        ),
        lambda n: n == count,
        timeout_s=90,
        what=f"offer {count} told to the centre",
    )


CENTRE_USER = Actor(kind="centre_user", id="u:timeline-test-user")


async def test_the_timeline_tells_offer_decline_reroute_acceptance_and_completion_in_order(
    isolated: Isolated,
) -> None:
    await migrate_services(isolated.endpoints.database_url, ["operations"], isolated.suffix)
    await isolated.start_all()
    referral = make_referral(1, referral_id=f"tl{isolated.suffix}-000001")  # Lyon
    ref = referral.subject
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    _, first_site, _ = await eventually(
        lambda: routing_state(isolated, ref),
        lambda state: state is not None and state[0] == "offered",
        timeout_s=90,
        what="the first offer",
    )
    first_centre = await centre_of(isolated, first_site)
    responses = isolated.topic(topics.CENTRE_RESPONSES)
    await offers_told(isolated, ref, 1)  # the centre answers once told

    # A centre the referral was never offered to answers: refused, the referral unchanged.
    await isolated.kafka.send_event(
        responses, answer(ref, first_site, "accepted", centre="HDF-ARRAS")
    )
    await isolated.kafka.send_event(
        responses, answer(ref, first_site, "declined", "no_capacity", centre=first_centre)
    )
    _, second_site, _ = await eventually(
        lambda: routing_state(isolated, ref),
        lambda state: state is not None and state[2] == 2 and state[0] == "offered",
        timeout_s=90,
        what="the re-route",
    )
    second_centre = await centre_of(isolated, second_site)
    await offers_told(isolated, ref, 2)
    # Accepted by a centre user through the portal (portal key, the user named as actor).
    await isolated.kafka.send_event(
        responses, answer(ref, second_site, "accepted", centre=second_centre, actor=CENTRE_USER)
    )
    await eventually(
        lambda: routing_state(isolated, ref),
        lambda state: state is not None and state[0] == "placed",
        timeout_s=90,
        what="the placement",
    )
    await isolated.kafka.send_event(
        responses, path_report(ref, second_site, "path_completed", centre=second_centre)
    )
    await eventually(
        lambda: routing_state(isolated, ref),
        lambda state: state is not None and state[0] == "closed",
        timeout_s=90,
        what="the path completed",
    )
    # Notifications decided to tell each centre of its offer, and the prescriber of the path.
    notifications = isolated.schema("notifications")
    await eventually(
        lambda: isolated.db.fetch(
            f"SELECT topic, recipient_id FROM {notifications}.notifications WHERE referral_id = $1",
            ref,
        ),
        lambda rows: (
            [r["topic"] for r in rows].count("referral_offered") == 2
            and "path_reported" in {r["topic"] for r in rows}
        ),
        timeout_s=90,
        what="both offers and the path report notified",
    )
    # The stranger's answer is on routing's dead-letter topic.
    await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ROUTING_DEAD_LETTER)),
        lambda records: any(r.key == ref for r in records),
        timeout_s=60,
        what="the refused answer dead-lettered",
    )

    # An operator looks at it and discards it: the timeline names who did.
    listed = await aiguillage(isolated, "dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (dead_letter,) = [d for d in map(json.loads, listed.stdout.splitlines()) if d["key"] == ref]
    discarded = await aiguillage(
        isolated,
        "dead-letters",
        "discard",
        dead_letter["id"],
        "--reason",
        "a stranger's answer",
        "--operator",
        "alice",
    )
    assert discarded.returncode == 0, discarded.stderr

    done = await aiguillage(isolated, "timeline", ref, "--json")
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times)

    def first(kind: str, after: int = -1, **where: Any) -> int:
        for index, entry in enumerate(entries):
            if (
                index > after
                and entry["kind"] == kind
                and all(entry.get(k) == v for k, v in where.items())
            ):
                return index
        raise AssertionError(f"no {kind} {where} after step {after}:\n{done.stdout}")

    prescriber = referral.data.prescriber.prescriber_id
    admitted = first("referral.admitted")
    assert entries[admitted]["service"] == "intake"
    assert entries[admitted]["actors"] == [f"prescriber:{prescriber}"]
    offered = first("decision.routed", admitted)
    assert entries[offered]["actors"] == ["service:routing"]
    assert f"offered to {first_site} (attempt 1" in entries[offered]["what"]
    stranger = first("centre.accepted", offered)
    assert entries[stranger]["actors"][0] == "centre:HDF-ARRAS"
    assert "REFUSED by routing" in entries[stranger]["what"]
    declined = first("centre.declined", stranger)
    assert entries[declined]["actors"] == [f"centre:{first_centre}", f"site:{first_site}"]
    assert entries[declined]["why"] == ["no_capacity"]
    rerouted = first("decision.routed", declined)
    assert f"offered to {second_site} (attempt 2" in entries[rerouted]["what"]
    assert entries[rerouted]["why"] == ["centre.declined", "no_capacity"]
    accepted = first("centre.accepted", rerouted)
    assert entries[accepted]["actors"] == [
        f"centre:{second_centre}",
        f"site:{second_site}",
        f"centre_user:{CENTRE_USER.id}",
    ]
    assert "REFUSED" not in entries[accepted]["what"]
    placed = first("referral.placed", accepted)
    assert entries[placed]["actors"] == [f"centre:{second_centre}", f"site:{second_site}"]
    completed = first("centre.path_report", placed)
    assert entries[completed]["why"] == ["path_completed"]
    reported = first("referral.path_reported", completed)
    assert entries[reported]["service"] == "routing"
    # Notifications of each offer come after that offer; the prescriber's are delivered.
    told = first("notification.decided", offered, actors=[f"centre:{first_centre}"])
    assert told < declined
    assert first("notification.decided", rerouted, actors=[f"centre:{second_centre}"]) > rerouted
    first("delivery.queued", offered, actors=[f"prescriber:{prescriber}"])
    # The dead letter about the stranger's answer, linked to it.
    refused = first("message.dead_lettered")
    assert entries[refused]["service"] == "routing"
    assert "centre.accepted" in entries[refused]["why"]
    discard = first("dead_letter.discarded", refused)
    assert entries[discard]["actors"] == ["operator:alice"]
    assert "stranger" not in done.stdout  # the operator's words are not shown

    # The table operators read; never the person (identity) in any form.
    table = await aiguillage(isolated, "timeline", ref)
    assert table.returncode == 0, table.stderr
    assert f"now, routing: closed at {second_site}" in table.stdout
    person = referral.data.identity
    for output in (done.stdout, table.stdout):
        for secret in (person.last_name, person.first_name, str(person.birth_date)):
            assert secret not in output

    # The broker down (a closed port): one line; PostgreSQL's part of the story on request.
    closed = f"127.0.0.1:{free_port()}"
    down = await aiguillage(isolated, "timeline", ref, "--bootstrap-servers", closed)
    assert down.returncode == 2
    assert down.stderr.strip() == f"cannot reach Kafka at {closed} (KafkaConnectionError)"
    assert "Traceback" not in down.stdout + down.stderr
    partial = await aiguillage(
        isolated, "timeline", ref, "--json", "--without-kafka", "--bootstrap-servers", closed
    )
    assert partial.returncode == 0, partial.stderr
    kinds = [json.loads(line)["kind"] for line in partial.stdout.splitlines()]
    assert "referral.placed" in kinds
    assert "centre.declined" not in kinds

    # The other subcommands on the same records.
    decision = await aiguillage(isolated, "decision", ref)
    assert decision.returncode == 0, decision.stderr
    assert f"attempt 2: routed -> {second_site}" in decision.stdout
    deliveries = await aiguillage(isolated, "deliveries", ref)
    assert deliveries.returncode == 0, deliveries.stderr
    assert f"prescriber:{prescriber}" in deliveries.stdout

    async def lag() -> list[dict[str, Any]]:
        done = await aiguillage(isolated, "lag", "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def centres_read(rows: list[dict[str, Any]]) -> bool:
        """Routing's group on centres.responses has committed all four answers and reports."""
        mine = [r for r in rows if r["topic"] == responses]
        return sum(r["end"] for r in mine) == 4 and sum(r["lag"] for r in mine) == 0

    rows = await eventually(lag, centres_read, timeout_s=60, what="routing caught up")
    assert {r["service"] for r in rows} == {"referral-intake", "routing", "notifications"}
    assert all(r["group"].startswith(isolated.prefix) for r in rows)
    assert {r["service"] for r in rows if r["topic"] == responses} == {"routing"}
    if path := os.environ.get("AIGUILLAGE_TIMELINE_EXCERPT"):  # for docs/operations.md
        await asyncio.to_thread(Path(path).write_text, table.stdout)
