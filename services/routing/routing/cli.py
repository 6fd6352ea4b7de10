"""Operator commands of routing.

    aiguillage-routing-directory load [--data-dir DIR]   seed the directory (idempotent)
    aiguillage-routing-directory show [DEPARTEMENT]      sites, services, places (held/total)
    aiguillage-routing-directory stale [DEPARTEMENT]     counts stale or to confirm soon, and
                                                         whether (when) the centre was reminded
    aiguillage-routing-decision REFERRAL_ID [--json]     every decision taken for a referral

Database and schema come from the service's settings (``AIGUILLAGE_ROUTING_DATABASE_URL``,
``AIGUILLAGE_ROUTING_DB_SCHEMA``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from aiguillage_common.geography import load_geography
from routing.adapters.directory_csv import load_directory
from routing.adapters.postgres import read_directory, seed_directory
from routing.adapters.reminders import reminders_sent
from routing.domain.directory import confirmations_due
from routing.settings import RoutingSettings

T = TypeVar("T")


def _run(settings: RoutingSettings, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command; an unreachable database is one line on stderr and exit 1, no traceback."""
    try:
        return asyncio.run(coroutine)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        where = urlsplit(settings.database_url)  # host and port only: the URL holds a password
        sys.exit(
            f"cannot use PostgreSQL at {where.hostname}:{where.port or 5432} "
            f"(schema {settings.db_schema}): {type(error).__name__}: {error}"
        )


async def _connect(settings: RoutingSettings) -> asyncpg.Connection:
    return await asyncpg.connect(
        settings.database_url,
        timeout=settings.db_command_timeout_s,
        server_settings={"search_path": settings.db_schema},
    )


async def _load(settings: RoutingSettings, data_dir: Path | None) -> None:
    directory = load_directory(
        load_geography(data_dir), data_dir, path_months=settings.seed_path_months
    )
    connection = await _connect(settings)
    try:
        inserted = await seed_directory(connection, directory)
    finally:
        await connection.close()
    print(
        f"{len(directory.centres)} centres, {len(directory.sites)} sites, "
        f"{len(directory.capacity)} site services in the seed; {inserted} inserted now "
        "(existing rows are kept)."
    )


async def _show(settings: RoutingSettings, departement: str | None) -> None:
    connection = await _connect(settings)
    try:
        directory = await read_directory(connection, [departement] if departement else None)
    finally:
        await connection.close()
    now = datetime.now(UTC)
    freshness = timedelta(seconds=settings.capacity_freshness_s)
    for site in directory.sites:
        flags = " (assumed)" if site.assumed else ""
        print(f"{site.site_id}  {site.commune_insee} ({site.departement}){flags}")
        for service in sorted(site.services):
            capacity = directory.capacity[(site.site_id, service)]
            open_places = capacity.open_places(now, freshness)
            shown = "STALE" if open_places is None else f"{open_places} open"
            print(
                f"    {service:<24} {capacity.places_held}/{capacity.places_total} held, "
                f"{shown}, {capacity.eligibility}, confirm by "
                f"{capacity.updated_at + freshness:%Y-%m-%d}"
            )


async def _stale(settings: RoutingSettings, departement: str | None) -> int:
    connection = await _connect(settings)
    try:
        directory = await read_directory(connection, [departement] if departement else None)
        reminders = await reminders_sent(connection)
    finally:
        await connection.close()
    due = confirmations_due(
        directory,
        datetime.now(UTC),
        timedelta(seconds=settings.capacity_freshness_s),
        timedelta(seconds=settings.stale_reminder_s),
    )
    ranked = (
        f"ranked {settings.stale_penalty_km:.0f} km lower on their last counts"
        if settings.stale_capacity == "rank"
        else "not offered until confirmed"
    )
    print(
        f"{sum(c.stale for c in due)} stale (policy: {ranked}), "
        f"{sum(not c.stale for c in due)} to confirm soon"
    )
    for item in due:
        state = "STALE" if item.stale else "due  "
        print(
            f"{state} {item.site_id:<24} {item.service:<24} last confirmed "
            f"{item.updated_at:%Y-%m-%d}, confirm by {item.confirm_by:%Y-%m-%d}, "
            f"{_reminded(reminders.get((item.site_id, str(item.service))))}"
        )
    return len(due)


def _reminded(latest: tuple[asyncpg.Record, bool] | None) -> str:
    """Whether the centre was told to confirm the count on record, and when (UTC)."""
    if latest is None:
        return "centre not reminded yet"
    row, current = latest
    if not current:
        last = f"{row['reminded_at']:%Y-%m-%d}"
        return f"centre not reminded of this count yet (last reminder {last})"
    return f"centre reminded {row['reminded_at']:%Y-%m-%d %H:%M} UTC ({row['reference']})"


def directory_command() -> None:
    parser = argparse.ArgumentParser(prog="aiguillage-routing-directory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="seed the directory from data/cpca_centres.csv")
    load.add_argument("--data-dir", type=Path, default=None)
    show = sub.add_parser("show", help="print sites and places")
    show.add_argument("departement", nargs="?")
    stale = sub.add_parser("stale", help="counts stale, or to be confirmed soon")
    stale.add_argument("departement", nargs="?")
    args = parser.parse_args()
    settings = RoutingSettings()
    if args.command == "load":
        _run(settings, _load(settings, args.data_dir))
    elif args.command == "stale":
        _run(settings, _stale(settings, args.departement))
    else:
        _run(settings, _show(settings, args.departement))


async def _decisions(settings: RoutingSettings, referral_id: str) -> list[dict[str, Any]]:
    connection = await _connect(settings)
    try:
        rows = await connection.fetch(
            "SELECT decision_id, attempt, outcome, site_id, distance_km, reason, explanation,"
            " policy_version, record, decided_at FROM decisions WHERE referral_id = $1"
            " ORDER BY decided_at",
            referral_id,
        )
    finally:
        await connection.close()
    return [
        {
            **{k: row[k] for k in ("attempt", "outcome", "site_id", "distance_km", "reason")},
            "decision_id": str(row["decision_id"]),
            "explanation": row["explanation"],
            "policy_version": row["policy_version"],
            "decided_at": row["decided_at"].isoformat(),
            "record": json.loads(row["record"]) if row["record"] else None,
        }
        for row in rows
    ]


def _print_decision(decision: dict[str, Any]) -> None:
    print(
        f"[{decision['decided_at']}] attempt {decision['attempt']}: {decision['outcome']}"
        f" -> {decision['site_id'] or '-'} (policy {decision['policy_version']})"
    )
    print(f"  {decision['explanation']}")
    record = decision["record"]
    if not record:
        return
    print(f"  needs: {', '.join(record['needed_services'])}; tried before: {record['tried']}")
    for candidate in record["candidates"]:
        verdict = ", ".join(candidate["excluded"]) or "feasible"
        places = ", ".join(
            f"{service}={'?' if n is None else n}" for service, n in candidate["capacity"].items()
        )
        print(
            f"    {candidate['site_id']:<22} {candidate['distance_km']:>6.1f} km "
            f"score {candidate['score']['total']:>8.1f}  [{verdict}]  places: {places}"
        )


def decision_command() -> None:
    parser = argparse.ArgumentParser(
        prog="aiguillage-routing-decision",
        description="Print every routing decision of a referral, with its full record.",
    )
    parser.add_argument("referral_id")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    settings = RoutingSettings()
    decisions = _run(settings, _decisions(settings, args.referral_id))
    if not decisions:
        print(f"no decision recorded for {args.referral_id}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(decisions, indent=2, ensure_ascii=False))
        return
    for decision in decisions:
        _print_decision(decision)
