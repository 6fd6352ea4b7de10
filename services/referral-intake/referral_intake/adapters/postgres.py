"""PostgreSQL side of intake: referrals, sealed identities, the registry, retention."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from uuid import UUID

import asyncpg

from aiguillage_common.identity_requests import Release
from aiguillage_common.pool import transaction_scoped
from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.events.prescribers import PrescriberEntry, PrescriberRegistryUpdated
from aiguillage_schemas.events.referral_submitted import Identity, ReferralSubmitted
from referral_intake.adapters.identity_cipher import IdentityCipher, SealedIdentity
from referral_intake.domain.admission import Admitted
from referral_intake.domain.identity_release import Holder, ReferralState
from referral_intake.domain.registry import effective_entry
from referral_intake.use_cases.identity_release import ReleaseView
from referral_intake.use_cases.referral_requests import StoredReferral


class PostgresIntakeUnitOfWork(PostgresUnitOfWork):
    def __init__(self, pool: asyncpg.Pool, cipher: IdentityCipher) -> None:
        super().__init__(pool)
        self._cipher = cipher

    async def add_referral(
        self,
        event: ReferralSubmitted,
        admitted: Admitted,
        identity: Identity,
        outside_jurisdiction: bool,
    ) -> str | None:
        sealed = self._cipher.seal(event.subject, identity)
        # One round trip: the referral and its sealed identity when the id is free, else what is
        # stored under it. A concurrent insert of the same id waits for the other transaction
        # (the unique index), then reads as taken.
        stored: str | None = await self.connection.fetchval(
            "WITH referral AS (INSERT INTO referrals (referral_id, fingerprint, prescriber_id,"
            " correlation_id, submitted_event_id, accepted, outside_jurisdiction)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)"
            " ON CONFLICT (referral_id) DO NOTHING RETURNING referral_id),"
            " sealed AS (INSERT INTO identities (referral_id, ciphertext, wrapped_key,"
            " master_key_id) SELECT referral_id, $8, $9, $10 FROM referral)"
            " SELECT fingerprint FROM referrals"
            " WHERE referral_id = $1 AND NOT EXISTS (SELECT 1 FROM referral)",
            event.subject,
            admitted.fingerprint,
            admitted.data.prescriber_id,
            event.correlation_id,
            event.event_id,
            admitted.data.model_dump_json(),
            outside_jurisdiction,
            sealed.ciphertext,
            sealed.wrapped_key,
            sealed.master_key_id,
        )
        return stored

    async def referral(self, referral_id: str) -> StoredReferral | None:
        row = await self.connection.fetchrow(
            "SELECT prescriber_id, status, purged_at FROM referrals WHERE referral_id = $1"
            " FOR UPDATE",
            referral_id,
        )
        if row is None:
            return None
        return StoredReferral(row["prescriber_id"], row["status"], row["purged_at"] is not None)

    async def cancel(self, referral_id: str, at: datetime) -> None:
        await self.connection.execute(
            "UPDATE referrals SET status = 'cancelled', closed_at = $2 WHERE referral_id = $1",
            referral_id,
            at,
        )

    async def replace_identity(self, referral_id: str, identity: Identity) -> None:
        sealed = self._cipher.seal(referral_id, identity)
        await self.connection.execute(
            "UPDATE identities SET ciphertext = $2, wrapped_key = $3, master_key_id = $4"
            " WHERE referral_id = $1",
            referral_id,
            sealed.ciphertext,
            sealed.wrapped_key,
            sealed.master_key_id,
        )


class PostgresRegistryUnitOfWork(PostgresUnitOfWork):
    async def store_entry(self, event: PrescriberRegistryUpdated) -> bool:
        kept = await self.connection.fetchval(
            "INSERT INTO prescribers (prescriber_id, signing_key_id, entry, updated_at, event_id)"
            " VALUES ($1, $2, $3::jsonb, $4, $5)"
            " ON CONFLICT (prescriber_id) DO UPDATE SET signing_key_id = excluded.signing_key_id,"
            " entry = excluded.entry, updated_at = excluded.updated_at,"
            " event_id = excluded.event_id"
            " WHERE prescribers.updated_at < excluded.updated_at RETURNING true",
            event.data.prescriber_id,
            event.data.signing_key_id,
            event.data.model_dump_json(),
            event.occurred_at,
            event.event_id,
        )
        return bool(kept)


class PostgresRegistry:
    """The effective registry: the file's entries, overridden by those received by event.

    Looked up per key id and kept for ``cache_s`` seconds: the registry changes a few times a year
    while a burst of referrals reads it per record, so each intake instance sees an update (a key
    rotated or revoked) at the latest ``cache_s`` seconds after it is stored.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        from_file: Mapping[str, PrescriberEntry],
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._from_file = dict(from_file)
        self._cache_s = cache_s
        self._clock = clock
        self._cached: dict[str, tuple[float, PrescriberEntry | None]] = {}

    async def by_key_id(self, key_id: str) -> PrescriberEntry | None:
        now = self._clock()
        hit = self._cached.get(key_id)
        if hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        file_ids = [e.prescriber_id for e in self._from_file.values() if e.signing_key_id == key_id]
        rows = await self._pool.fetch(
            "SELECT entry FROM prescribers WHERE signing_key_id = $1 OR prescriber_id = ANY($2)",
            key_id,
            file_ids,
        )
        stored = [PrescriberEntry.model_validate_json(row["entry"]) for row in rows]
        entry = effective_entry(key_id, self._from_file, stored)
        if len(self._cached) > 10_000:
            self._cached.clear()  # bounded: unknown key ids sent by anyone must not grow it
        self._cached[key_id] = (now, entry)
        return entry


