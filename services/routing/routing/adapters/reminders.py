"""PostgreSQL side of the capacity reminders, and the worker that sends them periodically.

Kept apart from the referral path: it reads the directory without locking any row, so a
placement never waits for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from aiguillage_common.logging import get_logger
from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.vocabulary import ServiceCode
from routing.adapters.periodic import Periodic
from routing.adapters.postgres import read_directory
from routing.domain.directory import Directory
from routing.domain.reminders import ReminderDue, ReminderKey

log = get_logger("aiguillage.routing.reminders")


class PostgresReminderUnitOfWork(PostgresUnitOfWork):
    async def open_counts(self) -> Directory:
        return await read_directory(self.connection)

    async def reminded(self) -> set[ReminderKey]:
        rows = await self.connection.fetch(
            "SELECT r.site_id, r.service, r.as_of FROM capacity_reminders r"
            " JOIN site_services s ON s.site_id = r.site_id AND s.service = r.service"
            " AND s.updated_at = r.as_of"
        )
        return {(row["site_id"], ServiceCode(row["service"]), row["as_of"]) for row in rows}

    async def claim_reminder(self, due: ReminderDue) -> bool:
        # Guarded by the count on record: a confirmation (or a closure) that committed since the
        # snapshot makes this reminder moot. No row lock: placements keep their hot path.
        claimed = await self.connection.fetchval(
            "INSERT INTO capacity_reminders (site_id, service, as_of, centre_id, stale_at,"
            " reference, event_id)"
            " SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM site_services"
            " WHERE site_id = $1 AND service = $2 AND updated_at = $3 AND is_open)"
            " ON CONFLICT DO NOTHING RETURNING true",
            due.site_id,
            str(due.service),
            due.as_of,
            due.centre_id,
            due.stale_at,
            due.reference,
            due.event_id,
        )
        return bool(claimed)


async def reminders_sent(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
) -> dict[tuple[str, str], tuple[asyncpg.Record, bool]]:
    """Per (site, service): the latest reminder, and whether it was about the count on record
    (False: the centre confirmed since, and was not reminded of the new count yet)."""
    rows = await connection.fetch(
        "SELECT DISTINCT ON (r.site_id, r.service) r.site_id, r.service, r.as_of,"
        " r.reminded_at, r.reference, (s.updated_at = r.as_of) AS current"
        " FROM capacity_reminders r LEFT JOIN site_services s"
        " ON s.site_id = r.site_id AND s.service = r.service"
        " ORDER BY r.site_id, r.service, r.as_of DESC"
    )
    return {(row["site_id"], row["service"]): (row, bool(row["current"])) for row in rows}


class CapacityReminder(Periodic):
    """Every ``interval_s``, reminds the centres of the counts due (one transaction each)."""

    name = "capacity_reminder"

    def __init__(
        self, remind: Callable[[], Awaitable[list[ReminderDue]]], interval_s: float
    ) -> None:
        super().__init__(interval_s)
        self._remind = remind

    async def tick(self) -> None:
        for due in await self._remind():
            log.info(
                "capacity.reminder_sent",
                site_id=due.site_id,
                centre_id=due.centre_id,
                service=str(due.service),
                as_of=due.as_of.isoformat(),
                stale_at=due.stale_at.isoformat(),
                reference=due.reference,
            )
