"""Routing's background work: seed the directory when empty, expire unanswered offers, and say
which capacity counts centres must confirm."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from aiguillage_common.geography import Geography
from aiguillage_common.logging import get_logger
from routing.adapters.directory_csv import load_directory
from routing.adapters.periodic import Periodic
from routing.adapters.postgres import read_directory, seed_directory
from routing.domain.directory import confirmations_due

log = get_logger("aiguillage.routing.workers")


class DirectorySeeder:
    """Loads the seed directory once when the tables are empty (a fresh environment); a loaded
    or live directory is never touched. Idempotent and safe with several instances."""

    def __init__(self, pool: asyncpg.Pool, geography: Geography, path_months: float) -> None:
        self._pool = pool
        self._geography = geography
        self._path_months = path_months

    async def start(self) -> None:
        async with self._pool.acquire() as connection:
            if await connection.fetchval("SELECT EXISTS (SELECT 1 FROM site_services)"):
                return
            directory = load_directory(self._geography, path_months=self._path_months)
            inserted = await seed_directory(connection, directory)
            log.info("directory.seeded", site_services=inserted)

    async def stop(self) -> None:
        return None


class OfferTimer(Periodic):
    """Fires overdue offers one transaction at a time until none is due, then sleeps."""

    name = "offer_timer"

    def __init__(self, fire_one: Callable[[], Awaitable[str | None]], interval_s: float) -> None:
        super().__init__(interval_s)
        self._fire_one = fire_one

    async def tick(self) -> None:
        while (referral_id := await self._fire_one()) is not None:
            log.info("offer.timed_out", referral_id=referral_id)


class ConfirmationWatch(Periodic):
    """Every ``interval_s``, logs the capacity counts already stale or due for confirmation
    within ``reminder`` (``capacity.confirmation_due``, a warning operators can alert on), so a
    centre that stopped confirming is noticed before its sites rank lower or stop being offered.
    Logs nothing when every count is fresh."""

    name = "confirmation_watch"

    def __init__(
        self, pool: asyncpg.Pool, freshness: timedelta, reminder: timedelta, interval_s: float
    ) -> None:
        super().__init__(interval_s)
        self._pool = pool
        self._freshness = freshness
        self._reminder = reminder

    async def tick(self) -> None:
        await self.check_once()

    async def check_once(self) -> int:
        async with self._pool.acquire() as connection:
            directory = await read_directory(connection)
        due = confirmations_due(directory, datetime.now(UTC), self._freshness, self._reminder)
        if due:
            log.warning(
                "capacity.confirmation_due",
                stale=sum(c.stale for c in due),
                due_soon=sum(not c.stale for c in due),
                first=[f"{c.site_id}/{c.service} by {c.confirm_by:%Y-%m-%d}" for c in due[:20]],
            )
        return len(due)
