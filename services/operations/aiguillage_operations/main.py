"""``aiguillage``: the operators' one command. Composition root.

Each subcommand is the same typer app or command as the older per-service entry points
(``aiguillage-routing-decision``, ``aiguillage-routing-directory``,
``aiguillage-notifications-log``, ``aiguillage-dead-letters``, ``aiguillage-intake-purge``),
which stay as aliases. Settings are the
services' own (``AIGUILLAGE_<SERVICE>_*``, else ``AIGUILLAGE_DATABASE_URL`` and
``AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS``), overridden by ``--database-url`` / ``--bootstrap-servers``.
An unreachable database or broker is one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from aiguillage_common.cli import (
    EXIT_REFUSED,
    AsJson,
    BootstrapServers,
    DatabaseUrl,
    fail,
    out,
    overrides,
    run,
    settings_or_fail,
    typer_app,
)
from aiguillage_operations.adapters.kafka_lag import read_lag
from aiguillage_operations.cli import app as dead_letters_app
from aiguillage_operations.lag import totals
from aiguillage_operations.timeline import Timeline
from aiguillage_operations.timeline_read import Database, Places, read_timeline
from notifications.delivery_log import deliveries
from notifications.settings import NotificationsSettings
from portal.cli import app as portal_users_app
from portal.settings import PortalSettings
from referral_intake.purge import purge
from referral_intake.settings import IntakeStoreSettings
from routing.cli import decision, directory_app
from routing.settings import RoutingSettings

app = typer_app(
    "aiguillage",
    "Operators' commands: one referral's timeline, routing decisions, the directory, "
    "deliveries, dead letters, consumer lag, retention purge.",
)
TopicPrefix = Annotated[
    str | None,
    typer.Option(
        "--topic-prefix",
        help="Prepended to every topic. Default: AIGUILLAGE_ROUTING_TOPIC_PREFIX, else none.",
        show_default=False,
    ),
]
OperationsSchema = Annotated[
    str,
    typer.Option(
        "--operations-schema",
        envvar="AIGUILLAGE_OPERATIONS_DB_SCHEMA",
        help="Schema of the operators' dead-letter actions.",
    ),
]


def _services(
    database_url: str | None, bootstrap_servers: str | None
) -> tuple[IntakeStoreSettings, RoutingSettings, NotificationsSettings]:
    given = overrides(database_url, bootstrap_servers)
    return (
        settings_or_fail(IntakeStoreSettings, "AIGUILLAGE_INTAKE_", **given),
        settings_or_fail(RoutingSettings, "AIGUILLAGE_ROUTING_", **given),
        settings_or_fail(NotificationsSettings, "AIGUILLAGE_NOTIFICATIONS_", **given),
    )


@app.command("timeline")
def timeline(
    referral_id: Annotated[str, typer.Argument(metavar="REF", help="The referral id.")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
    operations_schema: OperationsSchema = "operations",
    without_kafka: Annotated[
        bool,
        typer.Option(
            "--without-kafka",
            help="Read PostgreSQL only (e.g. while the broker is down): no centres' messages "
            "nor dead letters.",
        ),
    ] = False,
) -> None:
    """One referral's story across the services, oldest first: what happened, who acted, why."""
    intake, routing, notifications = _services(database_url, bootstrap_servers)
    portal = settings_or_fail(
        PortalSettings, "AIGUILLAGE_PORTAL_", **overrides(database_url, bootstrap_servers)
    )
    places = Places(
        intake=Database(intake.database_url, intake.db_schema),
        routing=Database(routing.database_url, routing.db_schema),
        notifications=Database(notifications.database_url, notifications.db_schema),
        operations=Database(database_url or routing.database_url, operations_schema),
        bootstrap_servers=routing.kafka_bootstrap_servers,
        topic_prefix=routing.topic_prefix if topic_prefix is None else topic_prefix,
        portal=Database(portal.database_url, portal.db_schema),
    )
    found = run(read_timeline(places, referral_id, with_kafka=not without_kafka))
    if found.empty:
        fail(f"no service has a record of {referral_id}", EXIT_REFUSED)
    if as_json:
        for entry in found.entries:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
        return
    render_timeline(found)


def render_timeline(found: Timeline) -> None:
    out.print(Text(f"referral {found.referral_id}: {len(found.entries)} steps", style="bold"))
    for service, line in found.now:
        out.print(Text(f"  now, {service}: {line}"))
    for note in found.notes:
        out.print(Text(f"  note: {note}"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("time (UTC)", "service", "what", "who", "why"):
        table.add_column(column, no_wrap=column in ("time (UTC)", "service"))
    for entry in found.entries:
        table.add_row(
            # Text cells: ids and codes are never read as rich markup.
            Text(entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]),
            Text(entry.service),
            Text(entry.what),
            Text(" ".join(entry.actors) or "-"),
            Text(" ".join(entry.why) or "-"),
        )
    out.print(table)


@app.command("lag")
def lag(
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Consumer lag of each service's groups, per topic and partition."""
    intake, routing, notifications = _services(None, bootstrap_servers)
    bases = {
        "referral-intake": intake.consumer_group,
        "routing": routing.consumer_group,
        "notifications": notifications.consumer_group,
    }
    rows, groups = run(read_lag(routing.kafka_bootstrap_servers, bases))
    if as_json:
        for row in rows:
            print(
                json.dumps(
                    {
                        "service": row.service,
                        "group": row.group,
                        "topic": row.topic,
                        "partition": row.partition,
                        "committed": row.committed,
                        "end": row.end,
                        "lag": row.lag,
                    }
                )
            )
        return
    if not groups:
        out.print(Text(f"no consumer group of {', '.join(bases.values())} (or named after them)"))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("service", "group", "topic", "partition", "committed", "end", "lag"):
        table.add_column(
            column,
            no_wrap=True,
            justify="right" if column in "partition committed end lag" else "left",
        )
    for row in rows:
        table.add_row(
            *(
                Text(str(value))
                for value in (
                    row.service,
                    row.group,
                    row.topic,
                    row.partition,
                    "-" if row.committed is None else row.committed,
                    row.end,
                    row.lag,
                )
            )
        )
    out.print(table)
    for (service, group), total in totals(rows).items():
        out.print(Text(f"{service} {group}: {total} behind"))
    for group in sorted(set(groups) - {row.group for row in rows}):
        # A group commits once it has read something: none yet on these topics.
        out.print(Text(f"{group}: no committed offset yet"))


app.command("decision")(decision)
app.add_typer(directory_app, name="directory")
app.command("deliveries")(deliveries)
app.add_typer(dead_letters_app, name="dead-letters")
app.command("purge")(purge)
# Portal accounts (the same app as aiguillage-portal-admin).
app.add_typer(portal_users_app, name="portal-users")


def run_command() -> None:
    app(prog_name="aiguillage")
