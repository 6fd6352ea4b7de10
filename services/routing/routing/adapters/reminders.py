"""PostgreSQL side of the capacity reminders, and the worker that sends them periodically.

Kept apart from the referral path: it reads the directory without locking any row, so a
placement never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from aiguillage_common.consumer import where
from aiguillage_common.failures import is_transient
from aiguillage_common.logging import get_logger
from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.vocabulary import ServiceCode
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


class CapacityReminder:
    """Every ``interval_s``, reminds the centres of the counts due (one transaction each)."""

    def __init__(
        self, remind: Callable[[], Awaitable[list[ReminderDue]]], interval_s: float
    ) -> None:
        self._remind = remind
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing-capacity-reminder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        waiting = False  # an outage is logged when it starts and when it ends, not every tick
        while True:
            try:
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
            except Exception as error:
                # Neither an outage nor a bug may stop every future reminder: what was claimed
                # is committed, the rest is tried again on the next tick.
                if not is_transient(error):
                    log.error(
                        "capacity_reminder.failed", error_type=type(error).__name__, at=where(error)
                    )
                elif not waiting:
                    waiting = True
                    log.warning("capacity_reminder.waiting", error_type=type(error).__name__)
            else:
                if waiting:
                    waiting = False
                    log.warning("capacity_reminder.resumed")
            await asyncio.sleep(self._interval_s)
