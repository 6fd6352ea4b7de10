"""Kafka side of routing: decode each inbound topic's events and hand them to the use cases.

Records on ``centres.responses`` and ``directory.updates`` are authenticated first (signature,
key, freshness: before the body is parsed), then authorised against the directory (a centre key
speaks only for its sites; the portal names its user): a refusal is an ``InvalidMessage`` the
reliable consumer dead-letters with its reason, and the use case never runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from aiguillage_common.codec import InvalidMessage, Problem, decode_event
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.logging import get_logger
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    CENTRE_RESPONSES,
    DIRECTORY_UPDATES,
    OfferAnswered,
    PathReport,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralCancelled
from routing.domain.referral import ReferralState
from routing.domain.senders import Sender, authenticate, authorise, claim_of
from routing.use_cases.centre_responses import answer_offer, report_path
from routing.use_cases.directory_updates import apply_directory_update
from routing.use_cases.ports import RoutingContext
from routing.use_cases.route_referral import cancel_referral, route_referral

log = get_logger("aiguillage.routing")


def _log_outcome(kind: str, referral_id: str, state: ReferralState | None) -> None:
    if state is None:
        log.info("referral.duplicate_ignored", referral_id=referral_id, on=kind)
        return
    log.info(
        f"referral.{state.status}",
        referral_id=referral_id,
        on=kind,
        site_id=state.site_id,
        attempt=state.attempt,
    )


class RoutingHandler:
    """``referrals.accepted``: new referrals and prescribers' cancellations."""

    def __init__(self, ctx: RoutingContext) -> None:
        self._ctx = ctx

    async def __call__(self, record: InboundRecord) -> None:
        event = decode_event(record.value, (ReferralAccepted, ReferralCancelled))
        if isinstance(event, ReferralAccepted):
            _log_outcome("accepted", event.subject, await route_referral(event, self._ctx))
        elif isinstance(event, ReferralCancelled):
            _log_outcome("cancelled", event.subject, await cancel_referral(event, self._ctx))


class SenderCheck:
    """Authenticates and authorises a record of a centre topic, or raises ``InvalidMessage``."""

    def __init__(
        self,
        ctx: RoutingContext,
        senders: Mapping[str, Sender],
        secrets: Mapping[str, bytes],
        window_s: int,
        operations_secret: bytes = b"",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._senders = dict(senders)
        self._secrets = dict(secrets)
        self._window_s = window_s
        self._operations_secret = operations_secret
        self._clock = clock

    def authenticate(self, record: InboundRecord) -> Sender:
        value = record.checked_value()
        found = authenticate(
            record.headers,
            value,
            record.broker_timestamp_ms,
            self._senders,
            self._secrets,
            self._window_s,
            self._clock(),
            self._operations_secret,
        )
        if isinstance(found, Problem):
            raise InvalidMessage(found)
        return found

    async def authorise(self, sender: Sender, event: Envelope) -> None:
        claim = claim_of(event)
        # Read in the batch's transaction, so a site added earlier in the same batch counts; in a
        # batch, every site's centre is read once, not once per record.
        async with self._ctx.uow_factory() as uow:
            owner = await uow.site_centre(claim.site_id)
        problem = authorise(sender, claim, {claim.site_id: owner} if owner is not None else {})
        if problem is not None:
            raise InvalidMessage(problem)

    async def admit(self, record: InboundRecord, accepted: tuple[type[Envelope], ...]) -> Envelope:
        """The record's event, once its sender may say it; logs who spoke (key id, actor)."""
        sender = self.authenticate(record)
        event = decode_event(record.value, accepted)
        await self.authorise(sender, event)
        actor = claim_of(event).actor
        log.info(
            "centre_record.admitted",
            signing_key_id=sender.key_id,
            actor_kind=actor.kind if actor else None,
            actor_id=actor.id if actor else None,
        )
        return event


class CentreResponsesHandler:
    """``centres.responses``: answers to offers and path reports."""

    def __init__(self, ctx: RoutingContext, check: SenderCheck) -> None:
        self._ctx = ctx
        self._check = check

    async def __call__(self, record: InboundRecord) -> None:
        event = await self._check.admit(record, CENTRE_RESPONSES)
        if isinstance(event, OfferAnswered):
            _log_outcome(event.data.answer, event.subject, await answer_offer(event, self._ctx))
        elif isinstance(event, PathReport):
            _log_outcome(event.data.report, event.subject, await report_path(event, self._ctx))


class DirectoryHandler:
    """``directory.updates``: capacity, services and sites."""

    def __init__(self, ctx: RoutingContext, check: SenderCheck) -> None:
        self._ctx = ctx
        self._check = check

    async def __call__(self, record: InboundRecord) -> None:
        event = await self._check.admit(record, DIRECTORY_UPDATES)
        changed = await apply_directory_update(event, self._ctx)
        log.info("directory.updated", update=event.event_type, changed=changed)
