"""The operator console's directory page (``/operateur/reseau``): every centre's sites and
services with routing's own counts (places, held, free, when last confirmed, waiting list), and a
form to correct a count (a signed ``directory.updates`` event naming the operator).

The numbers are routing's (its schema, read-only): what routing decides on, not the portal's
projection of it. An operator's correction is shown as pending until routing's row carries it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from aiguillage_common.logging import get_logger
from aiguillage_schemas.vocabulary import ServiceCode
from portal.adapters.console.reference import Territory
from portal.adapters.guards import Operator, OperatorForm
from portal.adapters.postgres import PortalUnitOfWork
from portal.adapters.web import PageKit
from portal.domain.capacity import FreshnessPolicy
from portal.domain.network import Correction, Filters, line
from portal.domain.responses import ActionRefused
from portal.use_cases.centre_actions import NotFound, Topics
from portal.use_cases.network import correct_capacity

log = get_logger("aiguillage.portal.console")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def routing_schema(name: str) -> str:
    """The schema's name goes into SQL text (an identifier cannot be a parameter): checked."""
    if not SCHEMA_NAME.match(name):
        raise ValueError(f"not a schema name: {name!r}")
    return name


class DirectoryReader:
    """Routing's directory and waiting lists, and the operators' corrections from the audit log."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._r = routing_schema(schema)

    async def lines(self, filters: Filters) -> list[asyncpg.Record]:
        r = self._r
        return list(
            await self._pool.fetch(
                f"""
                SELECT c.centre_id, c.name AS centre_name, c.region_code, s.site_id,
                       s.departement, ss.service, ss.places_total, ss.places_held,
                       ss.assumed, ss.updated_at,
                       COALESCE(w.waiting, 0)::int AS waiting, w.oldest_wait
                FROM {r}.site_services ss
                JOIN {r}.sites s USING (site_id)
                JOIN {r}.centres c USING (centre_id)
                LEFT JOIN (
                    SELECT site_id, service, count(*) AS waiting, min(arrived_at) AS oldest_wait
                    FROM {r}.waitlist GROUP BY site_id, service
                ) w ON w.site_id = ss.site_id AND w.service = ss.service
                WHERE s.closed_at IS NULL AND ss.is_open
                  AND ($1::text IS NULL OR c.region_code = $1)
                  AND ($2::text IS NULL OR s.departement = $2)
                  AND ($3::text IS NULL OR c.centre_id = $3)
                ORDER BY c.name, s.site_id, ss.service
                """,  # noqa: S608 - schema name checked by routing_schema
                filters.region,
                filters.departement,
                filters.centre,
            )
        )

    async def centres(self) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                f"SELECT centre_id, name FROM {self._r}.centres ORDER BY name"  # noqa: S608
            )
        )

    async def places(self, site_id: str, service: str) -> int | None:
        places: int | None = await self._pool.fetchval(
            f"SELECT ss.places_total FROM {self._r}.site_services ss"  # noqa: S608 - schema name checked
            f" JOIN {self._r}.sites s USING (site_id)"
            " WHERE ss.site_id = $1 AND ss.service = $2 AND s.closed_at IS NULL",
            site_id,
            service,
        )
        return places

    async def corrections(self) -> dict[tuple[str, str], Correction]:
        """The last correction of each site-service (the portal's own audit log)."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (detail->>'site_id', detail->>'service')"
            " detail->>'site_id' AS site_id, detail->>'service' AS service,"
            " (detail->>'places_total')::int AS places_total,"
            " (detail->>'as_of')::timestamptz AS as_of, at"
            " FROM audit_log WHERE action = 'capacity_corrected' AND outcome = 'ok'"
            " ORDER BY detail->>'site_id', detail->>'service', at DESC"
        )
        return {
            (row["site_id"], row["service"]): Correction(
                row["places_total"], row["as_of"], row["at"]
            )
            for row in rows
        }


@dataclass(frozen=True)
class NetworkPages:
    reader: DirectoryReader
    territory: Territory
    freshness: FreshnessPolicy
    uow_factory: Callable[[], PortalUnitOfWork]
    topics: Topics
    clock: Callable[[], datetime]

    def register(self, app: FastAPI, kit: PageKit) -> None:
        @app.get("/operateur/reseau", response_model=None)
        async def network_page(request: Request, session: Operator) -> Response:
            filters = Filters.parse(request.query_params)
            return kit.render(
                request, "console_network.html", await self._context(filters), session
            )

        @app.post("/operateur/reseau/capacite", response_model=None)
        async def correct(request: Request, session: Operator, form: OperatorForm) -> Response:
            site_id = str(form.get("site_id", ""))
            back = str(form.get("retour", ""))
            query = back if back.startswith("?") and "\n" not in back else ""
            try:
                service = ServiceCode(str(form.get("service", "")))
                places_total = int(str(form.get("places_total", "")))
            except ValueError:
                return RedirectResponse(f"/operateur/reseau{_with(query, 'erreur=1')}", 303)
            try:
                await correct_capacity(
                    session.principal,
                    site_id,
                    service,
                    places_total,
                    await self.reader.places(site_id, str(service)),
                    self.uow_factory,
                    self.topics,
                    self.clock(),
                )
            except NotFound:
                return kit.not_found(request, session)
            except ActionRefused:
                return RedirectResponse(f"/operateur/reseau{_with(query, 'erreur=1')}", 303)
            log.info("portal.capacity_corrected", site_id=site_id, service=str(service))
            anchor = f"#{site_id}-{service}"
            return RedirectResponse(
                f"/operateur/reseau{_with(query, f'corrige={site_id}')}{anchor}", 303
            )

    async def _context(self, filters: Filters) -> dict[str, Any]:
        now = self.clock()
        corrections = await self.reader.corrections()
        lines = [
            line(row, corrections.get((row["site_id"], row["service"])), self.freshness, now)
            for row in await self.reader.lines(filters)
        ]
        return {
            "nav": "reseau",
            "lines": lines,
            "filters": filters,
            "regions": self.territory.regions,
            "departements": self.territory.departements,
            "centres": await self.reader.centres(),
            "stale": sum(1 for item in lines if item.freshness == "stale"),
            "due_soon": sum(1 for item in lines if item.freshness == "due_soon"),
            "pending": sum(1 for item in lines if item.correction_state == "pending"),
            "now": now,
        }


def _with(query: str, extra: str) -> str:
    kept = "&".join(
        part
        for part in query.removeprefix("?").split("&")
        if part and not part.startswith(("corrige=", "erreur="))
    )
    return f"?{kept}&{extra}" if kept else f"?{extra}"
