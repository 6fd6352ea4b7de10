"""The operator tools read the shared names (``AIGUILLAGE_DATABASE_URL``…) that ``./run infra env``
prints, and an unreachable database is one line on stderr and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import TEST_MASTER_KEY, TEST_TOTP_KEY, free_port

BIN = Path(sys.executable).parent
COMMANDS = [
    ["aiguillage-routing-decision", "ref-000001"],
    ["aiguillage-routing-directory", "show"],
    ["aiguillage-notifications-log", "ref-000001"],
    ["aiguillage-intake-purge"],
    ["aiguillage-migrate"],
    ["aiguillage-dead-letters", "list"],
    # The one CLI: every subcommand that reads PostgreSQL first.
    ["aiguillage", "timeline", "ref-000001"],
    ["aiguillage", "decision", "ref-000001"],
    ["aiguillage", "directory", "show"],
    ["aiguillage", "directory", "stale", "59"],
    ["aiguillage", "directory", "load"],
    ["aiguillage", "deliveries", "ref-000001"],
    ["aiguillage", "dead-letters", "list"],
    ["aiguillage", "dead-letters", "show", "abcd1234"],
    ["aiguillage", "purge"],
    ["aiguillage", "portal-users", "list-users"],
    ["aiguillage-portal-admin", "list-users"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_tool_reaches_the_shared_database_url_and_fails_in_one_line(command: list[str]) -> None:
    port = free_port()  # nothing listens there: the connection is refused at once
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("AIGUILLAGE_") and k.endswith(("DATABASE_URL", "BOOTSTRAP_SERVERS")))
    }
    env |= {
        "AIGUILLAGE_DATABASE_URL": f"postgresql://u:secret-pw@127.0.0.1:{port}/copy",
        "AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "AIGUILLAGE_INTAKE_IDENTITY_MASTER_KEY": TEST_MASTER_KEY,
        "AIGUILLAGE_PORTAL_TOTP_KEY": TEST_TOTP_KEY,
    }
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output
    assert "secret-pw" not in output
    # It tried the shared address, not the default database on 15432.
    assert f":{port}" in output or f", {port})" in output, output


def test_lag_reaches_the_shared_broker_and_fails_in_one_line() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGUILLAGE_")}
    env["AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    done = subprocess.run(
        [str(BIN / "aiguillage"), "lag"], env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert output.strip() == f"cannot reach Kafka at 127.0.0.1:{port} (KafkaConnectionError)"


def test_the_options_win_over_the_environment() -> None:
    db, kafka = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGUILLAGE_")}
    env["AIGUILLAGE_DATABASE_URL"] = "postgresql://u:p@127.0.0.1:1/not-this-one"
    for command, port in (
        (["timeline", "ref-1", "--database-url", f"postgresql://u:p@127.0.0.1:{db}/x"], db),
        (["lag", "--bootstrap-servers", f"127.0.0.1:{kafka}"], kafka),
    ):
        done = subprocess.run(
            [str(BIN / "aiguillage"), *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert f"127.0.0.1:{port} " in done.stderr, done.stderr
