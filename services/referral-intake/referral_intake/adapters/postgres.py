"""PostgreSQL side of intake: referrals and sealed identities."""

from __future__ import annotations

import asyncpg

from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.events.referral_submitted import Identity, ReferralSubmitted
from referral_intake.adapters.identity_cipher import IdentityCipher
from referral_intake.domain.admission import Admitted


class PostgresIntakeUnitOfWork(PostgresUnitOfWork):
    def __init__(self, pool: asyncpg.Pool, cipher: IdentityCipher) -> None:
        super().__init__(pool)
        self._cipher = cipher

    async def stored_fingerprint(self, referral_id: str) -> str | None:
        value: str | None = await self.connection.fetchval(
            "SELECT fingerprint FROM referrals WHERE referral_id = $1", referral_id
        )
        return value

    async def add_referral(
        self, event: ReferralSubmitted, admitted: Admitted, identity: Identity
    ) -> None:
        await self.connection.execute(
            "INSERT INTO referrals (referral_id, fingerprint, prescriber_id, correlation_id,"
            " submitted_event_id, accepted) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            event.subject,
            admitted.fingerprint,
            admitted.data.prescriber_id,
            event.correlation_id,
            event.event_id,
            admitted.data.model_dump_json(),
        )
        sealed = self._cipher.seal(event.subject, identity)
        await self.connection.execute(
            "INSERT INTO identities (referral_id, ciphertext, wrapped_key, master_key_id)"
            " VALUES ($1, $2, $3, $4)",
            event.subject,
            sealed.ciphertext,
            sealed.wrapped_key,
            sealed.master_key_id,
        )
