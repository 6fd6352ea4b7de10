"""``aiguillage-dead-letters``: list, show, replay and discard dead letters. Composition root.

Prints metadata only: reason codes, field paths, keys (pseudonymous referral ids), coordinates,
hashes, ids and statuses. Never a payload, nor a rejection's human message (it may quote input).
When Kafka or PostgreSQL cannot be reached it says so in one line and exits 2.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from aiguillage_common.cli import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    err,
    out,
    typer_app,
)
from aiguillage_common.cli import fail as _fail
from aiguillage_common.cli import run as _run_common
from aiguillage_operations.adapters.kafka import ScanStalled
from aiguillage_operations.adapters.postgres import SchemaMissing
from aiguillage_operations.connected import with_dead_letters
from aiguillage_operations.domain import (
    DEAD_LETTER_TOPICS,
    DeadLetter,
    DeadLetterStatus,
    Filter,
    FilterProblem,
    IdProblem,
    Refusal,
    Selection,
    dead_letter_topic,
    parse_since,
    replay_hint,
)
from aiguillage_operations.use_cases import (
    Detail,
    DiscardOutcome,
    Listing,
    ReplayOutcome,
    discard,
    list_dead_letters,
    replay,
    show_dead_letter,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://aiguillage:aiguillage@127.0.0.1:15432/aiguillage"
SECRET_ENV = "AIGUILLAGE_OPERATIONS_SECRET"  # noqa: S105 - the variable name, not a secret

app = typer_app(
    "aiguillage-dead-letters",
    "List, inspect, replay and discard dead letters (no payload is ever shown).",
)
T = TypeVar("T")


class StatusChoice(StrEnum):
    OPEN = "open"
    REPLAYED = "replayed"
    DISCARDED = "discarded"
    ALL = "all"


Bootstrap = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        envvar="AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers.",
    ),
]
DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="AIGUILLAGE_DATABASE_URL",
        help="PostgreSQL URL (default: the local development database).",
        show_default=False,  # it holds a password
    ),
]
TopicPrefix = Annotated[
    str,
    typer.Option(
        "--topic-prefix", envvar="AIGUILLAGE_TOPIC_PREFIX", help="Prepended to every topic."
    ),
]
DbSchema = Annotated[
    str,
    typer.Option(
        "--db-schema",
        envvar="AIGUILLAGE_OPERATIONS_DB_SCHEMA",
        help="Schema holding the replay and discard records.",
    ),
]
Operator = Annotated[
    str,
    typer.Option(
        "--operator",
        help="Who acts (recorded). Default: $USER.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def _operator(given: str) -> str:
    name = given.strip() or os.environ.get("USER", "").strip() or _login_name()
    if not name or len(name) > 128:
        _fail("give --operator NAME (1 to 128 characters): $USER is not set", EXIT_REFUSED)
    return name


def _login_name() -> str:
    """The account running the tool, when $USER is unset (cron, containers, CI)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no such variable and no passwd entry for the uid
        return ""


# One connection to each for the command's work (shared with the portal's console).
_with_infra = with_dead_letters


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command; infrastructure failures become one line and exit 2, never a traceback
    (the shared ``aiguillage_common.cli.run``), and this tool's own refusals one line, exit 1."""
    try:
        return _run_common(coroutine)
    except SchemaMissing as error:
        _fail(str(error), EXIT_UNREACHABLE)
    except ScanStalled as error:
        _fail(f"Kafka stopped answering: {error}", EXIT_UNREACHABLE)
    except (IdProblem, FilterProblem, Refusal) as error:
        _fail(str(error), EXIT_REFUSED)


def _topic(given: str | None) -> str | None:
    try:
        return dead_letter_topic(given)
    except FilterProblem as problem:
        _fail(str(problem), EXIT_REFUSED)


