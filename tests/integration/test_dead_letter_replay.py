"""aiguillage-dead-letters on the real broker and database, with the real intake service.

A prescriber switches to its next signing key before the registry knows it: intake rejects its
valid referral as ``unknown_prescriber``. The registry is fixed by event, but only after intake's
replay window has passed since the referral arrived. A copy without the operators' signed replay
headers is then refused as ``replayed_message``; the signed replay is accepted exactly once, and
replaying it again with ``--again`` changes nothing. Rejections that need no replay are discarded
and leave the open list.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aiguillage_common.migrations.cli import migrate_services
from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import SECRETS_ENV, demo_key_ids, demo_secret, sign_as
from aiguillage_operations.cli import app
from aiguillage_schemas import topics
from aiguillage_schemas.events.prescribers import (
    Jurisdiction,
    PrescriberEntry,
    PrescriberRegistryUpdated,
)
from aiguillage_schemas.signing import sign
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually

LILLE = "parquet-tj-lille"
NEXT_KEY = "parquet-tj-lille-2027"  # provisioned in intake's secrets, unknown to the registry
NEXT_SECRET = "next-key-test-secret"
OPERATIONS_SECRET = "operations-test-secret"
CANARY = "Quorvathine"  # a made-up last name: never in the tool's output
WINDOW_S = 20  # intake's replay window in this test
SPARE_S = 6  # how late the original may reach the broker and still be inside the window


@pytest.fixture
async def operations_schema(isolated: Isolated) -> AsyncIterator[str]:
    await migrate_services(isolated.endpoints.database_url, ["operations"], isolated.suffix)
    schema = f"operations{isolated.suffix}"
    yield schema
    if not os.environ.get("AIGUILLAGE_KEEP_TEST_SCHEMAS"):
        await isolated.db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class Command:
    """The CLI as an operator runs it, against this test's topics and schema."""

    def __init__(self, isolated: Isolated, schema: str) -> None:
        self._infra = [
            "--bootstrap-servers",
            isolated.endpoints.kafka_bootstrap_servers,
            "--database-url",
            isolated.endpoints.database_url,
            "--topic-prefix",
            isolated.prefix,
            "--db-schema",
            schema,
        ]
        self.outputs: list[str] = []

    async def __call__(self, *args: str, secret: str | None = OPERATIONS_SECRET) -> Result:
        # The command runs its own event loop (asyncio.run), so it gets a thread of its own.
        env = {"AIGUILLAGE_OPERATIONS_SECRET": secret, "COLUMNS": "200"}
        result = await asyncio.to_thread(
            CliRunner().invoke, app, [*args, *self._infra], env=env, catch_exceptions=False
        )
        self.outputs.append(result.output)
        return result

    async def rows(self, *filters: str) -> list[dict[str, Any]]:
        """``list --json``: one dict per dead letter."""
        result = await self("list", "--json", *filters)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    async def row(self, dead_letter_id: str) -> dict[str, Any]:
        (found,) = [r for r in await self.rows("--status", "all") if r["id"] == dead_letter_id]
        return found


async def _accepted(isolated: Isolated, referral_id: str) -> int:
    records = await isolated.kafka.read_all(isolated.topic(topics.ACCEPTED))
    return sum(1 for r in records if r.key == referral_id)


async def _past(isolated: Isolated, coordinates: str) -> None:
    """Until intake has committed past the record at ``coordinates`` (it processed it)."""
    topic, partition, offset = coordinates.rsplit(":", 2)
    await eventually(
        lambda: isolated.kafka.committed(f"{isolated.prefix}referral-intake", topic),
        lambda committed: committed.get(int(partition), -1) > int(offset),
        timeout_s=60,
        what=f"intake past {coordinates}",
    )


async def _now() -> float:
    return time.time()


