"""The chaos script's quick mode on the test infrastructure (issue #8, "never lose a referral").

About 200 signed referrals (5 % invalid) flow through the three services run as processes, with
the demo's SMTP sink and webhook receiver, while each service is SIGKILLed once and PostgreSQL is
stopped immediately (``pg_ctl stop -m immediate``) and started again. Every must-be-0 row of the
report must read 0: nothing lost or undecided, no valid referral rejected, no double decision, no
oversubscribed place, no missing notification, no doubled effect, every invalid input answered
once, no dead letter, no service exiting on its own, no consumer lag.

Stopping PostgreSQL needs the cluster's data directory: the test stops and restarts the very
cluster the suite uses, found through ``deploy/local/infra.sh``'s state directory
(``$AIGUILLAGE_STATE_DIR``, default ``.local``) whose port matches the suite's database URL. Other
test sessions sharing that cluster see a short outage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import locate_infra, quick_plan, run_chaos
from tests.support import infra

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_quick_chaos_run_reads_zero_on_every_must_be_zero_row(
    endpoints: infra.Endpoints, tmp_path: Path
) -> None:
    try:
        target = locate_infra(endpoints.database_url, log_path=tmp_path / "infra.log")
    except RuntimeError as error:
        pytest.fail(f"cannot stop the suite's PostgreSQL for the chaos run: {error}", pytrace=False)
    seed = int(os.environ.get("AIGUILLAGE_CHAOS_SEED", "1"))
    result = await run_chaos(
        quick_plan(seed),
        endpoints.kafka_bootstrap_servers,
        endpoints.database_url,
        target,
        tmp_path,
    )
    print("\n".join(result.faults))
    print(result.table)
    assert not result.failed, f"must-be-0 rows not 0 (logs in {tmp_path}):\n{result.table}"
