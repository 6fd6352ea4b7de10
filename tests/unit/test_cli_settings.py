"""The operator tools read the shared names (``AIGUILLAGE_DATABASE_URL``…) that ``./run infra env``
prints, and an unreachable database is one line on stderr and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import TEST_MASTER_KEY, free_port

BIN = Path(sys.executable).parent
COMMANDS = [
    ["aiguillage-routing-decision", "ref-000001"],
    ["aiguillage-routing-directory", "show"],
    ["aiguillage-notifications-log", "ref-000001"],
    ["aiguillage-intake-purge"],
    ["aiguillage-migrate"],
    ["aiguillage-dead-letters", "list"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
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