# rendering


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _short_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row_json(
    dead_letter: DeadLetter, status: DeadLetterStatus, copy_of: str | None = None
) -> dict[str, Any]:
    last = status.last
    return {
        "id": dead_letter.short_id,
        "dead_letter_event_id": str(dead_letter.uid),
        "topic": dead_letter.topic,
        "kind": str(dead_letter.kind),
        "reason": dead_letter.reason,
        "field_path": dead_letter.field_path,
        "at": dead_letter.at.isoformat(),
        "key": dead_letter.subject,
        "source": str(dead_letter.source) if dead_letter.source else None,
        "sha256": dead_letter.sha256,
        "replay": replay_hint(dead_letter),
        "status": status.state,
        "status_detail": status.describe(),
        "acted_by": last.operator if last else None,
        "acted_at": last.at.isoformat() if last else None,
        "discard_reason": last.reason if last and last.kind == "discarded" else None,
        "replayed_to": last.replayed_to if last and last.kind == "replayed" else None,
        "replays": status.replays,
        "replay_of": copy_of,
    }


_COLUMNS = ("id", "at (UTC)", "reason", "field", "key", "source", "sha256", "replay?", "status")


def _cells(
    dead_letter: DeadLetter, status: DeadLetterStatus, prefix: str, copy_of: str | None
) -> tuple[str, ...]:
    source = dead_letter.source
    said = status.describe()
    if copy_of is not None:
        said += f" (its record is a replay of {copy_of})"
    return (
        dead_letter.short_id,
        _short_time(dead_letter.at),
        dead_letter.reason,
        dead_letter.field_path or "-",
        dead_letter.subject,
        # The prefix is the one given on the command line: implied.
        str(source).removeprefix(prefix) if source else "-",
        (dead_letter.sha256 or "-")[:12],
        replay_hint(dead_letter),
        said,
    )


def _render_listing(listing: Listing, wanted: Filter, prefix: str) -> None:
    """Per dead-letter topic: a table when the terminal is wide enough for every cell on one
    line, else one short block per dead letter. Nothing is ever cut: ids, keys and coordinates
    are copied from here."""
    for name in listing.missing_topics:
        err.print(Text(f"warning: topic {prefix}{name} does not exist"))
    for topic in DEAD_LETTER_TOPICS:
        rows = [
            _cells(d, status, prefix, listing.copy_of.get(d.uid))
            for d, status in listing.rows
            if d.topic == topic
        ]
        if not rows:
            continue
        out.print(Text(f"{prefix}{topic}: {len(rows)}", style="bold"))
        widths = [max(len(c) for c in column) for column in zip(_COLUMNS, *rows, strict=True)]
        if sum(widths) + 2 * (len(widths) - 1) <= out.width:
            table = Table(box=None, pad_edge=False, header_style="bold")
            for column in _COLUMNS:
                table.add_column(column, no_wrap=True)
            for row in rows:
                table.add_row(*(Text(cell) for cell in row))
            out.print(table)
        else:
            for ident, at, reason, path, key, source, sha, hint, said in rows:
                out.print(Text(f"{ident}  {at}  {reason}  {key}  replay? {hint}"))
                out.print(Text(f"    field {path}  source {source}  sha256 {sha}"))
                out.print(Text(f"    {said}"))
        out.print()
    totals = ", ".join(f"{listing.totals.get(s, 0)} {s}" for s in ("open", "replayed", "discarded"))
    shown = wanted.status if wanted.status != "all" else "any status"
    out.print(
        Text(f"{len(listing.rows)} shown ({shown}); read {sum(listing.totals.values())}: {totals}")
    )


