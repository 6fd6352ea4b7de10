"""The directory in PostgreSQL: the explicit seed command, directory updates, and the decision
record read back with the CLI, on the real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aiguillage_common.codec import Problem
from aiguillage_common.consumer import InboundRecord, ReliableConsumer, RetryPolicy
from aiguillage_common.geography import load_geography
from aiguillage_common.unit_of_work import shared_transaction
from aiguillage_demo.signing import centre_key_id, demo_routing_secrets_json, sign_with
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    CapacityUpdated,
    CapacityUpdatedData,
    ServiceClosed,
    ServiceClosedData,
    ServiceOpened,
    ServiceOpenedData,
    SiteClosed,
    SiteClosedData,
)
from aiguillage_schemas.vocabulary import ServiceCode
from routing.adapters.kafka import DirectoryHandler, RoutingHandler, SenderCheck
from routing.adapters.postgres import PostgresRoutingUnitOfWork
from routing.adapters.senders_file import load_senders
from routing.adapters.workers import ConfirmationWatch
from routing.domain.decision import Policy
from routing.use_cases.directory_updates import apply_directory_update
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import route_referral
from tests.conftest import Isolated
from tests.support.routing_events import lille_cancelled, lille_referral, site_added

BIN = Path(sys.executable).parent
COURSE = ServiceCode.RESPONSIBILITY_COURSE


def _cli(isolated: Isolated, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIGUILLAGE_ROUTING_DATABASE_URL": isolated.endpoints.database_url,
        "AIGUILLAGE_ROUTING_DB_SCHEMA": isolated.schema("routing"),
    }
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
async def ctx(isolated: Isolated) -> AsyncIterator[RoutingContext]:
    """The use cases on the real database, in this process (the service's own wiring)."""
    async with isolated.schema_pool(isolated.schema("routing"), max_size=2) as pool:
        yield RoutingContext(
            uow_factory=lambda: PostgresRoutingUnitOfWork(pool),
            geography=load_geography(),
            policy=Policy(allow_neighbour_fallback=False),
            decisions_topic="routed",
        )


async def test_seed_command_is_idempotent_and_keeps_what_centres_reported(
    isolated: Isolated,
) -> None:
    first = _cli(isolated, "aiguillage-routing-directory", "load")
    assert first.returncode == 0, first.stderr
    # 781 site services of the CPCA sites and the national housing platform's eviction housing
    assert "782 inserted now" in first.stdout
    schema = isolated.schema("routing")
    await isolated.db.execute(
        f"UPDATE {schema}.site_services SET places_total = 1 WHERE site_id = 'HDF-ARRAS-59'"
        " AND service = $1",
        str(COURSE),
    )
    again = _cli(isolated, "aiguillage-routing-directory", "load")
    assert "0 inserted now" in again.stdout
    assert (
        await isolated.count(
            f"SELECT places_total FROM {schema}.site_services WHERE site_id = 'HDF-ARRAS-59'"
            " AND service = $1",
            str(COURSE),
        )
        == 1
    )
    assert (
        await isolated.count(
            f"SELECT count(*) FROM {schema}.site_services WHERE assumed AND site_id LIKE 'HDF-%'"
        )
        > 0
    )
    shown = _cli(isolated, "aiguillage-routing-directory", "show", "59")
    assert "HDF-ARRAS-59" in shown.stdout
    assert "0/1 held" in shown.stdout
    assert "confirm by" in shown.stdout
    # Operators see the counts centres must confirm: none yet, the seed was loaded just now.
    stale = _cli(isolated, "aiguillage-routing-directory", "stale", "59")
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.startswith("0 stale (policy: ranked 40 km lower on their last counts)")
    # A centre that stopped confirming: the CLI lists it, the service's watch logs it.
    await isolated.db.execute(
        f"UPDATE {schema}.site_services SET updated_at = now() - interval '40 days'"
        " WHERE site_id = 'HDF-ARRAS-59' AND service = $1",
        str(COURSE),
    )
    stale = _cli(isolated, "aiguillage-routing-directory", "stale", "59")
    assert stale.stdout.startswith("1 stale")
    assert "STALE HDF-ARRAS-59" in stale.stdout
    async with isolated.schema_pool(schema) as pool:
        watch = ConfirmationWatch(pool, timedelta(days=30), timedelta(days=7), 3600)
        with capture_logs() as logs:
            assert await watch.check_once() == 1
    (due,) = [entry for entry in logs if entry["event"] == "capacity.confirmation_due"]
    assert (due["stale"], due["due_soon"], due["log_level"]) == (1, 0, "warning")
    assert due["first"][0].startswith("HDF-ARRAS-59/responsibility_course by ")


async def test_directory_updates_change_decisions_and_the_cli_explains_them(
    isolated: Isolated, ctx: RoutingContext
) -> None:
    assert _cli(isolated, "aiguillage-routing-directory", "load").returncode == 0
    now = datetime.now(UTC)

    def envelope(site_id: str) -> dict[str, object]:
        return {"source": "operator", "correlation_id": uuid.uuid4(), "subject": site_id}

    # Lille stops its course; a stale count for Arras (older than the seed) is ignored.
    assert await apply_directory_update(
        ServiceClosed(
            **envelope("HDF-ARRAS-59"),
            data=ServiceClosedData(site_id="HDF-ARRAS-59", service=COURSE, as_of=now),
        ),
        ctx,
    )
    assert not await apply_directory_update(
        CapacityUpdated(
            **envelope("HDF-ARRAS-62"),
            data=CapacityUpdatedData(
                site_id="HDF-ARRAS-62",
                service=COURSE,
                places_total=0,
                as_of=now - timedelta(days=400),
            ),
        ),
        ctx,
    )
    # A new site in Roubaix (59512) opens; it offers nothing until a service is opened.
    assert await apply_directory_update(
        site_added("HDF-ARRAS-ROUBAIX", "HDF-ARRAS", now, source="operator"),
        ctx,
    )
    referral = lille_referral(f"ref-dir{isolated.suffix}")
    state = await route_referral(referral, ctx)
    assert state is not None
    assert state.site_id == "HDF-ARRAS-62"

    shown = _cli(isolated, "aiguillage-routing-decision", referral.subject)
    assert shown.returncode == 0, shown.stderr
    assert "attempt 1: routed -> HDF-ARRAS-62" in shown.stdout
    assert "HDF-ARRAS-59" in shown.stdout
    assert "service_missing:responsibility_course" in shown.stdout
    as_json = json.loads(
        _cli(isolated, "aiguillage-routing-decision", referral.subject, "--json").stdout
    )
    record = as_json[0]["record"]
    assert as_json[0]["policy_version"] == ctx.policy.version
    assert {c["site_id"] for c in record["candidates"]} >= {
        "HDF-ARRAS-59",
        "HDF-ARRAS-62",
        "HDF-ARRAS-ROUBAIX",
    }
    missing = _cli(isolated, "aiguillage-routing-decision", "ref-nobody-000")
    assert missing.returncode == 1


async def test_waiting_referrals_follow_closures_and_take_places_as_they_open(
    isolated: Isolated, ctx: RoutingContext
) -> None:
    assert _cli(isolated, "aiguillage-routing-directory", "load").returncode == 0
    schema = isolated.schema("routing")
    now = datetime.now(UTC)

    def envelope(site_id: str) -> dict[str, object]:
        return {"source": "operator", "correlation_id": uuid.uuid4(), "subject": site_id}

    async def status(referral_id: str) -> tuple[str, str]:
        row = await isolated.db.fetchrow(
            f"SELECT status, site_id FROM {schema}.referrals WHERE referral_id = $1", referral_id
        )
        assert row is not None
        return row["status"], row["site_id"]

    for site_id in ("HDF-ARRAS-59", "HDF-ARRAS-62"):
        await apply_directory_update(
            CapacityUpdated(
                **envelope(site_id),
                data=CapacityUpdatedData(
                    site_id=site_id, service=COURSE, places_total=0, as_of=now
                ),
            ),
            ctx,
        )
    referral = lille_referral(f"ref-close{isolated.suffix}")
    await route_referral(referral, ctx)
    assert await status(referral.subject) == ("waitlisted", "HDF-ARRAS-59")

    # A Roubaix site opens the course with no free place yet; then Lille closes: the referral
    # moves to Roubaix's queue; when Roubaix counts one place, it is offered there.
    await apply_directory_update(
        site_added("HDF-ARRAS-RBX", "HDF-ARRAS", now, source="operator"),
        ctx,
    )
    later = now + timedelta(seconds=1)
    await apply_directory_update(
        ServiceOpened(
            **envelope("HDF-ARRAS-RBX"),
            data=ServiceOpenedData(
                site_id="HDF-ARRAS-RBX", service=COURSE, places_total=0, as_of=later
            ),
        ),
        ctx,
    )
    assert await status(referral.subject) == ("waitlisted", "HDF-ARRAS-59")
    await apply_directory_update(
        SiteClosed(
            **envelope("HDF-ARRAS-59"), data=SiteClosedData(site_id="HDF-ARRAS-59", as_of=later)
        ),
        ctx,
    )
    assert await status(referral.subject) == ("waitlisted", "HDF-ARRAS-RBX")
    await apply_directory_update(
        CapacityUpdated(
            **envelope("HDF-ARRAS-RBX"),
            data=CapacityUpdatedData(
                site_id="HDF-ARRAS-RBX",
                service=COURSE,
                places_total=1,
                as_of=later + timedelta(seconds=1),
            ),
        ),
        ctx,
    )
    assert await status(referral.subject) == ("offered", "HDF-ARRAS-RBX")
    assert await isolated.count(f"SELECT count(*) FROM {schema}.waitlist") == 0
    kinds = await isolated.db.fetch(
        f"SELECT headers->>'event_type' AS kind FROM {schema}.outbox ORDER BY id"
    )
    assert [r["kind"] for r in kinds] == [
        "referral.waitlisted",
        "referral.waitlisted",
        "referral.routed",
    ]


async def test_in_one_batch_a_centre_speaks_for_the_site_it_added_but_never_for_another_s(
    isolated: Isolated, ctx: RoutingContext
) -> None:
    """One consumer batch of signed directory updates, as routing's directory consumer runs it:
    Arras opens a service at the site it added earlier in the batch; Creil's key may not change
    that site, take over an Arras site, nor re-open one Arras closed (each refusal is
    dead-lettered as not_this_centre); Creil's own count is applied."""
    assert _cli(isolated, "aiguillage-routing-directory", "load").returncode == 0
    schema = isolated.schema("routing")
    now = datetime.now(UTC)
    closed = SiteClosed(
        **_envelope("HDF-ARRAS-62"), data=SiteClosedData(site_id="HDF-ARRAS-62", as_of=now)
    )
    assert await apply_directory_update(closed, ctx)
    arras, creil = centre_key_id("HDF-ARRAS"), centre_key_id("HDF-CREIL")

    def count(site_id: str, places: int) -> CapacityUpdated:
        return CapacityUpdated(
            **_envelope(site_id),
            data=CapacityUpdatedData(
                site_id=site_id, service=COURSE, places_total=places, as_of=now
            ),
        )

    batch: list[tuple[str, Envelope]] = [
        (arras, site_added("HDF-ARRAS-RBX", "HDF-ARRAS", now)),
        (
            arras,
            ServiceOpened(
                **_envelope("HDF-ARRAS-RBX"),
                data=ServiceOpenedData(
                    site_id="HDF-ARRAS-RBX", service=COURSE, places_total=3, as_of=now
                ),
            ),
        ),
        (creil, count("HDF-ARRAS-RBX", 40)),  # refused
        (creil, site_added("HDF-ARRAS-59", "HDF-CREIL", now)),  # refused: Arras's site
        (creil, site_added("HDF-ARRAS-62", "HDF-CREIL", now)),  # refused: closed, still Arras's
        (creil, count("HDF-CREIL-80", 7)),
    ]
    records = [_signed(offset, key, event) for offset, (key, event) in enumerate(batch)]
    secrets = {k: v.encode() for k, v in json.loads(demo_routing_secrets_json()).items()}
    check = SenderCheck(ctx, load_senders(), secrets, window_s=300)
    dead: dict[int, str] = {}

    async def dead_letter(record: InboundRecord, problem: Problem) -> None:
        dead[record.offset] = str(problem.reason)

    async with isolated.schema_pool(schema) as pool:
        consumer = ReliableConsumer(
            "routing.directory",
            DirectoryHandler(ctx, check),
            dead_letter,
            RetryPolicy(),
            30.0,
            transaction=lambda: shared_transaction(pool),
        )
        await consumer.handle_batch(records)

    assert dead == {2: "not_this_centre", 3: "not_this_centre", 4: "not_this_centre"}
    sites = {
        row["site_id"]: (row["centre_id"], row["closed_at"] is not None)
        for row in await isolated.db.fetch(
            f"SELECT site_id, centre_id, closed_at FROM {schema}.sites"
            " WHERE site_id = ANY($1::text[])",
            ["HDF-ARRAS-RBX", "HDF-ARRAS-59", "HDF-ARRAS-62"],
        )
    }
    assert sites == {
        "HDF-ARRAS-RBX": ("HDF-ARRAS", False),
        "HDF-ARRAS-59": ("HDF-ARRAS", False),
        "HDF-ARRAS-62": ("HDF-ARRAS", True),
    }
    places = {
        row["site_id"]: row["places_total"]
        for row in await isolated.db.fetch(
            f"SELECT site_id, places_total FROM {schema}.site_services WHERE service = $1"
            " AND site_id = ANY($2::text[])",
            str(COURSE),
            ["HDF-ARRAS-RBX", "HDF-CREIL-80"],
        )
    }
    assert places == {"HDF-ARRAS-RBX": 3, "HDF-CREIL-80": 7}


def _envelope(site_id: str) -> dict[str, object]:
    return {"source": "centre", "correlation_id": uuid.uuid4(), "subject": site_id}


def _signed(offset: int, key_id: str, event: Envelope) -> InboundRecord:
    """``event`` as routing reads it from directory.updates, signed with ``key_id`` now."""
    value = event.model_dump_json().encode()
    return InboundRecord(
        "directory.updates",
        0,
        offset,
        event.subject.encode(),
        value,
        sign_with(key_id, value),
        broker_timestamp_ms=int(datetime.now(UTC).timestamp() * 1000),
    )


async def test_in_one_batch_a_place_freed_is_offered_again_and_a_place_taken_is_not(
    isolated: Isolated, ctx: RoutingContext
) -> None:
    """Routing reads a site's places once per consumer batch and keeps them up to date with the
    batch's own holds and releases. In one batch, with two places left at the Lille site: X
    takes one, A the last one, A is cancelled (its place is freed), B takes it, C finds none."""
    assert _cli(isolated, "aiguillage-routing-directory", "load").returncode == 0
    schema = isolated.schema("routing")
    probe = f"ref-probe{isolated.suffix}"
    assert await route_referral(lille_referral(probe), ctx) is not None
    site = await isolated.db.fetchval(
        f"SELECT site_id FROM {schema}.holds WHERE referral_id = $1", probe
    )
    assert site is not None
    await isolated.db.execute(
        f"UPDATE {schema}.site_services SET places_total = places_held + 2"
        " WHERE site_id = $1 AND service = $2",
        site,
        str(COURSE),
    )
    x, a, b, c = (f"ref-{name}{isolated.suffix}" for name in ("x", "a", "b", "c"))
    cancelled = lille_cancelled(a)
    events: list[Envelope] = [
        lille_referral(x),
        lille_referral(a),
        cancelled,
        lille_referral(b),
        lille_referral(c),
    ]
    records = [
        InboundRecord(
            "referrals.accepted", 0, offset, e.subject.encode(), e.model_dump_json().encode()
        )
        for offset, e in enumerate(events)
    ]
    dead: list[Problem] = []

    async def dead_letter(record: InboundRecord, problem: Problem) -> None:
        dead.append(problem)

    async with isolated.schema_pool(schema) as pool:
        consumer = ReliableConsumer(
            "routing",
            RoutingHandler(ctx),
            dead_letter,
            RetryPolicy(),
            30.0,
            transaction=lambda: shared_transaction(pool),
        )
        await consumer.handle_batch(records)

    assert dead == []
    holds = {
        row["referral_id"]: row["site_id"]
        for row in await isolated.db.fetch(f"SELECT referral_id, site_id FROM {schema}.holds")
    }
    assert a not in holds
    assert holds[x] == holds[b] == site
    assert holds.get(c) != site
    places = await isolated.db.fetchrow(
        f"SELECT places_held, places_total FROM {schema}.site_services"
        " WHERE site_id = $1 AND service = $2",
        site,
        str(COURSE),
    )
    assert places is not None
    assert places["places_held"] == places["places_total"]  # the probe's, X's and B's
    assert sum(1 for held_at in holds.values() if held_at == site) == places["places_held"]
