"""The operator console's map and indicators (``/operateur/indicateurs``) and their CSV export.

The numbers are computed in SQL from routing's decision records (its schema, read-only), one
query per KPI family, each giving (home département, week, numerator, denominator) cells; what
they mean and how they add up is in ``portal.domain.indicators``, the drawing in
``portal.domain.map_svg``. The home département is the residence département routing was given
(``routing.referrals.accepted``); weeks are ISO weeks in Paris time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import Response
from markupsafe import Markup

from portal.adapters.console.network import routing_schema
from portal.adapters.console.reference import Territory
from portal.adapters.guards import Operator
from portal.adapters.web import PageKit
from portal.domain import indicators as ind
from portal.domain.map_svg import Bar, Shade, bar_chart, render_map

_WEEK = "date_trunc('week', {at} AT TIME ZONE 'Europe/Paris')::date"


class IndicatorQueries:
    """One query per KPI family over routing's decisions since ``since``."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._r = routing_schema(schema)

    def _first(self, where: str) -> str:
        """Referrals counted once, in the week of their first decision matching ``where``."""
        r = self._r
        return f"""
            WITH firsts AS (
                SELECT referral_id, min(decided_at) AS at FROM {r}.decisions d
                WHERE {where} GROUP BY referral_id
            )
            SELECT x.accepted->>'residence_departement' AS departement,
                   {_WEEK.format(at="f.at")} AS week, count(*)::float8 AS num, count(*) AS den
            FROM firsts f JOIN {r}.referrals x USING (referral_id)
            WHERE f.at >= $1
            GROUP BY 1, 2
        """  # noqa: S608 - schema name checked by routing_schema

    async def cells(self, kpi: ind.KpiCode, since: datetime) -> list[ind.Cell]:
        r = self._r
        if kpi == "received":
            sql = self._first("true")
        elif kpi == "waiting":
            sql = self._first("d.outcome = 'waitlisted'")
        elif kpi == "unroutable_missing":
            sql = self._first("d.outcome = 'unroutable' AND d.reason = 'no_site_offers_services'")
        else:
            # The offers family: every 'routed' decision (an offer of a place) counts.
            num = (
                "count(*) FILTER (WHERE s.departement = x.accepted->>'residence_departement')"
                if kpi == "home_share"
                else "sum(d.distance_km)"
            )
            sql = f"""
                SELECT x.accepted->>'residence_departement' AS departement,
                       {_WEEK.format(at="d.decided_at")} AS week,
                       ({num})::float8 AS num, count(*) AS den
                FROM {r}.decisions d
                JOIN {r}.referrals x USING (referral_id)
                JOIN {r}.sites s ON s.site_id = d.site_id
                WHERE d.outcome = 'routed' AND d.decided_at >= $1
                GROUP BY 1, 2
            """  # noqa: S608 - schema name checked by routing_schema
        return [
            ind.Cell(row["departement"], row["week"], float(row["num"] or 0.0), int(row["den"]))
            for row in await self._pool.fetch(sql, since)
        ]

    async def declines(self, since: datetime) -> list[tuple[date, str, int]]:
        """Declines routing acted on (a decision caused by the answer exists), per week and
        reason. The reason is in the portal's audit of the answer: routing's decision records
        keep the decline as the cause, not its reason."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_WEEK.format(at="a.at")} AS week, a.detail->>'decline_reason' AS reason,
                   count(*) AS n
            FROM audit_log a
            WHERE a.action = 'offer_answered' AND a.outcome = 'declined' AND a.at >= $1
              AND EXISTS (SELECT 1 FROM {self._r}.decisions d
                          WHERE d.caused_by_event_id::text = a.detail->>'event_id')
            GROUP BY 1, 2
            """,  # noqa: S608 - schema name checked by routing_schema
            since,
        )
        return [(row["week"], row["reason"] or "other", int(row["n"])) for row in rows]


def _chosen(request: Request) -> tuple[ind.Kpi, int]:
    """The indicator and period the page or export asks for (defaults when absent or unknown)."""
    kpi = ind.KPIS[ind.parse_kpi(request.query_params.get("kpi"))]
    return kpi, ind.parse_period(request.query_params.get("periode"))