def detail_lines(detail: Detail) -> list[tuple[str, str]]:
    """What ``show`` prints, as (name, value) lines: metadata only, no payload. The portal's
    console shows the same lines."""
    d = detail.dead_letter
    lines: list[tuple[str, str]] = [
        ("id", f"{d.short_id}  (event id {d.uid})"),
        ("dead letter", f"{d.kind} on {d.topic}, at {d.location}"),
        ("dead-lettered at", _time(d.at)),
        ("reason", d.reason),
        ("field path", d.field_path or "-"),
        ("key", d.subject),
        ("source", str(d.source) if d.source else "- (no source record)"),
        ("sha256", d.sha256 or "-"),
        ("consumer", d.consumer or "-"),
        ("original event id", str(d.original_event_id) if d.original_event_id else "-"),
        ("prescriber", d.prescriber_id or "-"),
        ("correlation id", str(d.correlation_id) if d.correlation_id else "-"),
    ]
    lines += [(f"delivery {name}", value) for name, value in d.delivery.items()]
    lines += [(f"header {name}", value) for name, value in d.headers.items()]
    source = detail.source
    if source is not None:
        if not source.available:
            lines.append(("original", f"unavailable: {source.problem}"))
        else:
            verdict = (
                "SHA-256 matches" if source.hash_matches else "SHA-256 DIFFERS: not replayable"
            )
            lines.append(("original", f"on the topic since {_time(source.broker_time)}, {verdict}"))
            lines += [(f"original header {n}", v) for n, v in source.headers.items()]
    lines.append(("replay?", replay_hint(d)))
    lines.append(("status", detail.status.describe()))
    for action in detail.history:
        what = (
            f"replayed to {action.replayed_to} ({'signed' if action.signed else 'unsigned'})"
            if action.kind == "replayed"
            else f"discarded: {action.reason}"
        )
        lines.append(("history", f"{_time(action.at)} {action.operator} {what}"))
    return lines


def _render_detail(detail: Detail) -> None:
    lines = detail_lines(detail)
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        out.print(Text(f"{name.ljust(width)}  {value}"))


def _detail_json(detail: Detail) -> dict[str, Any]:
    d = detail.dead_letter
    source = detail.source
    return {
        **_row_json(d, detail.status),
        "dead_letter_at": str(d.location),
        "consumer": d.consumer,
        "original_event_id": str(d.original_event_id) if d.original_event_id else None,
        "prescriber_id": d.prescriber_id,
        "correlation_id": str(d.correlation_id) if d.correlation_id else None,
        "delivery": dict(d.delivery),
        "headers": dict(d.headers),
        "original": None
        if source is None
        else {
            "available": source.available,
            "problem": source.problem,
            "sha256_matches": source.hash_matches,
            "headers": dict(source.headers),
        },
        "history": [
            {
                "action": a.kind,
                "operator": a.operator,
                "at": a.at.isoformat(),
                "reason": a.reason,
                "replayed_to": a.replayed_to,
                "signed": a.signed,
            }
            for a in detail.history
        ],
    }


# commands


@app.command("list")
def list_command(
    topic: Annotated[
        str | None,
        typer.Option(help=f"One of {', '.join(DEAD_LETTER_TOPICS)} (or its first word)."),
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="A reason code, e.g. unknown_prescriber.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO date or date-time (UTC when no zone is given).")
    ] = None,
    status: Annotated[
        StatusChoice, typer.Option(help="Which statuses to show.")
    ] = StatusChoice.OPEN,
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = DEFAULT_BOOTSTRAP,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    topic_prefix: TopicPrefix = "",
    db_schema: DbSchema = "operations",
) -> None:
    """Dead letters with reason, time, key, source coordinates, hash and status."""
    try:
        wanted = Filter(_topic(topic), reason, parse_since(since), status.value)
    except FilterProblem as problem:
        _fail(str(problem), EXIT_REFUSED)
    listing = _run(
        _with_infra(
            bootstrap_servers,
            database_url,
            topic_prefix,
            db_schema,
            lambda kafka, store: list_dead_letters(kafka, store, wanted),
        )
    )
    if as_json:
        for dead_letter, row_status in listing.rows:
            copy_of = listing.copy_of.get(dead_letter.uid)
            print(json.dumps(_row_json(dead_letter, row_status, copy_of)))
    else:
        _render_listing(listing, wanted, topic_prefix)