async def purge_closed(pool: asyncpg.Pool, older_than_days: int, now: datetime) -> list[str]:
    """Crypto-shred the identity of referrals closed more than ``older_than_days`` ago.

    The wrapped person key and the ciphertext are deleted, so any copy of the sealed identity left
    elsewhere (backups, a topic) can never be opened again. The pseudonymous referral row stays, as
    the record that the referral existed and was closed; its routing attributes (which include the
    unlabelled victim commune among the exclusions) are emptied.
    """
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            "UPDATE referrals SET purged_at = $1, accepted = '{}'::jsonb"
            " WHERE closed_at IS NOT NULL AND purged_at IS NULL"
            " AND closed_at < $1::timestamptz - make_interval(days => $2::int)"
            " RETURNING referral_id",
            now,
            older_than_days,
        )
        purged = [row["referral_id"] for row in rows]
        await connection.execute(
            "UPDATE identities SET wrapped_key = NULL, ciphertext = ''::bytea"
            " WHERE referral_id = ANY($1)",
            purged,
        )
    return purged


_SET_HOLDER = (
    "INSERT INTO identity_holders (referral_id, centre_id, state, event_id)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (referral_id) DO UPDATE SET"
    " centre_id = excluded.centre_id, state = excluded.state,"
    " event_id = excluded.event_id, updated_at = clock_timestamp()"
)


async def _write_holders(
    holders: dict[str, tuple[str, str | None, str | None, UUID]],
    connection: asyncpg.pool.PoolConnectionProxy,
) -> None:
    if holders:
        await connection.executemany(_SET_HOLDER, list(holders.values()))  # one round trip


class PostgresHoldersUnitOfWork(PostgresUnitOfWork):
    async def set_holder(self, referral_id: str, holder: Holder | None, event_id: UUID) -> None:
        values = (
            referral_id,
            holder.centre_id if holder else None,
            holder.state if holder else None,
            event_id,
        )
        batch = self._batch
        if batch is None:
            await self.connection.execute(_SET_HOLDER, *values)
            return
        # Nothing reads holders back while tracking them: the batch writes each referral's
        # last holder when it ends (what one statement per event would have left).
        holders: dict[str, tuple[str, str | None, str | None, UUID]] | None = batch.extensions.get(
            _SET_HOLDER
        )
        if holders is None:
            holders = batch.extensions[_SET_HOLDER] = {}
            batch.flushes[_SET_HOLDER] = functools.partial(_write_holders, holders)
        holders.pop(referral_id, None)  # kept in the order of the last change
        holders[referral_id] = values

    async def set_housing_holder(
        self, referral_id: str, holder: Holder | None, event_id: UUID
    ) -> None:
        # Rare (split referrals only): written at once, not batched. The batch's care holders
        # are written when it ends; the two rows never depend on each other.
        await self.connection.execute(
            "INSERT INTO identity_housing_holders (referral_id, centre_id, state, event_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (referral_id) DO UPDATE SET"
            " centre_id = excluded.centre_id, state = excluded.state,"
            " event_id = excluded.event_id, updated_at = clock_timestamp()",
            referral_id,
            holder.centre_id if holder else None,
            holder.state if holder else None,
            event_id,
        )