async def test_a_rejected_referral_is_replayed_once_the_registry_is_fixed(
    isolated: Isolated, operations_schema: str
) -> None:
    secrets = {key: demo_secret(key) for key in demo_key_ids().values()}
    secrets[NEXT_KEY] = NEXT_SECRET
    intake = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_REPLAY_WINDOW_S=str(WINDOW_S),
        AIGUILLAGE_OPERATIONS_SECRET=OPERATIONS_SECRET,
        **{SECRETS_ENV: json.dumps(secrets)},
    )
    intake.start()
    await wait_started(intake)
    intake_topic = isolated.topic(topics.INTAKE)
    rejected_topic = isolated.topic(topics.REJECTED)
    command = Command(isolated, operations_schema)

    # A valid referral signed with Lille's next key (its timestamp leaves SPARE_S seconds of the
    # window), and a record that is not JSON at all.
    referral = make_referral(0, last_name=CANARY)
    value = referral.model_dump_json().encode()
    signed_at = int(time.time()) - (WINDOW_S - SPARE_S)
    signed = sign(value, NEXT_KEY, NEXT_SECRET.encode(), timestamp=signed_at)
    await isolated.kafka.send_raw(
        intake_topic,
        value,
        referral.subject.encode(),
        [(k, v.encode()) for k, v in signed.items()],
    )
    bad_key = f"dl-bad-{uuid.uuid4().hex[:8]}"
    bad_value = b"<referral/>"
    await isolated.kafka.send_raw(
        intake_topic,
        bad_value,
        bad_key.encode(),
        [(k, v.encode()) for k, v in sign_as(LILLE, bad_value).items()],
    )
    await eventually(
        lambda: isolated.kafka.read_all(rejected_topic),
        lambda records: len(records) >= 2,
        timeout_s=60,
        what="both records rejected",
    )

    listed = {row["key"]: row for row in await command.rows()}
    assert set(listed) == {referral.subject, bad_key}
    refused, bad = listed[referral.subject], listed[bad_key]
    assert (refused["reason"], refused["field_path"], refused["topic"]) == (
        "unknown_prescriber",
        "headers.x-aiguillage-key-id",
        "referrals.rejected",
    )
    assert (refused["replay"], refused["status"]) == ("after fix", "open")
    assert refused["source"].startswith(f"{intake_topic}:")
    assert (bad["reason"], bad["replay"]) == ("not_json", "no")

    table = await command("list", "--status", "all")
    assert table.exit_code == 0, table.output
    assert refused["id"] in table.output
    assert "2 shown (any status); read 2: 2 open, 0 replayed, 0 discarded" in table.output

    shown = await command("show", refused["id"])
    assert shown.exit_code == 0, shown.output
    assert "SHA-256 matches" in shown.output
    print(shown.output)  # kept in the test's log: an example of `show`
    detail = json.loads((await command("show", refused["id"], "--json")).stdout)
    assert detail["original"]["sha256_matches"] is True
    assert detail["original"]["headers"]["x-aiguillage-key-id"] == NEXT_KEY
    assert detail["original"]["headers"]["x-aiguillage-signature"] == "(not shown)"
    assert detail["headers"]["event_type"] == "referral.rejected"

    # The registry learns Lille's next key, as its administrators would publish it.
    entry = PrescriberEntry(
        prescriber_id=LILLE,
        kind="parquet",
        name="Parquet de Lille",
        jurisdiction=Jurisdiction(departements=["59"]),
        signing_key_id=NEXT_KEY,
    )
    await isolated.kafka.send_event(
        isolated.topic(topics.PRESCRIBERS_REGISTRY),
        PrescriberRegistryUpdated(
            source="registry-admin", correlation_id=uuid.uuid4(), subject=LILLE, data=entry
        ),
    )
    prescribers = f"{isolated.schema('referral-intake')}.prescribers"
    await eventually(
        lambda: isolated.db.fetchval(
            f"SELECT signing_key_id FROM {prescribers} WHERE prescriber_id = $1", LILLE
        ),
        lambda key: key == NEXT_KEY,
        timeout_s=60,
        what="the registry update stored",
    )
    # The operator is late: measured from now, the signed timestamp is outside the window.
    await eventually(
        _now,
        lambda now: now > signed_at + WINDOW_S + 1,
        timeout_s=WINDOW_S + 5,
        what="the replay window to pass",
    )

    # Without the operations secret the copy is measured from its own arrival: refused.
    unsigned = await command("replay", refused["id"], "--operator", "test-operator", secret=None)
    assert unsigned.exit_code == 0, unsigned.output
    assert "AIGUILLAGE_OPERATIONS_SECRET is not set" in unsigned.output
    first_copy = (await command.row(refused["id"]))["replayed_to"]
    await _past(isolated, first_copy)
    late = [r for r in await command.rows() if r["source"] == first_copy]
    assert [(r["reason"], r["key"], r["replay_of"]) for r in late] == [
        ("replayed_message", referral.subject, refused["id"])
    ]
    assert await _accepted(isolated, referral.subject) == 0

    # Signed, the copy is measured from the original's arrival: accepted.
    replayed = await command("replay", refused["id"], "--again", "--operator", "test-operator")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed (signed)" in replayed.output
    await eventually(
        lambda: _accepted(isolated, referral.subject),
        lambda n: n >= 1,
        timeout_s=60,
        what="the replayed referral accepted",
    )
    assert '"event": "referral.operator_replay"' in intake.logs()

    # Replaying it again without --again publishes nothing.
    intake_records = len(await isolated.kafka.read_all(intake_topic))
    skipped = await command("replay", refused["id"])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped: already replayed" in skipped.output
    assert len(await isolated.kafka.read_all(intake_topic)) == intake_records

    # With --again one more copy goes out; intake deduplicates it by event id.
    again = await command("replay", refused["id"], "--again", "--operator", "test-operator")
    assert again.exit_code == 0, again.output
    row = await command.row(refused["id"])
    assert (row["status"], row["replays"], row["acted_by"]) == ("replayed", 3, "test-operator")
    await _past(isolated, row["replayed_to"])
    assert await _accepted(isolated, referral.subject) == 1
    stored = await isolated.count(
        f"SELECT count(*) FROM {isolated.schema('referral-intake')}.referrals "
        "WHERE referral_id = $1",
        referral.subject,
    )
    assert stored == 1
    assert len(await isolated.kafka.read_all(rejected_topic)) == 3  # nothing new refused

    # What needs no replay is discarded with a reason and leaves the open list.
    for dead_letter, why in ((bad, "not JSON; Lille resends"), (late[0], "unsigned copy")):
        discarded = await command(
            "discard", dead_letter["id"], "--reason", why, "--operator", "test-operator"
        )
        assert discarded.exit_code == 0, discarded.output
    assert await command.rows("--status", "open") == []
    gone = {r["id"]: r for r in await command.rows("--status", "discarded")}
    assert (gone[bad["id"]]["discard_reason"], gone[bad["id"]]["acted_by"]) == (
        "not JSON; Lille resends",
        "test-operator",
    )
    twice = await command("discard", bad["id"], "--reason", "again")
    assert "already discarded at" in twice.output
    assert "nothing recorded" in twice.output

    final = await command("list", "--status", "all")
    assert "read 3: 0 open, 1 replayed, 2 discarded" in final.output
    print(final.output)  # kept in the test's log: an example of `list`
    for output in command.outputs:
        assert CANARY not in output
        assert referral.data.identity.first_name not in output
    assert intake.alive()
