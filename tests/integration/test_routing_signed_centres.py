"""Routing on the real broker and database trusts a centre's answer or a directory update only when
it is signed with a registered key that may speak for that centre: every other record is
dead-lettered with its reason (and shown by ``aiguillage-dead-letters``), routing moves on, and
neither the referral nor the capacity changes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from aiguillage_common.migrations.cli import migrate_services
from aiguillage_demo.signing import (
    PORTAL_KEY_ID,
    ROUTING_SECRETS_ENV,
    centre_key_id,
    demo_routing_secrets_json,
    sign_with,
)
from aiguillage_operations.cli import app
from aiguillage_schemas import topics
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import Actor
from aiguillage_schemas.signing import sign
from tests.conftest import Isolated, wait_started
from tests.support.routing_events import COURSE, answer, capacity, lille_referral
from tests.support.waiting import eventually

ARRAS_SITE = "HDF-ARRAS-59"  # where a Lille referral is offered when no neighbour is allowed
ARRAS_KEY, CREIL_KEY = centre_key_id("HDF-ARRAS"), centre_key_id("HDF-CREIL")
USER = Actor(kind="centre_user", id="u-arras-0001")
TIMESTAMP_TYPE = "message.timestamp.type"


@pytest.fixture
async def operations_schema(isolated: Isolated) -> AsyncIterator[str]:
    await migrate_services(isolated.endpoints.database_url, ["operations"], isolated.suffix)
    schema = f"operations{isolated.suffix}"
    yield schema
    await isolated.db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _infra(isolated: Isolated, schema: str) -> list[str]:
    return [
        "--bootstrap-servers",
        isolated.endpoints.kafka_bootstrap_servers,
        "--database-url",
        isolated.endpoints.database_url,
        "--topic-prefix",
        isolated.prefix,
        "--db-schema",
        schema,
    ]


async def _dead_letters_listed(
    isolated: Isolated, schema: str, *filters: str
) -> list[dict[str, Any]]:
    """``aiguillage-dead-letters list --topic routing --json`` as an operator runs it."""
    args = ["list", "--topic", "routing", "--json", *filters, *_infra(isolated, schema)]
    # The command runs its own event loop (asyncio.run), so it gets a thread of its own.
    result = await asyncio.to_thread(CliRunner().invoke, app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


async def _timestamp_type(isolated: Isolated, topic: topics.Topic) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.endpoints.kafka_bootstrap_servers)
    await admin.start()
    try:
        wanted = ConfigResource(
            ConfigResourceType.TOPIC, isolated.topic(topic), {TIMESTAMP_TYPE: None}
        )
        (response,) = await admin.describe_configs([wanted])
    finally:
        await admin.close()
    (resource,) = response.to_object()["resources"]
    found = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    return str(found[TIMESTAMP_TYPE])


async def _send(
    isolated: Isolated, topic: topics.Topic, event: Envelope, headers: dict[str, str]
) -> None:
    await isolated.kafka.send_raw(
        isolated.topic(topic),
        event.model_dump_json().encode(),
        key=event.subject.encode(),
        headers=[(name, value.encode()) for name, value in headers.items()],
    )


async def _decisions(isolated: Isolated) -> dict[str, list[str]]:
    """Each referral's events on referrals.routed, in order (one referral, one partition)."""
    story: dict[str, list[str]] = {}
    seen: set[str] = set()
    for record in await isolated.kafka.read_all(isolated.topic(topics.ROUTED)):
        event = record.json()
        if event["event_id"] not in seen:  # a relay may publish an event twice
            seen.add(event["event_id"])
            story.setdefault(str(event["subject"]), []).append(str(event["event_type"]))
    return story


async def _places_total(isolated: Isolated, site_id: str) -> int | None:
    value = await isolated.db.fetchval(
        f"SELECT places_total FROM {isolated.schema('routing')}.site_services"
        " WHERE site_id = $1 AND service = $2",
        site_id,
        str(COURSE),
    )
    return None if value is None else int(value)


