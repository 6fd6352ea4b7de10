"""``aiguillage-portal-admin`` on the real database: creates a user and prints the one-time
enrolment link, refuses a second account with the same address, lists and disables users, and
says in one line when PostgreSQL cannot be reached. What was done is on stdout (scripts read it);
every refusal is one line on stderr, nothing on stdout, exit 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pyotp

from portal.adapters.postgres import PortalStore
from portal.adapters.secret_box import SecretBox
from tests.conftest import Isolated
from tests.support.services import TEST_TOTP_KEY, free_port

ADMIN = str(Path(sys.executable).parent / "aiguillage-portal-admin")


def admin(
    isolated: Isolated, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIGUILLAGE_PORTAL_DATABASE_URL": url or isolated.endpoints.database_url,
        "AIGUILLAGE_PORTAL_DB_SCHEMA": isolated.schema("portal"),
        "AIGUILLAGE_PORTAL_PUBLIC_URL": "https://portail.example",
        "AIGUILLAGE_PORTAL_TOTP_KEY": TEST_TOTP_KEY,
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
    assert created.stderr == ""
    link = re.search(r"https://portail\.example/enrolement/[A-Za-z0-9_-]{40,}", created.stdout)
    assert link is not None, created.stdout
    row = await isolated.db.fetchrow(f"SELECT * FROM {schema}.users")
    assert row["email"] == "agent@arras.example"
    assert row["centre_id"] == "HDF-ARRAS"
    assert row["password_hash"] is None  # set at enrolment, never by the operator
    token = link.group(0).rsplit("/", 1)[1]
    stored = await isolated.db.fetchval(f"SELECT token_sha256 FROM {schema}.enrolments")
    assert token not in stored  # only its digest is kept
    # The TOTP secret offered at enrolment is sealed: the schema alone gives no second factor.
    sealed = await isolated.db.fetchval(f"SELECT totp_secret FROM {schema}.enrolments")
    assert sealed.startswith("v1:")
    assert re.fullmatch(r"[A-Z2-7]{16,}", sealed.removeprefix("v1:")) is None

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
    assert_refused(again, "existe déjà")
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
    assert_refused(wrong, "prescripteur")
    no_role = admin(
        isolated, "create-user", "--email", "o@x.example", "--name", "O", "--role", "admin"
    )
    assert_refused(no_role, "Unknown role 'admin': one of centre, prescriber, operator.")
    assert await isolated.db.fetchval(f"SELECT count(*) FROM {schema}.users") == 1

    listed = admin(isolated, "list-users")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert "agent@arras.example" in listed.stdout
    assert "not enrolled" in listed.stdout
    disabled = admin(isolated, "disable-user", f"u:{row['user_id']}")
    assert (disabled.returncode, disabled.stderr) == (0, "")
    assert disabled.stdout.strip() == "Disabled; their sessions are ended."
    assert await isolated.db.fetchval(f"SELECT disabled_at IS NOT NULL FROM {schema}.users")
    # Twice leaves the user as asked: not a refusal.
    twice = admin(isolated, "disable-user", str(row["user_id"]))
    assert (twice.returncode, twice.stderr, twice.stdout.strip()) == (0, "", "Already disabled.")
    nobody = uuid.uuid4()
    assert_refused(admin(isolated, "disable-user", f"u:{nobody}"), f"No portal user u:{nobody}.")
    targets = await isolated.db.fetch(
        f"SELECT outcome FROM {schema}.audit_log WHERE action = 'user_disabled' ORDER BY id"
    )
    assert [r["outcome"] for r in targets] == ["ok", "unchanged"]  # nothing for nobody
    assert_refused(
        admin(isolated, "disable-user", "agent@arras.example"),
        "Not a user id: 'agent@arras.example' (u:<uuid> or <uuid>).",
    )

    closed = free_port()
    down = admin(
        isolated,
        "list-users",
        url=f"postgresql://aiguillage:aiguillage@127.0.0.1:{closed}/aiguillage",
    )
    assert (down.returncode, down.stdout) == (2, "")
    assert down.stderr.strip() == (
        f"cannot reach PostgreSQL at 127.0.0.1:{closed} (ConnectionRefusedError)"
    )


def assert_refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    """A refusal: one line on stderr containing ``message``, nothing on stdout, exit 1."""
    assert (done.returncode, done.stdout) == (1, ""), done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr


def _list_users_without_the_key(isolated: Isolated) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIGUILLAGE_PORTAL_TOTP_KEY"}
    return subprocess.run(
        [ADMIN, "list-users"],
        env={
            **env,
            "AIGUILLAGE_PORTAL_DATABASE_URL": isolated.endpoints.database_url,
            "AIGUILLAGE_PORTAL_DB_SCHEMA": isolated.schema("portal"),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_admin_cli_refuses_to_run_without_the_key_sealing_totp_secrets(
    isolated: Isolated,
) -> None:
    done = _list_users_without_the_key(isolated)
    assert_refused(done, "AIGUILLAGE_PORTAL_TOTP_KEY must be base64 of 32 random bytes")


async def test_totp_secrets_written_before_sealing_are_sealed_once_and_still_sign_in(
    isolated: Isolated,
) -> None:
    schema = isolated.schema("portal")
    user, clear = uuid.uuid4(), pyotp.random_base32()
    await isolated.db.execute(
        f"INSERT INTO {schema}.users (user_id, email, display_name, role, prescriber_id,"
        " totp_secret, enrolled_at) VALUES ($1, 'old@spip.example', 'Old', 'prescriber',"
        " 'spip-69', $2, now())",
        user,
        clear,
    )
    await isolated.db.execute(
        f"INSERT INTO {schema}.enrolments (token_sha256, user_id, totp_secret, expires_at)"
        " VALUES ('t', $1, $2, now())",
        user,
        clear,
    )
    async with isolated.schema_pool(schema) as pool:
        store = PortalStore(pool, SecretBox(TEST_TOTP_KEY))
        assert await store.seal_clear_totp_secrets() == 2
        assert await store.seal_clear_totp_secrets() == 0
        stored = await isolated.db.fetch(
            f"SELECT totp_secret FROM {schema}.users UNION ALL"
            f" SELECT totp_secret FROM {schema}.enrolments"
        )
        assert all(r["totp_secret"].startswith("v1:") for r in stored)
        assert all(clear not in r["totp_secret"] for r in stored)
        found = await store.user_by_email("old@spip.example")
        assert found is not None
        assert found.totp_secret == clear  # the user's authenticator keeps working
