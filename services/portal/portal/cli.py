"""``aiguillage-portal-admin``: create portal users (printing their one-time enrolment link),
list and disable them. Reads the portal's settings (``AIGUILLAGE_PORTAL_*`` or the shared
``AIGUILLAGE_DATABASE_URL``) like the service does.

What was done goes to stdout (scripts read the link and the list); a refusal (bad argument,
unknown user, an account the rules refuse) is one line on stderr and exit 1, as for every
``aiguillage`` subcommand; unreachable PostgreSQL, exit 2."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar
from uuid import UUID

import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aiguillage_common.cli import (
    EXIT_REFUSED,
    Refused,
    Unreachable,
    fail,
    overrides,
    settings_or_fail,
    typer_app,
    where,
    why,
)
from aiguillage_common.cli import (
    run as run_command,
)
from portal.adapters.postgres import PortalStore
from portal.adapters.secret_box import SecretBox, SecretBoxError
from portal.domain.access import ROLES, Role
from portal.settings import PortalSettings
from portal.use_cases.accounts import AccountRefused, create_user

app = typer_app("aiguillage-portal-admin", __doc__ or "")
console = Console()
T = TypeVar("T")


def _with_store(
    database_url: str | None, action: Callable[[PortalStore, PortalSettings], Awaitable[T]]
) -> T:
    """Run ``action`` on the portal's store, with the same settings and the same one-line
    failures as the other operator commands (exit 2 when PostgreSQL cannot be reached)."""
    settings = settings_or_fail(PortalSettings, "AIGUILLAGE_PORTAL_", **overrides(database_url))
    try:
        box = SecretBox(settings.totp_key.get_secret_value())
    except SecretBoxError as error:
        fail(str(error), EXIT_REFUSED)  # a missing setting, like settings_or_fail's

    async def main() -> T:
        try:
            pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=2,
                timeout=10,
                server_settings={"search_path": settings.db_schema},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            raise Unreachable(
                f"cannot reach PostgreSQL at {where(settings.database_url)} ({why(error)})"
            ) from None
        assert pool is not None
        try:
            return await action(PortalStore(pool, box), settings)
        finally:
            await pool.close()

    return run_command(main())


DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Default: the portal's settings.")
]


@app.command("create-user")
def create_user_command(
    email: Annotated[str, typer.Option(help="Sign-in name.")],
    name: Annotated[str, typer.Option(help="Name shown in the portal.")],
    role: Annotated[str, typer.Option(help="centre, prescriber or operator.")],
    centre: Annotated[str | None, typer.Option(help="Centre id, for role centre.")] = None,
    prescriber: Annotated[
        str | None, typer.Option(help="Prescriber id, for role prescriber.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user and print their one-time enrolment link (password + TOTP are set there)."""
    if role not in ROLES:
        fail(f"Unknown role {role!r}: one of {', '.join(ROLES)}.")
    chosen: Role = role

    async def action(store: PortalStore, settings: PortalSettings) -> str:
        created = await create_user(
            store,
            email,
            name,
            chosen,
            centre,
            prescriber,
            datetime.now(UTC),
            timedelta(seconds=settings.enrolment_valid_s),
            known_centres=set(await store.centre_ids()) or None,
        )
        return created.link(settings.public_url)

    try:
        link = _with_store(database_url, action)
    except AccountRefused as refused:
        fail(str(refused))
    console.print("User created. One-time enrolment link (valid 72 h by default):")
    console.print(Text(link), soft_wrap=True)


@app.command("list-users")
def list_users(database_url: DatabaseUrl = None) -> None:
    async def action(store: PortalStore, _: PortalSettings) -> None:
        table = Table("user id", "e-mail", "role", "centre / prescriber", "state")
        for user in await store.users():
            state = "disabled" if user.disabled else "active" if user.enrolled else "not enrolled"
            table.add_row(
                Text(f"u:{user.user_id}"),
                Text(user.email),
                user.role,
                Text(user.centre_id or user.prescriber_id or "-"),
                state,
            )
        console.print(table)

    _with_store(database_url, action)


@app.command("disable-user")
def disable_user(
    user_id: Annotated[str, typer.Argument(help="u:<uuid> or <uuid>.")],
    database_url: DatabaseUrl = None,
) -> None:
    try:
        target = UUID(user_id.removeprefix("u:"))
    except ValueError:
        fail(f"Not a user id: {user_id!r} (u:<uuid> or <uuid>).")

    async def action(store: PortalStore, _: PortalSettings) -> bool:
        outcome = await store.set_disabled(target, None, datetime.now(UTC))
        if outcome is None:
            raise Refused(f"No portal user u:{target}.")
        return outcome == "disabled"

    done = _with_store(database_url, action)
    # Disabling twice leaves the user as asked: said on stdout, exit 0 (a script may repeat it).
    console.print("Disabled; their sessions are ended." if done else "Already disabled.")


def run() -> None:
    app()