async def test_routing_refuses_every_unproven_or_foreign_record_and_applies_the_rightful_ones(
    isolated: Isolated, operations_schema: str
) -> None:
    assert await _timestamp_type(isolated, topics.CENTRE_RESPONSES) == "LogAppendTime"
    assert await _timestamp_type(isolated, topics.DIRECTORY_UPDATES) == "LogAppendTime"
    routing = isolated.service("routing", AIGUILLAGE_ROUTING_ALLOW_NEIGHBOUR_FALLBACK="false")
    routing.start()
    await wait_started(routing)

    # An operator sets Arras's places through the portal (signed with the portal's key).
    await isolated.kafka.send_event(
        isolated.topic(topics.DIRECTORY_UPDATES), capacity(ARRAS_SITE, 2)
    )
    await eventually(
        lambda: _places_total(isolated, ARRAS_SITE), lambda n: n == 2, 60, 0.2, "capacity set"
    )
    first, second = (lille_referral(f"ref-{n}{isolated.suffix}") for n in ("first", "second"))
    for referral in (first, second):
        await isolated.kafka.send_event(isolated.topic(topics.ACCEPTED), referral)
    await eventually(
        lambda: _decisions(isolated),
        lambda story: all(story.get(r.subject) == ["referral.routed"] for r in (first, second)),
        60,
        0.2,
        "both referrals offered to Arras",
    )

    # Declines of the first referral's offer that would re-route it if routing believed them.
    decline = answer(first.subject, ARRAS_SITE, "declined", "no_capacity")
    value = decline.model_dump_json().encode()
    stale_at = int(time.time()) - 3600
    refused_answers = {
        "unsigned": {},
        "unknown_signing_key": sign(value, "someone-2026", b"whatever"),
        "bad_signature": sign(value, ARRAS_KEY, b"not-arras-secret"),
        "stale_signature": sign_with(ARRAS_KEY, value, stale_at),
        # Creil's real key, answering for Arras's offer (the body says HDF-ARRAS).
        "not_this_centre": sign_with(CREIL_KEY, value),
        "actor_required": sign_with(PORTAL_KEY_ID, value),  # the portal, naming nobody
    }
    for headers in refused_answers.values():
        await _send(isolated, topics.CENTRE_RESPONSES, decline, headers)
    # Creil's key setting Arras's capacity to 40 places.
    grab = capacity(ARRAS_SITE, 40, actor=None)
    await _send(
        isolated,
        topics.DIRECTORY_UPDATES,
        grab,
        sign_with(CREIL_KEY, grab.model_dump_json().encode()),
    )

    # The rightful answers, after the refused ones on the same partitions: Arras's own system
    # accepts the first; an Arras user accepts the second through the portal.
    await isolated.kafka.send_event(
        isolated.topic(topics.CENTRE_RESPONSES), answer(first.subject, ARRAS_SITE, "accepted")
    )
    await isolated.kafka.send_event(
        isolated.topic(topics.CENTRE_RESPONSES),
        answer(second.subject, ARRAS_SITE, "accepted", actor=USER),
    )
    story = await eventually(
        lambda: _decisions(isolated),
        lambda s: all(s.get(r.subject, [])[-1:] == ["referral.placed"] for r in (first, second)),
        60,
        0.2,
        "both referrals placed",
    )
    # Never re-routed: the refused declines changed nothing, the accept found the offer intact.
    assert story[first.subject] == ["referral.routed", "referral.placed"]
    assert story[second.subject] == ["referral.routed", "referral.placed"]

    dead = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.ROUTING_DEAD_LETTER)),
        lambda found: len(found) == len(refused_answers) + 1,
        60,
        0.2,
        "every refused record dead-lettered",
    )
    by_reason: dict[str, list[str]] = {}
    for record in dead:
        data = record.json()["data"]
        by_reason.setdefault(data["reason"], []).append(str(record.key))
        assert data["original_topic"] in {
            isolated.topic(topics.CENTRE_RESPONSES),
            isolated.topic(topics.DIRECTORY_UPDATES),
        }
    assert {reason: sorted(keys) for reason, keys in by_reason.items()} == {
        "unsigned": [first.subject],
        "unknown_signing_key": [first.subject],
        "bad_signature": [first.subject],
        "stale_signature": [first.subject],
        "not_this_centre": sorted([first.subject, ARRAS_SITE]),
        "actor_required": [first.subject],
    }
    assert await _places_total(isolated, ARRAS_SITE) == 2

    listed = await _dead_letters_listed(isolated, operations_schema)
    assert sorted(row["reason"] for row in listed) == sorted([*refused_answers, "not_this_centre"])
    hints = {row["reason"]: row["replay"] for row in listed}
    assert hints["unknown_signing_key"] == "after fix"  # once the key's secret is provisioned
    assert hints["bad_signature"] == "no"

    # Who spoke is logged (key id and pseudonymous actor), never a signature or a secret.
    logs = routing.logs()
    admitted = [
        json.loads(line)
        for line in logs.splitlines()
        if line.startswith("{") and '"centre_record.admitted"' in line
    ]
    assert {(e["signing_key_id"], e["actor_id"]) for e in admitted} >= {
        (ARRAS_KEY, None),
        (PORTAL_KEY_ID, USER.id),
    }
    for headers in refused_answers.values():
        if "x-aiguillage-signature" in headers:
            assert headers["x-aiguillage-signature"] not in logs