@app.command("show")
def show_command(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="Id from `list`.")],
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = DEFAULT_BOOTSTRAP,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    topic_prefix: TopicPrefix = "",
    db_schema: DbSchema = "operations",
) -> None:
    """Everything known about one dead letter, and whether its original can still be replayed."""
    detail = _run(
        _with_infra(
            bootstrap_servers,
            database_url,
            topic_prefix,
            db_schema,
            lambda kafka, store: show_dead_letter(kafka, store, dead_letter_id),
        )
    )
    if as_json:
        print(json.dumps(_detail_json(detail)))
    else:
        _render_detail(detail)


@app.command("replay")
def replay_command(
    dead_letter_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="Id from `list`.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Replay every open dead letter of this reason.")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="With --reason: only this topic.")] = None,
    all_of_reason: Annotated[
        str | None,
        typer.Option(
            "--all-of-reason",
            help="Replay every open dead letter of this reason on every dead-letter topic.",
        ),
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Replay even if already replayed or discarded.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check and say what would be published; publish nothing."),
    ] = False,
    operator: Operator = "",
    bootstrap_servers: Bootstrap = DEFAULT_BOOTSTRAP,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    topic_prefix: TopicPrefix = "",
    db_schema: DbSchema = "operations",
) -> None:
    """Put original records back on their source topics (checked against their SHA-256)."""
    if all_of_reason is not None and (reason is not None or topic is not None):
        _fail("--all-of-reason covers every topic: give it alone", EXIT_REFUSED)
    try:
        selection = Selection(dead_letter_id, reason or all_of_reason, _topic(topic))
    except FilterProblem as problem:
        _fail(str(problem), EXIT_REFUSED)
    who = _operator(operator)
    secret = os.environ.get(SECRET_ENV, "").encode("utf-8") or None
    if secret is None and not dry_run:
        err.print(
            Text(
                f"warning: {SECRET_ENV} is not set, so the copies carry no signed original "
                "time: intake checks its replay window against the replay's time, and refuses "
                "a referral signed longer ago than the window as replayed_message."
            )
        )
    outcomes = _run(
        _with_infra(
            bootstrap_servers,
            database_url,
            topic_prefix,
            db_schema,
            lambda kafka, store: replay(
                kafka,
                store,
                selection,
                operator=who,
                secret=secret,
                again=again,
                dry_run=dry_run,
            ),
        )
    )
    _render_outcomes(outcomes)
    if not all(outcome.ok for outcome in outcomes):
        raise typer.Exit(EXIT_REFUSED)


def _render_outcomes(outcomes: list[ReplayOutcome]) -> None:
    if not outcomes:
        out.print("nothing to replay: no open dead letter matches")
        return
    for outcome in outcomes:
        d = outcome.dead_letter
        signed = " (signed)" if outcome.result == "replayed" and outcome.signed else ""
        out.print(
            Text(
                f"{d.short_id}  {d.reason}  {d.subject}  {outcome.result}{signed}: {outcome.detail}"
            )
        )


@app.command("discard")
def discard_command(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="Id from `list`.")],
    reason: Annotated[str, typer.Option(help="Why it is discarded (recorded, shown by list).")],
    operator: Operator = "",
    bootstrap_servers: Bootstrap = DEFAULT_BOOTSTRAP,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    topic_prefix: TopicPrefix = "",
    db_schema: DbSchema = "operations",
) -> None:
    """Record that a dead letter needs no replay, with the operator's reason."""
    who = _operator(operator)
    outcome: DiscardOutcome = _run(
        _with_infra(
            bootstrap_servers,
            database_url,
            topic_prefix,
            db_schema,
            lambda kafka, store: discard(kafka, store, dead_letter_id, reason, who),
        )
    )
    d = outcome.dead_letter
    said = outcome.status.describe()
    if not outcome.discarded:
        said = f"already {said}; nothing recorded"
    out.print(Text(f"{d.short_id}  {d.reason}  {d.subject}  {said}"))


def run() -> None:
    app(prog_name="aiguillage-dead-letters")


if __name__ == "__main__":
    run()
