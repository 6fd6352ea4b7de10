"""Kafka side of the portal: decode what routing, intake and the directory publish; project it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiguillage_common.codec import decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.logging import get_logger
from aiguillage_schemas.envelope import Envelope
from portal.use_cases.projection import ProjectionUnitOfWork, project

log = get_logger("aiguillage.portal")


class ProjectionHandler:
    def __init__(
        self,
        uow_factory: Callable[[], ProjectionUnitOfWork],
        accepted: Sequence[type[Envelope]],
        consumer: str,
    ) -> None:
        self._uow_factory = uow_factory
        self._accepted = accepted
        self._consumer = consumer

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, self._accepted)
        applied = await project(event, self._uow_factory, self._consumer)
        log.debug(
            "portal.projected" if applied else "portal.duplicate_ignored",
            referral_id=event.subject,
            event_type=event.event_type,
        )
