"""``aiguillage-demo`` twice in a row on the shared infrastructure: the same outcomes, fresh logs,
and nothing of either run left behind (its topics, consumer groups and schemas are dropped)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from tests.support import infra

BIN = Path(sys.executable).parent
COUNT = 12  # one referral per demo case
OUTCOME = re.compile(r"^demo-(\d\d)-[0-9a-f]{8}\s+(.*)$")
RUN = re.compile(r"^Demo run ([0-9a-f]{8}):", re.MULTILINE)


def _demo(endpoints: infra.Endpoints, log_dir: Path) -> str:
    done = subprocess.run(
        [
            str(BIN / "aiguillage-demo"),
            "--count",
            str(COUNT),
            "--bootstrap",
            endpoints.kafka_bootstrap_servers,
            "--database-url",
            endpoints.database_url,
            "--log-dir",
            str(log_dir),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def _outcomes(output: str) -> list[tuple[str, str]]:
    """(demo case, what happened to it), without the run's token."""
    return [m.groups() for line in output.splitlines() if (m := OUTCOME.match(line))]  # type: ignore[misc]


async def _leftovers(endpoints: infra.Endpoints, tokens: list[str]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap_servers)
    await admin.start()
    try:
        names = await admin.list_topics()
        names += [group[0] for group in await admin.list_consumer_groups()]
    finally:
        await admin.close()
    connection = await asyncpg.connect(endpoints.database_url)
    try:
        schemas = [
            row["nspname"] for row in await connection.fetch("SELECT nspname FROM pg_namespace")
        ]
    finally:
        await connection.close()
    return [
        name
        for name in [*names, *schemas]
        if any(f"demo-{t}." in name or name.endswith(f"_demo{t}") for t in tokens)
    ]


def test_two_demo_runs_in_a_row_print_the_same_outcomes(
    endpoints: infra.Endpoints, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    first = _demo(endpoints, log_dir)
    second = _demo(endpoints, log_dir)

    assert len(_outcomes(first)) == COUNT, first
    assert _outcomes(first) == _outcomes(second)
    tally = [line for line in first.splitlines() if line.endswith(" rejected")]
    assert tally == [line for line in second.splitlines() if line.endswith(" rejected")]
    assert tally[0].endswith(", 0 unfinished, 2 rejected"), tally
    # Each log is the second run's alone: one start, one stop.
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        assert text.count('"event": "service.started"') == 1, log
        assert text.count('"event": "service.stopped"') == 1, log
    tokens = [token for output in (first, second) for token in RUN.findall(output)]
    assert len(tokens) == 2, (first[:200], second[:200])
    assert asyncio.run(_leftovers(endpoints, tokens)) == []
