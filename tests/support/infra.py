"""Where the tests find Kafka and PostgreSQL.

In order: explicit endpoints from the environment; testcontainers when a Docker engine answers;
else the project's own local infrastructure command (deploy/local/infra.sh up). When none works the
session fails with the reason: a test that cannot reach its infrastructure never skips.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "deploy" / "local" / "infra.sh"


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap_servers: str
    database_url: str
    origin: str


class InfrastructureUnavailable(RuntimeError):
    pass


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _from_testcontainers() -> tuple[Endpoints, list[object]]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    postgres = PostgresContainer(
        "postgres:15",
        username="aiguillage",
        password="aiguillage",
        dbname="aiguillage",
        driver=None,
    )
    kafka.start()
    postgres.start()
    return (
        Endpoints(kafka.get_bootstrap_server(), postgres.get_connection_url(), "testcontainers"),
        [kafka, postgres],
    )


def _from_local_infra() -> Endpoints:
    # Output goes to a file, not a pipe: the daemons it starts would hold a pipe open forever.
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(
            ["bash", str(INFRA), "up"],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
        output.seek(0)
        text = output.read().decode(errors="replace")
    if result.returncode != 0:
        raise InfrastructureUnavailable(
            f"deploy/local/infra.sh up failed ({result.returncode}):\n{text[-3000:]}"
        )
    exports = subprocess.run(
        ["bash", str(INFRA), "env"], capture_output=True, text=True, check=True
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1)
        for line in exports.splitlines()
        if line.startswith("export ")
    )
    return Endpoints(
        values["AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS"], values["AIGUILLAGE_DATABASE_URL"], "local"
    )


def resolve() -> tuple[Endpoints, list[object]]:
    kafka = os.environ.get("AIGUILLAGE_TEST_KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("AIGUILLAGE_TEST_DATABASE_URL")
    if kafka and database:
        return Endpoints(kafka, database, "environment"), []
    if _docker_answers():
        return _from_testcontainers()
    return _from_local_infra(), []