WINDOW_S = 4  # routing's replay window in the replay test: seconds of waiting, not minutes
OPERATIONS_SECRET = "operations-secret-for-routing-tests"


async def _now() -> float:
    return time.time()


async def test_an_answer_refused_for_a_missing_secret_is_replayed_once_the_key_is_provisioned(
    isolated: Isolated, operations_schema: str
) -> None:
    """Arras's key is registered but routing was not given its secret: Arras's accept is
    refused (unknown_signing_key). Once the secret is provisioned, long after the window, the
    operators replay it and routing measures it from its original arrival: placed."""
    without_arras = dict(json.loads(demo_routing_secrets_json()))
    del without_arras[ARRAS_KEY]
    routing = isolated.service(
        "routing",
        AIGUILLAGE_ROUTING_ALLOW_NEIGHBOUR_FALLBACK="false",
        AIGUILLAGE_ROUTING_REPLAY_WINDOW_S=str(WINDOW_S),
        AIGUILLAGE_OPERATIONS_SECRET=OPERATIONS_SECRET,
        **{ROUTING_SECRETS_ENV: json.dumps(without_arras)},
    )
    routing.start()
    await wait_started(routing)
    await isolated.kafka.send_event(
        isolated.topic(topics.DIRECTORY_UPDATES), capacity(ARRAS_SITE, 1)
    )
    await eventually(
        lambda: _places_total(isolated, ARRAS_SITE), lambda n: n == 1, 60, 0.2, "capacity set"
    )
    referral = lille_referral(f"ref-replayed{isolated.suffix}")
    await isolated.kafka.send_event(isolated.topic(topics.ACCEPTED), referral)
    await eventually(
        lambda: _decisions(isolated),
        lambda story: story.get(referral.subject) == ["referral.routed"],
        60,
        0.2,
        "the offer to Arras",
    )
    sent_at = time.time()
    await isolated.kafka.send_event(
        isolated.topic(topics.CENTRE_RESPONSES), answer(referral.subject, ARRAS_SITE, "accepted")
    )
    (row,) = await eventually(
        lambda: _dead_letters_listed(isolated, operations_schema),
        lambda rows: len(rows) == 1,
        60,
        0.5,
        "Arras's accept dead-lettered",
    )
    assert (row["reason"], row["replay"]) == ("unknown_signing_key", "after fix")

    # The operators provision Arras's secret and restart routing, after the window has passed.
    routing.terminate()
    routing.env[ROUTING_SECRETS_ENV] = demo_routing_secrets_json()
    await eventually(
        _now, lambda now: now > sent_at + WINDOW_S + 2, WINDOW_S + 10, 0.2, "the window to pass"
    )
    routing.start()
    await wait_started(routing)
    replayed = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["replay", row["id"], "--operator", "test-operator", *_infra(isolated, operations_schema)],
        env={"AIGUILLAGE_OPERATIONS_SECRET": OPERATIONS_SECRET},
        catch_exceptions=False,
    )
    assert replayed.exit_code == 0, replayed.output
    story = await eventually(
        lambda: _decisions(isolated),
        lambda s: s.get(referral.subject, [])[-1:] == ["referral.placed"],
        60,
        0.2,
        "the replayed accept applied",
    )
    assert story[referral.subject] == ["referral.routed", "referral.placed"]
    # The copy was not refused again: still the one dead letter, now replayed.
    rows = await _dead_letters_listed(isolated, operations_schema, "--status", "all")
    assert [(r["id"], r["status"]) for r in rows] == [(row["id"], "replayed")]
