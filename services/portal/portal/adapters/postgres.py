"""The portal's tables: projection (written by the consumers), accounts, sessions, audit log.

SQL only, no ORM. Writes that publish an event go through ``PortalUnitOfWork`` so that the
event (outbox), the local state and the audit row commit together or not at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from aiguillage_common.unit_of_work import PostgresUnitOfWork
from portal.adapters.secret_box import SecretBox
from portal.domain.access import Principal, Role
from portal.domain.projection import Admission, HistoryEntry, RejectionRecord, RoutingChange

Row = asyncpg.Record


async def audit(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
    action: str,
    outcome: str,
    *,
    user_id: UUID | None = None,
    email: str | None = None,
    referral_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    client_address: str | None = None,
) -> None:
    """One audit row. ``detail`` holds codes and ids only (callers never pass identity)."""
    await connection.execute(
        "INSERT INTO audit_log (user_id, email, action, outcome, referral_id, detail,"
        " client_address) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
        user_id,
        email,
        action,
        outcome,
        referral_id,
        json.dumps(dict(detail or {})),
        client_address,
    )


class PortalUnitOfWork(PostgresUnitOfWork):
    """Projection writes (consumers) and user actions (web), each in one transaction."""

    async def _history(self, entry: HistoryEntry) -> None:
        await self.connection.execute(
            "INSERT INTO referral_history (event_id, referral_id, occurred_at, kind, summary,"
            " site_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            entry.event_id,
            entry.referral_id,
            entry.occurred_at,
            entry.kind,
            entry.summary,
            entry.site_id,
        )

    async def apply_routing(self, change: RoutingChange) -> None:
        site = change.site
        await self.connection.execute(
            """
            INSERT INTO referrals AS r (referral_id, correlation_id, prescriber_id,
                prescriber_kind, status, centre_id, centre_name, site_id, answer_by, attempt,
                offered_services)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (referral_id) DO UPDATE SET
                status = COALESCE(EXCLUDED.status, r.status),
                centre_id = CASE WHEN $12 THEN NULL
                                 ELSE COALESCE(EXCLUDED.centre_id, r.centre_id) END,
                centre_name = CASE WHEN $12 THEN NULL
                                   ELSE COALESCE(EXCLUDED.centre_name, r.centre_name) END,
                site_id = CASE WHEN $12 THEN NULL ELSE COALESCE(EXCLUDED.site_id, r.site_id) END,
                answer_by = CASE WHEN EXCLUDED.status IS NULL THEN r.answer_by
                                 ELSE EXCLUDED.answer_by END,
                attempt = COALESCE(EXCLUDED.attempt, r.attempt),
                offered_services = CASE WHEN cardinality(EXCLUDED.offered_services) > 0
                                   THEN EXCLUDED.offered_services ELSE r.offered_services END,
                -- routing answered: whatever a user sent has been taken into account
                pending_action = NULL,
                updated_at = clock_timestamp()
            """,
            change.referral_id,
            change.correlation_id,
            change.prescriber_id,
            change.prescriber_kind,
            change.status,
            site.centre_id if site else None,
            site.centre_name if site else None,
            site.site_id if site else None,
            change.answer_by,
            change.attempt,
            list(change.services),
            change.clears_site,
        )
        await self._history(change.history)

    async def apply_admission(self, admission: Admission) -> None:
        await self.connection.execute(
            """
            INSERT INTO referrals AS r (referral_id, correlation_id, prescriber_id,
                prescriber_kind, status, judicial_frame, needed_services, urgency, language,
                interpreter_needed, residence_departement, respond_by)
            VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8, $9, $10, $11::text::date)
            ON CONFLICT (referral_id) DO UPDATE SET
                status = COALESCE(r.status, 'received'),
                judicial_frame = EXCLUDED.judicial_frame,
                needed_services = EXCLUDED.needed_services,
                urgency = EXCLUDED.urgency,
                language = EXCLUDED.language,
                interpreter_needed = EXCLUDED.interpreter_needed,
                residence_departement = EXCLUDED.residence_departement,
                respond_by = EXCLUDED.respond_by,
                updated_at = clock_timestamp()
            """,
            admission.referral_id,
            admission.correlation_id,
            admission.prescriber_id,
            admission.prescriber_kind,
            admission.judicial_frame,
            list(admission.needed_services),
            admission.urgency,
            admission.language,
            admission.interpreter_needed,
            admission.residence_departement,
            admission.respond_by,
        )
        await self._history(admission.history)

    async def add_rejection(self, record: RejectionRecord) -> None:
        await self.connection.execute(
            "INSERT INTO rejections (event_id, referral_id, prescriber_id, reason, field_path,"
            " reasons, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (event_id) DO NOTHING",
            record.event_id,
            record.referral_id,
            record.prescriber_id,
            record.reason,
            record.field_path,
            list(record.reasons),
            record.occurred_at,
        )

    async def set_capacity(
        self,
        site_id: str,
        service: str,
        places_total: int | None,
        as_of: datetime,
        actor_id: str | None,
        *,
        open_: bool = True,
    ) -> bool:
        """Newer than what is known wins (as routing does); False for an unknown site or an
        older count. ``places_total`` None keeps the number (a service closed)."""
        status = await self.connection.execute(
            """
            INSERT INTO site_services AS s (site_id, service, places_total, as_of, assumed,
                open, confirmed_by)
            SELECT $1, $2, COALESCE($3, 0), $4, false, $5, $6
            WHERE EXISTS (SELECT 1 FROM sites WHERE site_id = $1)
            ON CONFLICT (site_id, service) DO UPDATE SET
                places_total = COALESCE($3, s.places_total),
                as_of = EXCLUDED.as_of, assumed = false, open = EXCLUDED.open,
                confirmed_by = EXCLUDED.confirmed_by
            WHERE s.as_of < EXCLUDED.as_of
            """,
            site_id,
            service,
            places_total,
            as_of,
            open_,
            actor_id,
        )
        return status.endswith(" 1")

    async def add_site(self, site_id: str, centre_id: str, departement: str) -> None:
        await self.connection.execute(
            "INSERT INTO sites (site_id, centre_id, centre_name, departement)"
            " VALUES ($1, $2, COALESCE((SELECT centre_name FROM sites WHERE centre_id = $2"
            " LIMIT 1), $2), $3) ON CONFLICT (site_id) DO NOTHING",
            site_id,
            centre_id,
            departement,
        )

    async def close_site(self, site_id: str, as_of: datetime) -> None:
        await self.connection.execute(
            "UPDATE site_services SET open = false, as_of = $2 WHERE site_id = $1 AND as_of < $2",
            site_id,
            as_of,
        )

    async def referral_for_update(self, referral_id: str) -> Row | None:
        row: Row | None = await self.connection.fetchrow(
            "SELECT * FROM referrals WHERE referral_id = $1 FOR UPDATE", referral_id
        )
        return row

    async def site_for_update(self, site_id: str, service: str) -> Row | None:
        row: Row | None = await self.connection.fetchrow(
            "SELECT s.centre_id, ss.places_total FROM site_services ss"
            " JOIN sites s USING (site_id) WHERE ss.site_id = $1 AND ss.service = $2"
            " FOR UPDATE OF ss",
            site_id,
            service,
        )
        return row

    async def set_pending(self, referral_id: str, action: str | None) -> None:
        await self.connection.execute(
            "UPDATE referrals SET pending_action = $2, updated_at = clock_timestamp()"
            " WHERE referral_id = $1",
            referral_id,
            action,
        )

    async def audit(self, action: str, outcome: str, **fields: Any) -> None:
        await audit(self.connection, action, outcome, **fields)


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: UUID
    email: str
    display_name: str
    role: Role
    centre_id: str | None
    prescriber_id: str | None
    password_hash: str | None
    totp_secret: str | None
    totp_last_step: int | None
    enrolled: bool
    disabled: bool
    created_at: datetime

    def principal(self) -> Principal:
        return Principal(self.user_id, self.role, self.centre_id, self.prescriber_id)


def _user(row: Row) -> UserRecord:
    return UserRecord(
        user_id=row["user_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        centre_id=row["centre_id"],
        prescriber_id=row["prescriber_id"],
        password_hash=row["password_hash"],
        totp_secret=row["totp_secret"],
        totp_last_step=row["totp_last_step"],
        enrolled=row["enrolled_at"] is not None,
        disabled=row["disabled_at"] is not None,
        created_at=row["created_at"],
    )


class PortalStore:
    """Reads for the pages and account writes that publish nothing. TOTP secrets are sealed
    with ``box`` on the way in and opened on the way out: the rest of the portal sees them
    clear, the database never does."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self.pool = pool
        self._box = box

    async def _rows(self, sql: str, *args: Any) -> list[Row]:
        return list(await self.pool.fetch(sql, *args))

    def _user(self, row: Row) -> UserRecord:
        user = _user(row)
        if user.totp_secret is not None:
            user = dataclasses.replace(
                user, totp_secret=self._box.open(user.totp_secret, user.user_id)
            )
        return user

    async def seal_clear_totp_secrets(self) -> int:
        """Seal the TOTP secrets written before sealing existed; returns how many. Run at
        start: idempotent, and a no-op once every secret is sealed."""
        sealed = 0
        async with self.pool.acquire() as connection, connection.transaction():
            for table, key in (("users", "user_id"), ("enrolments", "token_sha256")):
                rows = await connection.fetch(
                    f"SELECT {key} AS key, user_id, totp_secret FROM {table}"  # noqa: S608
                    " WHERE totp_secret IS NOT NULL AND totp_secret NOT LIKE 'v1:%' FOR UPDATE"
                )
                for row in rows:
                    await connection.execute(
                        f"UPDATE {table} SET totp_secret = $2 WHERE {key} = $1",  # noqa: S608
                        row["key"],
                        self._box.seal(row["totp_secret"], row["user_id"]),
                    )
                sealed += len(rows)
        return sealed

    # --- accounts -------------------------------------------------------------------------
    async def user_by_email(self, email: str) -> UserRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM users WHERE email = $1", email.lower())
        return self._user(row) if row else None

    async def user(self, user_id: UUID) -> UserRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM users WHERE user_id = $1", user_id)
        return self._user(row) if row else None

    async def users(self) -> list[UserRecord]:
        rows = await self.pool.fetch("SELECT * FROM users ORDER BY role, email")
        return [self._user(r) for r in rows]

    async def create_user(
        self,
        user_id: UUID,
        email: str,
        display_name: str,
        role: Role,
        centre_id: str | None,
        prescriber_id: str | None,
        token_sha256: str,
        totp_secret: str,
        expires_at: datetime,
        created_by: UUID | None,
    ) -> bool:
        """False when the e-mail is taken."""
        async with self.pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetchval(
                "INSERT INTO users (user_id, email, display_name, role, centre_id, prescriber_id,"
                " created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (email) DO NOTHING RETURNING true",
                user_id,
                email.lower(),
                display_name,
                role,
                centre_id,
                prescriber_id,
                created_by,
            )
            if not inserted:
                return False
            await connection.execute(
                "INSERT INTO enrolments (token_sha256, user_id, totp_secret, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                token_sha256,
                user_id,
                self._box.seal(totp_secret, user_id),
                expires_at,
            )
            await audit(
                connection,
                "user_created",
                "ok",
                user_id=created_by,
                detail={"new_user": f"u:{user_id}", "role": role},
            )
        return True

    async def enrolment(self, token_sha256: str, now: datetime) -> tuple[UserRecord, str] | None:
        row = await self.pool.fetchrow(
            "SELECT e.totp_secret AS offered_secret, u.* FROM enrolments e JOIN users u"
            " USING (user_id) WHERE e.token_sha256 = $1 AND e.used_at IS NULL"
            " AND e.expires_at > $2 AND u.disabled_at IS NULL",
            token_sha256,
            now,
        )
        if row is None:
            return None
        user = self._user(row)
        return user, self._box.open(row["offered_secret"], user.user_id)

    async def complete_enrolment(
        self,
        token_sha256: str,
        user_id: UUID,
        password_hash: str,
        totp_secret: str,
        totp_step: int | None,
        now: datetime,
        client_address: str,
    ) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            used = await connection.fetchval(
                "UPDATE enrolments SET used_at = $2 WHERE token_sha256 = $1 AND used_at IS NULL"
                " AND expires_at > $2 RETURNING true",
                token_sha256,
                now,
            )
            if not used:
                return False
            # Any other link of this user dies with it; so do sessions under an old password.
            await connection.execute(
                "UPDATE enrolments SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
                user_id,
                now,
            )
            await connection.execute(
                "UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL",
                user_id,
                now,
            )
            await connection.execute(
                "UPDATE users SET password_hash = $2, totp_secret = $3, totp_last_step = $4,"
                " enrolled_at = $5 WHERE user_id = $1",
                user_id,
                password_hash,
                self._box.seal(totp_secret, user_id),
                totp_step,
                now,
            )
            await audit(
                connection, "enrolled", "ok", user_id=user_id, client_address=client_address
            )
        return True

    async def set_disabled(
        self, user_id: UUID, by: UUID | None, now: datetime
    ) -> Literal["disabled", "already"] | None:
        """Disable the user and end their sessions; None (nothing written, nothing audited)
        when there is no such user."""
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchrow(
                "SELECT disabled_at IS NULL AS active FROM users WHERE user_id = $1 FOR UPDATE",
                user_id,
            )
            if found is None:
                return None
            done = bool(found["active"])
            if done:
                await connection.execute(
                    "UPDATE users SET disabled_at = $2 WHERE user_id = $1", user_id, now
                )
            await connection.execute(
                "UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL",
                user_id,
                now,
            )
            await audit(
                connection,
                "user_disabled",
                "ok" if done else "unchanged",
                user_id=by,
                detail={"target": f"u:{user_id}"},
            )
        return "disabled" if done else "already"

    async def failures_since(
        self, email: str, client_address: str, since: datetime
    ) -> tuple[list[datetime], list[datetime]]:
        rows = await self.pool.fetch(
            "SELECT email = $1 AS mine, client_address = $2 AS here, at FROM sign_in_failures"
            " WHERE (email = $1 OR client_address = $2) AND at > $3",
            email.lower(),
            client_address,
            since,
        )
        return [r["at"] for r in rows if r["mine"]], [r["at"] for r in rows if r["here"]]

    async def claim_totp_step(self, user_id: UUID, step: int) -> bool:
        """True once per (user, time step): two sign-ins racing with one code, one wins."""
        claimed = await self.pool.fetchval(
            "UPDATE users SET totp_last_step = $2 WHERE user_id = $1"
            " AND (totp_last_step IS NULL OR totp_last_step < $2) RETURNING true",
            user_id,
            step,
        )
        return bool(claimed)

    async def record_sign_in(
        self, email: str, client_address: str, outcome: str, user_id: UUID | None, now: datetime
    ) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            if outcome not in ("ok", "throttled"):
                await connection.execute(
                    "INSERT INTO sign_in_failures (email, client_address, at) VALUES ($1, $2, $3)",
                    email.lower(),
                    client_address,
                    now,
                )
            await audit(
                connection,
                "sign_in",
                outcome,
                user_id=user_id,
                email=email.lower(),
                client_address=client_address,
            )

    # --- sessions -------------------------------------------------------------------------
    async def open_session(
        self, session_sha256: str, user_id: UUID, csrf_token: str, now: datetime
    ) -> None:
        await self.pool.execute(
            "INSERT INTO sessions (session_sha256, user_id, csrf_token, created_at, last_seen_at)"
            " VALUES ($1, $2, $3, $4, $4)",
            session_sha256,
            user_id,
            csrf_token,
            now,
        )

    async def session(self, session_sha256: str) -> Row | None:
        row: Row | None = await self.pool.fetchrow(
            "SELECT s.created_at, s.last_seen_at, s.csrf_token, s.user_id, u.role, u.centre_id,"
            " u.prescriber_id, u.display_name, u.email FROM sessions s JOIN users u"
            " USING (user_id) WHERE s.session_sha256 = $1 AND s.ended_at IS NULL"
            " AND u.disabled_at IS NULL",
            session_sha256,
        )
        return row

    async def touch_session(self, session_sha256: str, now: datetime) -> None:
        await self.pool.execute(
            "UPDATE sessions SET last_seen_at = $2 WHERE session_sha256 = $1",
            session_sha256,
            now,
        )

    async def end_session(self, session_sha256: str, now: datetime, reason: str) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            user_id = await connection.fetchval(
                "UPDATE sessions SET ended_at = $2 WHERE session_sha256 = $1 AND ended_at IS NULL"
                " RETURNING user_id",
                session_sha256,
                now,
            )
            if user_id is not None:
                await audit(connection, "session_ended", reason, user_id=user_id)

    # --- pages ----------------------------------------------------------------------------
    async def referral(self, referral_id: str) -> Row | None:
        row: Row | None = await self.pool.fetchrow(
            "SELECT * FROM referrals WHERE referral_id = $1", referral_id
        )
        return row

    async def history(self, referral_id: str) -> list[Row]:
        return await self._rows(
            "SELECT occurred_at, kind, summary, site_id FROM referral_history"
            " WHERE referral_id = $1 ORDER BY occurred_at, recorded_at",
            referral_id,
        )

    async def centre_history(self, referral_id: str, centre_id: str) -> list[Row]:
        """What a centre reads of a referral's history: its own sites' steps and those naming
        no site, not which other centres were offered it or declined it."""
        return await self._rows(
            "SELECT h.occurred_at, h.kind, h.summary, h.site_id FROM referral_history h"
            " WHERE h.referral_id = $1 AND (h.site_id IS NULL OR h.site_id IN"
            " (SELECT site_id FROM sites WHERE centre_id = $2))"
            " ORDER BY h.occurred_at, h.recorded_at",
            referral_id,
            centre_id,
        )

    async def centre_referrals(self, centre_id: str) -> list[Row]:
        return await self._rows(
            "SELECT * FROM referrals WHERE centre_id = $1 AND status IN ('offered', 'placed')"
            " ORDER BY status DESC, answer_by NULLS LAST, updated_at",
            centre_id,
        )

    async def prescriber_referrals(self, prescriber_id: str) -> list[Row]:
        return await self._rows(
            "SELECT * FROM referrals WHERE prescriber_id = $1 ORDER BY updated_at DESC LIMIT 500",
            prescriber_id,
        )

    async def prescriber_rejections(self, prescriber_id: str) -> list[Row]:
        return await self._rows(
            "SELECT * FROM rejections WHERE prescriber_id = $1 ORDER BY occurred_at DESC LIMIT 200",
            prescriber_id,
        )

    async def rejections_of(self, referral_id: str, prescriber_id: str) -> list[Row]:
        return await self._rows(
            "SELECT * FROM rejections WHERE referral_id = $1 AND prescriber_id = $2"
            " ORDER BY occurred_at",
            referral_id,
            prescriber_id,
        )

    async def capacities(self, centre_id: str) -> list[Row]:
        return await self._rows(
            "SELECT ss.*, s.departement FROM site_services ss JOIN sites s USING (site_id)"
            " WHERE s.centre_id = $1 AND ss.open ORDER BY ss.site_id, ss.service",
            centre_id,
        )

    async def centre_name(self, centre_id: str) -> str | None:
        name: str | None = await self.pool.fetchval(
            "SELECT centre_name FROM sites WHERE centre_id = $1 LIMIT 1", centre_id
        )
        return name

    async def centre_ids(self) -> list[str]:
        return [
            r["centre_id"] for r in await self.pool.fetch("SELECT DISTINCT centre_id FROM sites")
        ]

    async def audit_entries(self, limit: int = 300) -> list[Row]:
        return await self._rows("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1", limit)

    async def record_audit(self, action: str, outcome: str, **fields: Any) -> None:
        async with self.pool.acquire() as connection:
            await audit(connection, action, outcome, **fields)

    async def seed_directory(
        self,
        sites: Sequence[tuple[str, str, str, str]],
        capacity: Sequence[tuple[str, str, int, datetime]],
    ) -> None:
        """Reference data, once: what is already there (confirmed since) is kept."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO sites (site_id, centre_id, centre_name, departement)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (site_id) DO NOTHING",
                sites,
            )
            await connection.executemany(
                "INSERT INTO site_services (site_id, service, places_total, as_of, assumed)"
                " VALUES ($1, $2, $3, $4, true) ON CONFLICT (site_id, service) DO NOTHING",
                capacity,
            )
