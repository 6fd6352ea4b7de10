"""A background task run every few seconds until the service stops: offer timeouts, capacity
reminders, the confirmation watch. One loop for all of them, so they treat failures alike."""

from __future__ import annotations

import asyncio
import contextlib

from aiguillage_common.consumer import where
from aiguillage_common.failures import is_transient
from aiguillage_common.logging import get_logger

log = get_logger("aiguillage.routing.workers")


class Periodic:
    """Runs ``tick`` every ``interval_s``. Neither an outage nor a bug may stop every future
    tick: an outage is logged once when it starts and once when it ends (``<name>.waiting`` /
    ``<name>.resumed``), a bug by type and place only (``<name>.failed``), and the next tick
    tries again. What a tick committed before failing stays committed."""

    name = "periodic"

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"routing-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        waiting = False
        while True:
            try:
                await self.tick()
            except Exception as error:
                if not is_transient(error):
                    log.error(
                        f"{self.name}.failed", error_type=type(error).__name__, at=where(error)
                    )
                elif not waiting:
                    waiting = True
                    log.warning(f"{self.name}.waiting", error_type=type(error).__name__)
            else:
                if waiting:
                    waiting = False
                    log.warning(f"{self.name}.resumed")
            await asyncio.sleep(self._interval_s)
