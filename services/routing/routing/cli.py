"""Operator commands of routing (typer apps, also mounted in ``aiguillage``).

    aiguillage directory load [--data-dir DIR]   seed the directory (idempotent)
    aiguillage directory show [DEPARTEMENT]      sites, services, places (held/total)
    aiguillage directory stale [DEPARTEMENT]     counts stale or to confirm soon, and
                                                 whether (when) the centre was reminded
    aiguillage decision REFERRAL_ID [--json]     every decision taken for a referral

``aiguillage-routing-directory`` and ``aiguillage-routing-decision`` are the same apps under their
older names. Database and schema come from the service's settings (``AIGUILLAGE_ROUTING_*``, else
``AIGUILLAGE_DATABASE_URL``), or ``--database-url``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from aiguillage_common.cli import (
    EXIT_REFUSED,
    AsJson,
    DatabaseUrl,
    connect,
    fail,
    overrides,
    run,
    settings_or_fail,
    typer_app,
)
from aiguillage_common.geography import load_geography
from routing.adapters.directory_csv import load_directory
from routing.adapters.postgres import read_decisions, read_directory, seed_directory
from routing.adapters.reminders import reminders_sent
from routing.domain.directory import confirmations_due
from routing.settings import RoutingSettings

directory_app = typer_app(
    "aiguillage-routing-directory", "The centres' directory: seed it, show places, list stale."
)
Departement = Annotated[
    str | None, typer.Argument(metavar="[DEPARTEMENT]", help="e.g. 59; default: all.")
]


def routing_settings(database_url: str | None) -> RoutingSettings:
    return settings_or_fail(RoutingSettings, "AIGUILLAGE_ROUTING_", **overrides(database_url))


async def _connect(settings: RoutingSettings) -> asyncpg.Connection:
    return await connect(settings.database_url, settings.db_schema)


@directory_app.command("load")
def load(
    data_dir: Annotated[Path | None, typer.Option(help="Default: the packaged data.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Seed the directory from data/cpca_centres.csv (existing rows are kept)."""
    settings = routing_settings(database_url)
    directory = load_directory(
        load_geography(data_dir), data_dir, path_months=settings.seed_path_months
    )

    async def seed() -> int:
        connection = await _connect(settings)
        try:
            return await seed_directory(connection, directory)
        finally:
            await connection.close()

    inserted = run(seed())
    print(
        f"{len(directory.centres)} centres, {len(directory.sites)} sites, "
        f"{len(directory.capacity)} site services in the seed; {inserted} inserted now "
        "(existing rows are kept)."
    )


async def _read(settings: RoutingSettings, departement: str | None) -> Any:
    connection = await _connect(settings)
    try:
        return await read_directory(connection, [departement] if departement else None)
    finally:
        await connection.close()


@directory_app.command("show")
def show(departement: Departement = None, database_url: DatabaseUrl = None) -> None:
    """Sites, their services and places (held/total), and when counts must be confirmed."""
    settings = routing_settings(database_url)
    directory = run(_read(settings, departement))
    now = datetime.now(UTC)
    freshness = timedelta(seconds=settings.capacity_freshness_s)
    for site in directory.sites:
        flags = (" (assumed)" if site.assumed else "") + (
            " (national: serves every département)" if site.national else ""
        )
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


async def _read_with_reminders(settings: RoutingSettings, departement: str | None) -> Any:
    connection = await _connect(settings)
    try:
        directory = await read_directory(connection, [departement] if departement else None)
        return directory, await reminders_sent(connection)
    finally:
        await connection.close()


@directory_app.command("stale")
def stale(departement: Departement = None, database_url: DatabaseUrl = None) -> None:
    """Counts gone stale, or to be confirmed soon, and whether the centre was reminded."""
    settings = routing_settings(database_url)
    directory, reminders = run(_read_with_reminders(settings, departement))
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


def _reminded(latest: tuple[asyncpg.Record, bool] | None) -> str:
    """Whether the centre was told to confirm the count on record, and when (UTC)."""
    if latest is None:
        return "centre not reminded yet"
    row, current = latest
    if not current:
        last = f"{row['reminded_at']:%Y-%m-%d}"
        return f"centre not reminded of this count yet (last reminder {last})"
    return f"centre reminded {row['reminded_at']:%Y-%m-%d %H:%M} UTC ({row['reference']})"


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


def decision(
    referral_id: Annotated[str, typer.Argument(metavar="REFERRAL_ID")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Every routing decision of a referral, with its full record (candidates, scores)."""
    settings = routing_settings(database_url)

    async def fetch() -> list[dict[str, Any]]:
        connection = await _connect(settings)
        try:
            return await read_decisions(connection, referral_id)
        finally:
            await connection.close()

    decisions = run(fetch())
    if not decisions:
        fail(f"no decision recorded for {referral_id}", EXIT_REFUSED)
    if as_json:
        print(json.dumps(decisions, indent=2, ensure_ascii=False))
        return
    for found in decisions:
        _print_decision(found)


decision_app = typer_app("aiguillage-routing-decision", "Every routing decision of a referral.")
decision_app.command()(decision)


def directory_command() -> None:
    directory_app(prog_name="aiguillage-routing-directory")


def decision_command() -> None:
    decision_app(prog_name="aiguillage-routing-decision")