# What a release request needs, read in one statement, so in one snapshot: whether intake has
# handled the offer event the request names (NULL when it names none), the referral's state and
# holders, and its sealed identity (opened only for a granted release). It must stay one
# statement: read apart, a batch handling the offer could commit between the handled flag and
# the holder, and the rightful centre would be refused for good (the race fixed in 00dd5f8).
_RELEASE_VIEW = """
SELECT CASE WHEN $2::uuid IS NULL THEN NULL ELSE EXISTS (
           SELECT 1 FROM processed_events WHERE consumer = $3 AND event_id = $2) END AS seen,
       r.referral_id IS NOT NULL AS known, r.status, r.purged_at, h.centre_id,
       hh.centre_id AS housing_centre_id, i.ciphertext, i.wrapped_key, i.master_key_id
FROM (SELECT 1) AS one
LEFT JOIN referrals r ON r.referral_id = $1
LEFT JOIN identity_holders h ON h.referral_id = r.referral_id
LEFT JOIN identity_housing_holders hh ON hh.referral_id = r.referral_id
LEFT JOIN identities i ON i.referral_id = r.referral_id
"""

# The audit row of an answer. A grant is recorded only if the referral is still open and its
# identity is still the one read ($4, the ciphertext: an amendment seals the new identity
# afresh), with both rows locked until this statement commits: a cancellation, purge or
# amendment either waits for the grant, or has committed and the grant is not recorded (the
# caller reads again: 'gone', or the amended identity). So an identity is never released past a
# committed cancellation, and never in a version an amendment has replaced.
_AUDIT_RELEASE = """
INSERT INTO identity_releases (referral_id, centre_id, outcome)
SELECT $1, $2, $3
WHERE $3 <> 'granted' OR EXISTS (
    SELECT 1 FROM referrals r JOIN identities i ON i.referral_id = r.referral_id
    WHERE r.referral_id = $1 AND r.status <> 'cancelled' AND r.purged_at IS NULL
      AND i.ciphertext = $4
    FOR SHARE)
RETURNING true
"""


class PostgresReleaseStore:
    """The identity API's reads and audit: one statement each, each its own transaction (a
    request costs two round trips, not a transaction of four statements)."""

    def __init__(self, pool: asyncpg.Pool, cipher: IdentityCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    async def release_view(
        self, referral_id: str, consumer: str, offer_event_id: UUID | None
    ) -> ReleaseView:
        async with transaction_scoped(self._pool) as connection:
            row = await connection.fetchrow(_RELEASE_VIEW, referral_id, offer_event_id, consumer)
        assert row is not None  # one row, whether the referral exists or not
        state = (
            ReferralState(
                cancelled=row["status"] == "cancelled",
                purged=row["purged_at"] is not None,
                holder_centre_id=row["centre_id"],
                housing_holder_centre_id=row["housing_centre_id"],
            )
            if row["known"]
            else None
        )
        sealed = (
            None
            if row["wrapped_key"] is None
            else SealedIdentity(row["ciphertext"], row["wrapped_key"], row["master_key_id"])
        )
        return ReleaseView(row["seen"], state, sealed)

    def open_identity(self, referral_id: str, sealed: object) -> Identity:
        if not isinstance(sealed, SealedIdentity):
            raise LookupError("the referral has no readable identity")
        return self._cipher.open(referral_id, sealed)

    async def audit_release(
        self, referral_id: str, centre_id: str, outcome: Release, view: ReleaseView
    ) -> bool:
        # The identity version a grant is for; a refusal's audit checks none.
        sealed = view.sealed if outcome is Release.GRANTED else None
        read = sealed.ciphertext if isinstance(sealed, SealedIdentity) else None
        async with transaction_scoped(self._pool) as connection:
            recorded = await connection.fetchval(
                _AUDIT_RELEASE, referral_id, centre_id, str(outcome), read
            )
        return bool(recorded)