@dataclass(frozen=True)
class IndicatorPages:
    queries: IndicatorQueries
    territory: Territory
    clock: Callable[[], datetime]

    def register(self, app: FastAPI, kit: PageKit) -> None:
        @app.get("/operateur/indicateurs", response_model=None)
        async def indicators_page(request: Request, session: Operator) -> Response:
            kpi, period = _chosen(request)
            context = await self._context(kpi, period)
            return kit.render(request, "console_indicators.html", context, session)

        @app.get("/operateur/indicateurs.csv", response_model=None)
        async def indicators_csv(request: Request, session: Operator) -> Response:
            kpi, period = _chosen(request)
            now = self.clock()
            cells = await self.queries.cells(kpi.code, ind.period_start(period, now))
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(
                ind.csv_rows(kpi, cells, self.territory.departements)
            )
            name = f"aiguillage-{kpi.code}-{period}s-{now.date().isoformat()}.csv"
            return Response(
                out.getvalue(),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )

    async def _context(self, kpi: ind.Kpi, period: int) -> dict[str, Any]:
        now = self.clock()
        since = ind.period_start(period, now)
        mondays = ind.weeks(period, now)
        cells = await self.queries.cells(kpi.code, since)
        totals = ind.by_departement(cells)
        territory = self.territory
        values = {
            code: ind.value(kpi.kind, totals.get(code, ind.Measure()))
            for code in territory.departements
        }
        present = [v for v in values.values() if v is not None]
        breaks = ind.class_breaks(present)
        shades: dict[str, Shade] = {}
        rows = []
        for code, name in territory.departements.items():
            amount = values[code]
            shown = ind.show(kpi.kind, amount)
            shades[code] = Shade(
                ind.colour(ind.classify(amount, breaks), breaks), f"{code} {name} : {shown}"
            )
            rows.append((code, name, shown, totals.get(code, ind.Measure()).den))
        caption = f"{kpi.label} par département, {ind.PERIODS[period]}"
        svg = render_map(
            territory.geometry,
            shades,
            [(code, shades[code]) for code in territory.overseas],
            caption,
            ind.NO_DATA,
        )
        weekly = [
            (monday, ind.value(kpi.kind, m), m.den) for monday, m in ind.by_week(cells, mondays)
        ]
        scale = 100.0 if kpi.kind == "share" else 1.0
        chart = bar_chart(
            [
                Bar(
                    monday.strftime("%d/%m"),
                    ((amount * scale if amount is not None else 0.0, ind.PALETTE[3]),),
                    f"Semaine du {monday.strftime('%d/%m/%Y')} : {ind.show(kpi.kind, amount)}",
                )
                for monday, amount, _ in weekly
            ],
            f"{kpi.label} par semaine (France entière)",
        )
        declines = ind.decline_series(await self.queries.declines(since), mondays)
        reasons = list(ind.DECLINE_LABELS)
        decline_colours = dict(
            zip(reasons, (ind.PALETTE[4], ind.PALETTE[2], "#ce614a", "#b7a73f"), strict=True)
        )
        decline_chart = bar_chart(
            [
                Bar(
                    monday.strftime("%d/%m"),
                    tuple((float(counts[r]), decline_colours[r]) for r in reasons),
                    f"Semaine du {monday.strftime('%d/%m/%Y')} : "
                    + ", ".join(f"{ind.DECLINE_LABELS[r]} {counts[r]}" for r in reasons),
                )
                for monday, counts in declines
            ],
            "Refus des centres par semaine et par motif",
        )
        return {
            "nav": "indicateurs",
            "kpi": kpi,
            "kpis": ind.KPIS,
            "period": period,
            "periods": ind.PERIODS,
            "map_svg": Markup(svg),  # noqa: S704 - built by map_svg, every text escaped
            "legend": ind.legend(kpi.kind, breaks, min(present) if present else None),
            "no_data": ind.NO_DATA,
            "rows": rows,
            "weekly": [(m, ind.show(kpi.kind, a), den) for m, a, den in weekly],
            "chart_svg": Markup(chart),  # noqa: S704
            "declines": declines,
            "decline_labels": ind.DECLINE_LABELS,
            "decline_colours": decline_colours,
            "decline_svg": Markup(decline_chart),  # noqa: S704
            "since": since,
        }
