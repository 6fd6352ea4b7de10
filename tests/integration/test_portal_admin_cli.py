"""``aiguillage-portal-admin`` on the real database: creates a user and prints the one-time
enrolment link, refuses a second account with the same address, lists and disables users, and
says in one line when PostgreSQL cannot be reached."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Isolated
from tests.support.services import free_port

ADMIN = str(Path(sys.executable).parent / "aiguillage-portal-admin")


def admin(
    isolated: Isolated, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIGUILLAGE_PORTAL_DATABASE_URL": url or isolated.endpoints.database_url,
        "AIGUILLAGE_PORTAL_DB_SCHEMA": isolated.schema("portal"),
        "AIGUILLAGE_PORTAL_PUBLIC_URL": "https://portail.example",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [ADMIN, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_admin_cli_creates_lists_and_disables_users(isolated: Isolated) -> None:
    schema = isolated.schema("portal")
    created = admin(
        isolated,
        "create-user",
        "--email",
        "Agent@Arras.example",
        "--name",
        "Agent",
        "--role",
        "centre",
        "--centre",
        "HDF-ARRAS",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    link = re.search(r"https://portail\.example/enrolement/[A-Za-z0-9_-]{40,}", created.stdout)
    assert link is not None, created.stdout
    row = await isolated.db.fetchrow(f"SELECT * FROM {schema}.users")
    assert row["email"] == "agent@arras.example"
    assert row["centre_id"] == "HDF-ARRAS"
    assert row["password_hash"] is None  # set at enrolment, never by the operator
    token = link.group(0).rsplit("/", 1)[1]
    stored = await isolated.db.fetchval(f"SELECT token_sha256 FROM {schema}.enrolments")
    assert token not in stored  # only its digest is kept

    again = admin(
        isolated,
        "create-user",
        "--email",
        "agent@arras.example",
        "--name",
        "Agent",
        "--role",
        "centre",
        "--centre",
        "HDF-ARRAS",
    )
    assert again.returncode == 1
    assert "existe déjà" in again.stdout
    wrong = admin(
        isolated,
        "create-user",
        "--email",
        "p@x.example",
        "--name",
        "P",
        "--role",
        "prescriber",
    )
    assert wrong.returncode == 1

    listed = admin(isolated, "list-users")
    assert "agent@arras.example" in listed.stdout
    assert "not enrolled" in listed.stdout
    disabled = admin(isolated, "disable-user", f"u:{row['user_id']}")
    assert disabled.returncode == 0
    assert await isolated.db.fetchval(f"SELECT disabled_at IS NOT NULL FROM {schema}.users")

    down = admin(
        isolated,
        "list-users",
        url=f"postgresql://aiguillage:aiguillage@127.0.0.1:{free_port()}/aiguillage",
    )
    assert down.returncode == 2
    assert "PostgreSQL unreachable" in down.stdout
    assert "Traceback" not in down.stdout + down.stderr
