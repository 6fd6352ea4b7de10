"""The operator console's indicators on the real database: referrals decided by routing's own use
cases (offered, waiting, unroutable for a missing service, over several weeks), then every KPI's
CSV export compared with a direct SQL computation over the same decision records."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from aiguillage_common.geography import load_geography
from aiguillage_schemas.vocabulary import ServiceCode
from portal.adapters.console.indicators import IndicatorQueries
from portal.adapters.console.reference import load_territory
from portal.domain import indicators as ind
from routing.adapters.postgres import PostgresRoutingUnitOfWork
from routing.domain.decision import Policy
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import route_referral
from tests.conftest import Isolated
from tests.support.routing_events import lille_referral

BIN = Path(sys.executable).parent
COURSE = ServiceCode.RESPONSIBILITY_COURSE

# The same numbers, asked of PostgreSQL another way (window functions over every decision, one
# statement per KPI), as an analyst would check the export.
EXPECTED = {
    "received": "outcome IS NOT NULL",
    "waiting": "outcome = 'waitlisted'",
    "unroutable_missing": "outcome = 'unroutable' AND reason = 'no_site_offers_services'",
}
FIRSTS = """
SELECT home, week, count(*)::float8 AS num, count(*) AS den FROM (
    SELECT x.accepted->>'residence_departement' AS home,
           date_trunc('week', d.decided_at AT TIME ZONE 'Europe/Paris')::date AS week,
           row_number() OVER (PARTITION BY d.referral_id ORDER BY d.decided_at) AS nth
    FROM {r}.decisions d JOIN {r}.referrals x ON x.referral_id = d.referral_id
    WHERE {where}
) t WHERE nth = 1 AND week >= $1::date GROUP BY home, week
"""
OFFERS = """
SELECT x.accepted->>'residence_departement' AS home,
       date_trunc('week', d.decided_at AT TIME ZONE 'Europe/Paris')::date AS week,
       {num} AS num, count(*) AS den
FROM {r}.decisions d
JOIN {r}.referrals x ON x.referral_id = d.referral_id
JOIN {r}.sites s ON s.site_id = d.site_id
WHERE d.outcome = 'routed'
  AND date_trunc('week', d.decided_at AT TIME ZONE 'Europe/Paris')::date >= $1::date
GROUP BY 1, 2
"""
OFFER_NUM = {
    "home_share": "sum(CASE WHEN s.departement = x.accepted->>'residence_departement'"
    " THEN 1 ELSE 0 END)::float8",
    "mean_distance": "sum(d.distance_km)",
}


@pytest.fixture
async def pools(isolated: Isolated) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Routing's pool (its use cases, in this process) and the portal's (the console's)."""
    async with (
        isolated.schema_pool(isolated.schema("routing"), max_size=2) as routing,
        isolated.schema_pool(isolated.schema("portal"), max_size=2) as portal,
    ):
        yield routing, portal


def _load_directory(isolated: Isolated) -> None:
    env = {
        **os.environ,
        "AIGUILLAGE_ROUTING_DATABASE_URL": isolated.endpoints.database_url,
        "AIGUILLAGE_ROUTING_DB_SCHEMA": isolated.schema("routing"),
    }
    done = subprocess.run(
        [str(BIN / "aiguillage-routing-directory"), "load"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


async def test_csv_export_of_every_kpi_equals_sql_over_routings_decisions(
    isolated: Isolated, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    routing_pool, portal_pool = pools
    r = isolated.schema("routing")
    _load_directory(isolated)
    ctx = RoutingContext(
        uow_factory=lambda: PostgresRoutingUnitOfWork(routing_pool),
        geography=load_geography(),
        policy=Policy(allow_neighbour_fallback=False),
        decisions_topic="routed",
    )
    ids = [f"ref-kpi-{n}{isolated.suffix}" for n in range(7)]
    # Four offers in the Nord, a referral needing a service no site near it offers.
    for referral_id in ids[:4]:
        assert await route_referral(lille_referral(referral_id), ctx) is not None
    unroutable = await route_referral(
        lille_referral(ids[4], needs=(ServiceCode.PROBATIONARY_PLACEMENT,)), ctx
    )
    assert unroutable is not None
    assert unroutable.status == "unroutable"
    # No more places for the course around Lille: the next two wait.
    await routing_pool.execute(
        "UPDATE site_services SET places_total = places_held, assumed = false,"
        " updated_at = clock_timestamp() WHERE service = $1",
        str(COURSE),
    )
    for referral_id in ids[5:]:
        state = await route_referral(lille_referral(referral_id), ctx)
        assert state is not None
        assert state.status == "waitlisted"
    # Spread the records over weeks (the export is per week): two referrals decided 3 weeks
    # ago, one 20 weeks ago (outside a 13-week period, inside a 52-week one).
    await routing_pool.execute(
        "UPDATE decisions SET decided_at = decided_at - interval '21 days'"
        " WHERE referral_id = ANY($1::text[])",
        [ids[1], ids[5]],
    )
    await routing_pool.execute(
        "UPDATE decisions SET decided_at = decided_at - interval '140 days' WHERE referral_id = $1",
        ids[2],
    )

    queries = IndicatorQueries(portal_pool, r)
    names = load_territory().departements
    now = datetime.now(UTC)
    seen: dict[tuple[str, int], list[tuple[str, ...]]] = {}
    for period in (13, 52):
        since = ind.period_start(period, now)
        for code in ind.KPI_CODES:
            kpi = ind.KPIS[code]
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(
                ind.csv_rows(kpi, await queries.cells(code, since), names)
            )
            exported = list(csv.reader(io.StringIO(text.getvalue())))
            assert tuple(exported[0]) == ind.CSV_HEADER
            if code in EXPECTED:
                sql = FIRSTS.format(r=r, where=EXPECTED[code])
            else:
                sql = OFFERS.format(r=r, num=OFFER_NUM[code])
            rows = await isolated.db.fetch(sql, since.date())
            expected = sorted(
                (
                    code,
                    row["home"],
                    names[row["home"]],
                    row["week"].isoformat(),
                    row["num"],
                    row["den"],
                )
                for row in rows
            )
            got = [tuple(row) for row in exported[1:]]
            assert [row[:4] for row in got] == [row[:4] for row in expected], code
            for line, want in zip(got, expected, strict=True):
                assert float(line[4]) == pytest.approx(want[4], abs=0.01), (code, line)
                assert int(line[5]) == want[5], (code, line)
                value = ind.value(kpi.kind, ind.Measure(want[4], want[5]))
                assert value is not None
                assert float(line[6]) == pytest.approx(value, abs=0.01), (code, line)
            seen[(code, period)] = got

    # The numbers a user would check: 7 referrals from the Nord in 52 weeks, 6 in 13.
    assert sum(int(row[5]) for row in seen[("received", 52)]) == 7
    assert sum(int(row[5]) for row in seen[("received", 13)]) == 6
    assert len({row[3] for row in seen[("received", 52)]}) == 3  # three distinct weeks
    assert sum(int(row[5]) for row in seen[("waiting", 13)]) == 2
    assert sum(int(row[5]) for row in seen[("unroutable_missing", 13)]) == 1
    assert sum(int(row[5]) for row in seen[("home_share", 52)]) == 4
    assert all(row[1] == "59" for row in seen[("mean_distance", 52)])
