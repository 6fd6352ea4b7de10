"""What every operator command shares (``aiguillage …`` and the older per-service commands).

- Where Kafka and PostgreSQL are: the services' own settings (``AIGUILLAGE_<SERVICE>_*``, else the
  shared ``AIGUILLAGE_DATABASE_URL`` / ``AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS`` that ``./run infra
  env`` prints), overridden by ``--database-url`` / ``--bootstrap-servers``.
- One line on stderr and a non-zero exit, never a traceback, when either cannot be reached: a
  connection is bounded by ``CONNECT_TIMEOUT_S``, and an address is printed as host:port only
  (a database URL holds a password).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

EXIT_REFUSED = 1  # the command was understood and refused, or found nothing
EXIT_UNREACHABLE = 2  # Kafka or PostgreSQL could not be used
CONNECT_TIMEOUT_S = 5.0

# soft_wrap: long lines are left to the terminal, never broken inside an id by rich; an error
# stays one line whatever the terminal width.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL. Default: the service's setting, else AIGUILLAGE_DATABASE_URL.",
        show_default=False,  # it holds a password
    ),
]
BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers. Default: the service's setting, else "
        "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class Unreachable(Exception):
    """Kafka or PostgreSQL could not be reached; the message is the one line to print."""


class Refused(Exception):
    """The command cannot do what was asked (nothing found, bad argument); one line."""


def where(database_url: str) -> str:
    """host:port of a database URL: never its password."""
    parts = urlsplit(database_url)
    return f"{parts.hostname or '?'}:{parts.port or 5432}"


def why(error: BaseException) -> str:
    # The type only: some drivers' messages quote the connection string.
    return type(error).__name__


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    err.print(Text(message))
    raise typer.Exit(code)


def overrides(
    database_url: str | None = None, bootstrap_servers: str | None = None
) -> dict[str, Any]:
    """Init arguments for a settings class: given options win over the environment."""
    given: dict[str, Any] = {}
    if database_url:
        given["database_url"] = database_url
    if bootstrap_servers:
        given["kafka_bootstrap_servers"] = bootstrap_servers
    return given


S = TypeVar("S")


def settings_or_fail(factory: Callable[..., S], env_prefix: str, **given: Any) -> S:
    """Build a service's settings; a missing or invalid variable is one line, exit 1."""
    try:
        return factory(**given)
    except ValidationError as error:
        names = ", ".join(env_prefix + ".".join(map(str, e["loc"])).upper() for e in error.errors())
        fail(f"missing or invalid setting {names} (run it with the service's environment)")


async def connect(database_url: str, schema: str | None = None) -> asyncpg.Connection:
    """One connection, within CONNECT_TIMEOUT_S, searching ``schema`` first."""
    settings = {"search_path": schema} if schema else None
    try:
        return await asyncpg.connect(
            database_url,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=30,
            server_settings=settings,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise Unreachable(
            f"cannot reach PostgreSQL at {where(database_url)} ({why(error)})"
        ) from None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; infrastructure failures become one line and exit 2."""
    # aiokafka logs every failed connection attempt; the one line below says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(coroutine)
    except Unreachable as error:
        fail(str(error), EXIT_UNREACHABLE)
    except Refused as error:
        fail(str(error), EXIT_REFUSED)
    except (KafkaError, TimeoutError) as error:
        fail(f"Kafka failed during the command ({why(error)})", EXIT_UNREACHABLE)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        if isinstance(error, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
            fail(
                f"PostgreSQL has no such table or schema ({why(error)}): "
                "was `aiguillage-migrate` run, with the same schema names?",
                EXIT_UNREACHABLE,
            )
        fail(f"PostgreSQL failed during the command ({why(error)})", EXIT_UNREACHABLE)


async def bounded(what: str, attempt: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``attempt`` within ``timeout_s``, else Unreachable (a broker that accepts the TCP
    connection and never answers would otherwise hold the command for minutes)."""
    try:
        return await asyncio.wait_for(attempt, timeout_s)
    except (KafkaError, OSError, TimeoutError) as error:
        raise Unreachable(f"cannot reach {what} ({why(error)})") from None


def typer_app(name: str, help_text: str) -> typer.Typer:
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        # A bug's traceback may be shown, never its frame locals (they may hold a record).
        pretty_exceptions_show_locals=False,
    )
