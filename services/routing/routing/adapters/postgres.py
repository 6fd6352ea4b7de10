"""PostgreSQL side of routing: the decision records."""

from __future__ import annotations

import uuid

from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted
from routing.domain.decision import Routed, Unroutable


class PostgresRoutingUnitOfWork(PostgresUnitOfWork):
    async def record_decision(
        self, event: ReferralAccepted, decision_id: uuid.UUID, decision: Routed | Unroutable
    ) -> None:
        routed = isinstance(decision, Routed)
        await self.connection.execute(
            "INSERT INTO decisions (referral_id, decision_id, outcome, site_id, centre_id,"
            " distance_km, reason, explanation, caused_by_event_id, correlation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            event.subject,
            decision_id,
            "routed" if routed else "unroutable",
            decision.site.site_id if isinstance(decision, Routed) else None,
            decision.site.centre_id if isinstance(decision, Routed) else None,
            decision.distance_km if isinstance(decision, Routed) else None,
            decision.reason if isinstance(decision, Unroutable) else None,
            decision.explanation,
            event.event_id,
            event.correlation_id,
        )
