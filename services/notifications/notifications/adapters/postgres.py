"""PostgreSQL side of notifications: notifications, deliveries, attempts and reminder timers.

Statements are few and wide: what one unit of work records (notifications, their deliveries, the
Kafka deliveries' 'queued' attempts and the outbox rows) is written in one multi-row statement
when it closes, and the delivery worker records the outcomes of its sends and starts its next
ones in one statement per round (``settle``), on its own connection.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import asyncpg

from aiguillage_common.codec import encode_event
from aiguillage_common.kafka import event_headers
from aiguillage_common.unit_of_work import PostgresUnitOfWork
from aiguillage_schemas.envelope import Envelope
from notifications.domain.delivery import (
    AttemptResult,
    Decision,
    DeliveryJob,
    Reclaimed,
    Settled,
)
from notifications.domain.messages import (
    Delivery,
    DigestEntry,
    Notification,
    Reminder,
    delivery_id,
)
from notifications.domain.templates import Rendered

# A digest: its notification (texts set once its entries are known), its one e-mail delivery due
# when the window ends, and the digest row that entries find it by.
_OPEN_DIGEST = """
WITH n AS (
    INSERT INTO notifications (notification_id, referral_id, recipient_kind, recipient_id, topic,
        title, body, caused_by_event_id, correlation_id)
    VALUES ($1, 'unknown', $2, $3, $9, '', '', $4, $5)
    RETURNING notification_id
), d AS (
    INSERT INTO deliveries (delivery_id, notification_id, channel, target, position, state,
        next_attempt_at)
    SELECT $6, notification_id, 'email', $7, 0, 'pending', $8 FROM n
    RETURNING delivery_id, notification_id
)
INSERT INTO digests (notification_id, delivery_id, recipient_kind, recipient_id, address)
SELECT d.notification_id, d.delivery_id, $2, $3, $7 FROM d
"""

# Due deliveries, in decision order per (referral, recipient, channel): one waits while a delivery
# of an earlier notification to the same recipient on the same channel is still pending, so that
# a centre never receives the cancellation of an offer before the offer itself (head-of-line
# blocking, per referral only). Notification time, not delivery time: a fallback created later
# still belongs to its earlier decision.
_LEASE_DUE = """
WITH due AS (
    SELECT d.delivery_id FROM deliveries d
    JOIN notifications n ON n.notification_id = d.notification_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= clock_timestamp()
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          JOIN notifications en ON en.notification_id = e.notification_id
          WHERE en.referral_id = n.referral_id
            AND en.recipient_kind = n.recipient_kind
            AND en.recipient_id = n.recipient_id
            AND e.channel = d.channel
            AND e.state = 'pending'
            AND en.created_at < n.created_at
      )
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET next_attempt_at = clock_timestamp() + make_interval(secs => $2), leased_by = $3
FROM due, notifications n
WHERE d.delivery_id = due.delivery_id AND n.notification_id = d.notification_id
RETURNING d.delivery_id, d.notification_id, n.referral_id, n.correlation_id, n.recipient_kind,
    n.recipient_id, d.channel, d.target, d.position, d.fallback_for,
    (SELECT f.channel FROM deliveries f WHERE f.delivery_id = d.fallback_for)
        AS fallback_from_channel,
    d.attempts, n.topic, n.site_id, n.title, n.body, n.email_text, n.email_html, n.facts,
    n.caused_by_event_id, d.identity_waits, d.identity_wait_since, d.fallback_reason
"""

# The pending deliveries leased by workers found dead are due at once; their attempts left
# 'started' (sent or not, nobody knows) are recorded as 'interrupted'.
_RECLAIM = """
WITH reclaimed AS (
    UPDATE deliveries d SET next_attempt_at = clock_timestamp(), leased_by = NULL
    WHERE d.state = 'pending' AND d.leased_by = ANY($1::uuid[])
    RETURNING d.delivery_id, d.notification_id, d.channel
), interrupted AS (
    UPDATE delivery_attempts a SET outcome = 'interrupted'
    FROM reclaimed r
    WHERE a.delivery_id = r.delivery_id AND a.outcome = 'started'
    RETURNING a.delivery_id, a.attempt
)
SELECT r.delivery_id, n.referral_id, n.correlation_id, n.recipient_kind, n.recipient_id,
    r.channel, i.attempt
FROM reclaimed r
JOIN notifications n ON n.notification_id = r.notification_id
LEFT JOIN interrupted i ON i.delivery_id = r.delivery_id
"""

# One round of the delivery worker, in one statement (so one commit): the attempts whose outcome
# is known become that outcome and their deliveries take their new state; the deliveries about to
# be sent have their lease renewed from now, if it is still this worker's (one that expired while
# the job waited for its turn may be another worker's now, and then nothing may be sent), a
# 'started' row left by a worker whose lease expired before anyone reconciled it becomes
# 'interrupted', and an attempt row 'started' is committed. The attempt row becomes the outcome by
# id: even if a takeover marked it interrupted, what really happened is known now and is what the
# log should say. A delivery is never both settled and started in one round.
# "(state = 'pending') IS TRUE" says "state = 'pending'" in a form the planner cannot match with
# the partial index deliveries_due: its generic plan, made once on the worker's connection, must
# find each delivery by key, never walk every pending one (DeliveryWorker._take_presence).
_SETTLE = """
WITH fin AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::int[],
        $7::int[], $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::timestamptz[],
        $13::bool[])
        AS f(attempt_id, delivery_id, outcome, latency_ms, error_class, http_status, smtp_code,
             identity_release, state, next_attempt_at, last_error, identity_wait_since, held)
), attempted AS (
    UPDATE delivery_attempts a SET outcome = f.outcome, latency_ms = f.latency_ms,
        error_class = f.error_class, http_status = f.http_status, smtp_code = f.smtp_code,
        identity_release = f.identity_release
    FROM fin f WHERE a.id = f.attempt_id
), settled AS (
    UPDATE deliveries d SET attempts = d.attempts + CASE WHEN f.held THEN 0 ELSE 1 END,
        identity_waits = d.identity_waits + CASE WHEN f.held THEN 1 ELSE 0 END,
        identity_wait_since = COALESCE(d.identity_wait_since, f.identity_wait_since),
        state = f.state, next_attempt_at = f.next_attempt_at, last_error = f.last_error,
        leased_by = NULL,
        finished_at = CASE WHEN f.state = 'pending' THEN NULL ELSE clock_timestamp() END
    FROM fin f WHERE d.delivery_id = f.delivery_id AND (d.state = 'pending') IS TRUE
), renewed AS (
    UPDATE deliveries d SET next_attempt_at = clock_timestamp() + make_interval(secs => $16)
    FROM unnest($14::uuid[], $15::int[]) AS s(delivery_id, attempt)
    WHERE d.delivery_id = s.delivery_id AND (d.state = 'pending') IS TRUE AND d.leased_by = $17
    RETURNING d.delivery_id, s.attempt
), stale AS (
    UPDATE delivery_attempts a SET outcome = 'interrupted'
    FROM renewed r WHERE a.delivery_id = r.delivery_id AND a.outcome = 'started'
)
INSERT INTO delivery_attempts (delivery_id, attempt, outcome, latency_ms)
SELECT delivery_id, attempt, 'started', 0 FROM renewed
RETURNING delivery_id, id
"""

# The plan shapes the delivery worker's own connection allows: key lookups and ordered index
# walks only, right at any table size (why: DeliveryWorker._take_presence).
WORKER_PLANNER_SETTINGS = (
    "SET enable_seqscan = off; SET enable_bitmapscan = off;"
    " SET enable_hashjoin = off; SET enable_mergejoin = off"
)

# Every delivery worker holds a session-level advisory lock (PRESENCE_LOCK_CLASS, its key) for as
# long as it runs: PostgreSQL releases it when the worker's connection goes, kill -9 included, so
# a worker that can take the lock of a lease holder knows that holder is dead. Two int4 keys: a
# key space apart from the one-bigint locks of migrations and the outbox relay.
PRESENCE_LOCK_CLASS = 0x4E544652  # "NTFR"


def presence_key(worker_id: uuid.UUID) -> int:
    return int.from_bytes(worker_id.bytes[:4], "big", signed=True)


_DUE_REMINDERS = """
UPDATE reminders r SET state = 'fired', settled_at = clock_timestamp()
FROM (
    SELECT reminder_id FROM reminders
    WHERE state = 'pending' AND fire_at <= clock_timestamp()
    ORDER BY fire_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE r.reminder_id = due.reminder_id
RETURNING r.reminder_id, r.referral_id, r.correlation_id, r.centre_id, r.centre_name, r.site_id,
    r.answer_by, r.fire_at
"""


# What a unit of work records, written when it closes: notifications (with their deliveries and
# the Kafka deliveries' 'queued' attempts), reminders and outbox rows, each part only when it has
# rows (an empty INSERT would still fire the statement-level NOTIFY triggers). Parameters are
# numbered within each part and renumbered when the parts present are put together.
_RECORD_NOTIFICATIONS = """
recorded AS (
    INSERT INTO notifications (notification_id, referral_id, recipient_kind, recipient_id, topic,
        site_id, title, body, caused_by_event_id, correlation_id, email_text, email_html, facts)
    SELECT n.notification_id, n.referral_id, n.recipient_kind, n.recipient_id, n.topic, n.site_id,
        n.title, n.body, n.caused_by_event_id, n.correlation_id, n.email_text, n.email_html,
        n.facts::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::text[], $13::text[])
        AS n(notification_id, referral_id, recipient_kind, recipient_id, topic, site_id, title,
             body, caused_by_event_id, correlation_id, email_text, email_html, facts)
)"""
# Kafka deliveries ride on the outbox row written in this same transaction: they are as durable
# as the notification itself, so they are recorded as handed over at once.
_RECORD_DELIVERIES = """
planned AS (
    INSERT INTO deliveries (delivery_id, notification_id, channel, target, position, state,
        attempts, next_attempt_at, finished_at)
    SELECT p.delivery_id, p.notification_id, p.channel, p.target, p.position,
        CASE WHEN p.channel = 'kafka' THEN 'delivered' ELSE 'pending' END,
        CASE WHEN p.channel = 'kafka' THEN 1 ELSE 0 END,
        CASE WHEN p.channel = 'kafka' THEN NULL ELSE clock_timestamp() END,
        CASE WHEN p.channel = 'kafka' THEN clock_timestamp() END
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[])
        AS p(delivery_id, notification_id, channel, target, position)
    RETURNING delivery_id, channel
), queued AS (
    INSERT INTO delivery_attempts (delivery_id, attempt, outcome, latency_ms)
    SELECT delivery_id, 1, 'queued', 0 FROM planned WHERE channel = 'kafka'
)"""
# Cancelled first, then scheduled: a cancellation asked for before a reminder was scheduled in
# the same unit of work does not reach it (one statement sees the table as it was).
_CANCEL_REMINDERS = """
cancelled AS (
    UPDATE reminders SET state = 'cancelled', settled_at = clock_timestamp()
    WHERE referral_id = ANY($1::text[]) AND state = 'pending'
)"""
_SCHEDULE_REMINDERS = """
scheduled AS (
    INSERT INTO reminders (reminder_id, referral_id, correlation_id, centre_id, centre_name,
        site_id, answer_by, fire_at, state, settled_at)
    SELECT r.reminder_id, r.referral_id, r.correlation_id, r.centre_id, r.centre_name, r.site_id,
        r.answer_by, r.fire_at, CASE WHEN r.cancelled THEN 'cancelled' ELSE 'pending' END,
        CASE WHEN r.cancelled THEN clock_timestamp() END
    FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[],
        $7::timestamptz[], $8::timestamptz[], $9::bool[])
        AS r(reminder_id, referral_id, correlation_id, centre_id, centre_name, site_id,
             answer_by, fire_at, cancelled)
    ON CONFLICT (reminder_id) DO NOTHING
)"""
_RECORD_OUTBOX = """
emitted AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload)
    SELECT o.event_id, o.topic, o.key, o.headers::jsonb, o.payload
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
        AS o(event_id, topic, key, headers, payload)
    ON CONFLICT (event_id) DO NOTHING
)"""
_PARAMETER = re.compile(r"\$(\d+)")


@functools.cache
def _record_sql(parts: tuple[str, ...]) -> str:
    numbered: list[str] = []
    offset = 0
    for part in parts:
        used = max(int(n) for n in _PARAMETER.findall(part))

        def shifted(match: re.Match[str], by: int = offset) -> str:
            return f"${int(match.group(1)) + by}"

        numbered.append(_PARAMETER.sub(shifted, part))
        offset += used
    return "WITH" + ",".join(numbered) + "\nSELECT 1"


@dataclass(slots=True)
class _Recorded:
    """Rows waiting for the unit of work to close, as the columns of one multi-row INSERT each."""

    notifications: list[list[Any]]
    deliveries: list[list[Any]]
    outbox: list[list[Any]]
    cancel_reminders: list[list[Any]]
    reminders: list[list[Any]]
    notification_ids: set[uuid.UUID]

    @classmethod
    def empty(cls) -> _Recorded:
        def columns(width: int) -> list[list[Any]]:
            return [[] for _ in range(width)]

        return cls(columns(13), columns(5), columns(5), columns(1), columns(9), set())

    def parts(self) -> list[tuple[str, list[list[Any]]]]:
        """Each part of the statement that has rows, with its columns."""
        return [
            (sql, columns)
            for sql, columns in (
                (_RECORD_NOTIFICATIONS, self.notifications),
                (_RECORD_DELIVERIES, self.deliveries),
                (_CANCEL_REMINDERS, self.cancel_reminders),
                (_SCHEDULE_REMINDERS, self.reminders),
                (_RECORD_OUTBOX, self.outbox),
            )
            if columns[0]
        ]


async def _write_recorded(
    recorded: _Recorded, connection: asyncpg.pool.PoolConnectionProxy
) -> None:
    parts = recorded.parts()
    if parts:
        statement = _record_sql(tuple(sql for sql, _ in parts))
        await connection.execute(statement, *(c for _, columns in parts for c in columns))


def _append(columns: list[list[Any]], *values: Any) -> None:
    for column, value in zip(columns, values, strict=True):
        column.append(value)


class _DeliveryStatements:
    """The delivery worker's statements, on whichever connection the subclass holds."""

    @property
    def connection(self) -> asyncpg.pool.PoolConnectionProxy:
        raise NotImplementedError

    async def lease_due(
        self, limit: int, lease_s: float, worker_id: uuid.UUID
    ) -> list[DeliveryJob]:
        rows = await self.connection.fetch(_LEASE_DUE, limit, lease_s, worker_id)
        return [_job(row) for row in rows]

    async def settle(
        self,
        finished: Sequence[Settled],
        starting: Sequence[DeliveryJob],
        worker_id: uuid.UUID,
        lease_s: float,
    ) -> Mapping[uuid.UUID, int]:
        if not finished and not starting:
            return {}
        columns: list[list[Any]] = [[] for _ in range(13)]
        for item in finished:
            result, decision = item.result, item.decision
            _append(
                columns,
                item.attempt_id,
                item.job.delivery_id,
                result.outcome,
                result.latency_ms,
                result.error_class,
                result.http_status,
                result.smtp_code,
                result.identity_release,
                decision.state,
                decision.next_attempt_at,
                item.last_error,
                decision.identity_wait_since,
                decision.held,
            )
        rows = await self.connection.fetch(
            _SETTLE,
            *columns,
            [job.delivery_id for job in starting],
            [job.attempts + 1 for job in starting],
            lease_s,
            worker_id,
        )
        return {row["delivery_id"]: row["id"] for row in rows}

    async def start_attempt(
        self, job: DeliveryJob, worker_id: uuid.UUID, lease_s: float
    ) -> int | None:
        return (await self.settle((), (job,), worker_id, lease_s)).get(job.delivery_id)

    async def record_attempt(
        self, job: DeliveryJob, attempt_id: int, result: AttemptResult, decision: Decision
    ) -> None:
        # No start in this round: the worker id and the lease are not used.
        await self.settle((Settled(job, attempt_id, result, decision),), (), uuid.UUID(int=0), 0)


def _job(row: asyncpg.Record) -> DeliveryJob:
    return DeliveryJob(
        delivery_id=row["delivery_id"],
        notification_id=row["notification_id"],
        referral_id=row["referral_id"],
        correlation_id=row["correlation_id"],
        recipient_kind=row["recipient_kind"],
        recipient_id=row["recipient_id"],
        channel=row["channel"],
        target=row["target"],
        position=row["position"],
        fallback_for=row["fallback_for"],
        fallback_from_channel=row["fallback_from_channel"],
        attempts=row["attempts"],
        topic=row["topic"],
        site_id=row["site_id"],
        title=row["title"],
        body=row["body"],
        email_text=row["email_text"],
        email_html=row["email_html"],
        facts=json.loads(row["facts"]),
        caused_by_event_id=row["caused_by_event_id"],
        identity_waits=row["identity_waits"],
        identity_wait_since=row["identity_wait_since"],
        fallback_reason=row["fallback_reason"],
    )


class PostgresNotificationsUnitOfWork(PostgresUnitOfWork, _DeliveryStatements):
    """One transaction. What it records (notifications, their planned deliveries, reminders set
    and cancelled, outbox rows) is written when it closes, in one statement, before the commit:
    nothing in a unit of work reads those rows back, and the transaction makes the deferral
    invisible to anyone else."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._recorded = _Recorded.empty()

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        batch = self._batch
        if batch is not None:
            # Inside a consumer's batch: the rows of every event of the batch go into one
            # statement, written when the batch ends, before its commit.
            recorded = batch.extensions.get(_Recorded)
            if recorded is None:
                recorded = batch.extensions[_Recorded] = _Recorded.empty()
                batch.flushes[_Recorded] = functools.partial(_write_recorded, recorded)
            self._recorded = recorded
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        recorded, self._recorded = self._recorded, _Recorded.empty()
        if self._batch is not None:
            await super().__aexit__(exc_type, exc, traceback)  # the batch writes them
            return
        if exc_type is None and recorded.parts():
            try:
                await _write_recorded(recorded, self.connection)
            except BaseException as error:
                await super().__aexit__(type(error), error, error.__traceback__)
                raise
        await super().__aexit__(exc_type, exc, traceback)

    async def record(
        self, notification: Notification, cause_id: uuid.UUID, correlation_id: uuid.UUID
    ) -> None:
        _append(
            self._recorded.notifications,
            notification.notification_id,
            notification.referral_id,
            notification.recipient_kind,
            notification.recipient_id,
            notification.topic,
            notification.site_id,
            notification.title,
            notification.body,
            cause_id,
            correlation_id,
            notification.email_text,
            notification.email_html,
            json.dumps(dict(notification.facts)),
        )
        self._recorded.notification_ids.add(notification.notification_id)

    async def emit(self, topic: str, event: Envelope) -> None:
        # As the base class writes it (deterministic ids: a re-emission is a no-op), later.
        _append(
            self._recorded.outbox,
            event.event_id,
            topic,
            event.subject,
            json.dumps(event_headers(event)),
            encode_event(event),
        )

    async def add_delivery(self, delivery: Delivery) -> bool:
        if delivery.notification_id in self._recorded.notification_ids and (
            delivery.fallback_for is None
        ):
            # Planned with a notification recorded in this unit of work: new like it (the
            # notification's INSERT fails on a known id, and delivery ids derive from it).
            _append(
                self._recorded.deliveries,
                delivery.delivery_id,
                delivery.notification_id,
                delivery.channel,
                delivery.target,
                delivery.position,
            )
            return True
        # A fallback (or a delivery of an earlier notification): maybe known already.
        queued = delivery.channel == "kafka"
        inserted = await self.connection.fetchval(
            "INSERT INTO deliveries (delivery_id, notification_id, channel, target, position,"
            " fallback_for, fallback_reason, state, attempts, next_attempt_at, finished_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            "  CASE WHEN $8 = 'pending' THEN clock_timestamp() END,"
            "  CASE WHEN $8 = 'pending' THEN NULL ELSE clock_timestamp() END)"
            " ON CONFLICT (delivery_id) DO NOTHING RETURNING true",
            delivery.delivery_id,
            delivery.notification_id,
            delivery.channel,
            delivery.target,
            delivery.position,
            delivery.fallback_for,
            delivery.fallback_reason,
            "delivered" if queued else "pending",
            1 if queued else 0,
        )
        if inserted and queued:
            await self.connection.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, latency_ms)"
                " VALUES ($1, 1, 'queued', 0)",
                delivery.delivery_id,
            )
        return bool(inserted)

    async def add_to_digest(
        self, entry: DigestEntry, cause_id: uuid.UUID, correlation_id: uuid.UUID, send_at: datetime
    ) -> uuid.UUID:
        # Written at once, not when the unit of work closes: the next entry reads it back. The
        # open digest's delivery row is locked until the commit, so the worker (SKIP LOCKED)
        # cannot start its e-mail while an entry is joining it; one it has started (leased or
        # attempted) is closed for good, and the entry opens a new digest.
        digest_id: uuid.UUID | None = await self.connection.fetchval(
            "SELECT g.notification_id FROM digests g JOIN deliveries d USING (delivery_id)"
            " JOIN notifications n ON n.notification_id = g.notification_id"
            " WHERE g.recipient_kind = $1 AND g.recipient_id = $2 AND g.address = $3"
            "   AND n.topic = $4"
            "   AND d.state = 'pending' AND d.leased_by IS NULL AND d.attempts = 0"
            "   AND NOT EXISTS (SELECT 1 FROM delivery_attempts a"
            "                   WHERE a.delivery_id = d.delivery_id)"
            " ORDER BY g.opened_at DESC LIMIT 1 FOR UPDATE OF d",
            entry.recipient_kind,
            entry.recipient_id,
            entry.address,
            entry.topic,
        )
        if digest_id is None:
            digest_id = uuid.uuid4()
            email = delivery_id(digest_id, "email", 0)
            await self.connection.execute(
                _OPEN_DIGEST,
                digest_id,
                entry.recipient_kind,
                entry.recipient_id,
                cause_id,
                correlation_id,
                email,
                entry.address,
                send_at,
                entry.topic,
            )
        await self.connection.execute(
            "INSERT INTO digest_items (digest_id, position, notification_id, facts)"
            " SELECT $1, coalesce(max(position) + 1, 0), $2, $3::jsonb"
            " FROM digest_items WHERE digest_id = $1"
            " ON CONFLICT (digest_id, notification_id) DO NOTHING",
            digest_id,
            entry.notification_id,
            json.dumps(dict(entry.facts)),
        )
        return digest_id

    async def digest_items(self, digest_id: uuid.UUID) -> list[dict[str, str]]:
        rows = await self.connection.fetch(
            "SELECT facts FROM digest_items WHERE digest_id = $1 ORDER BY position", digest_id
        )
        return [json.loads(row["facts"]) for row in rows]

    async def set_digest_email(self, digest_id: uuid.UUID, rendered: Rendered) -> None:
        await self.connection.execute(
            "UPDATE notifications SET title = $2, body = $3, email_text = $4, email_html = $5"
            " WHERE notification_id = $1",
            digest_id,
            rendered.subject,
            rendered.text,
            rendered.email_text,
            rendered.email_html,
        )

    async def cancel_reminders(self, referral_id: str) -> None:
        # A reminder scheduled earlier in this unit of work (or batch) and not written yet is
        # written as cancelled, as if it had been written and then cancelled (one statement does
        # not see the rows it inserts, so the UPDATE below would not reach it).
        reminders = self._recorded.reminders
        for index in range(len(reminders[0])):
            if reminders[1][index] == referral_id:
                reminders[8][index] = True
        self._recorded.cancel_reminders[0].append(referral_id)

    async def schedule_reminder(self, reminder: Reminder) -> None:
        _append(
            self._recorded.reminders,
            reminder.reminder_id,
            reminder.referral_id,
            reminder.correlation_id,
            reminder.centre_id,
            reminder.centre_name,
            reminder.site_id,
            reminder.answer_by,
            reminder.fire_at,
            False,  # cancelled before it is written (cancel_reminders)
        )

    async def reclaim_from_dead_workers(self, worker_id: uuid.UUID) -> list[Reclaimed]:
        owners = await self.connection.fetch(
            "SELECT DISTINCT leased_by FROM deliveries"
            " WHERE state = 'pending' AND leased_by IS NOT NULL AND leased_by <> $1",
            worker_id,
        )
        dead: list[uuid.UUID] = []
        for row in owners:
            owner: uuid.UUID = row["leased_by"]
            # Taken only when its holder's session is gone; held until this transaction ends,
            # released then (a transaction-level lock never outlives the reconciliation).
            if await self.connection.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, $2)",
                PRESENCE_LOCK_CLASS,
                presence_key(owner),
            ):
                dead.append(owner)
        if not dead:
            return []
        rows = await self.connection.fetch(_RECLAIM, dead)
        return [
            Reclaimed(
                delivery_id=row["delivery_id"],
                referral_id=row["referral_id"],
                correlation_id=row["correlation_id"],
                recipient_kind=row["recipient_kind"],
                recipient_id=row["recipient_id"],
                channel=row["channel"],
                interrupted_attempt=row["attempt"],
            )
            for row in rows
        ]

    async def next_channel(self, job: DeliveryJob) -> Delivery | None:
        row = await self.connection.fetchrow(
            "SELECT channel, target, position FROM deliveries"
            " WHERE notification_id = $1 AND position > $2 AND fallback_for IS NULL"
            " AND channel <> 'kafka' ORDER BY position LIMIT 1",
            job.notification_id,
            job.position,
        )
        if row is None:
            return None
        return Delivery(
            uuid.uuid4(), job.notification_id, row["channel"], row["target"], row["position"]
        )

    async def due_reminders(self, limit: int) -> list[Reminder]:
        rows = await self.connection.fetch(_DUE_REMINDERS, limit)
        return [
            Reminder(
                reminder_id=row["reminder_id"],
                referral_id=row["referral_id"],
                correlation_id=row["correlation_id"],
                centre_id=row["centre_id"],
                centre_name=row["centre_name"],
                site_id=row["site_id"],
                answer_by=row["answer_by"],
                fire_at=row["fire_at"],
            )
            for row in rows
        ]


class WorkerConnection:
    """The delivery worker's own connection, held for as long as the worker runs: it holds the
    worker's presence lock, listens for new deliveries, and carries the worker's leases and
    rounds (``PostgresDeliverySession``), so that these cost no pool round trip. None while the
    worker is not connected."""

    def __init__(self) -> None:
        self.connection: asyncpg.pool.PoolConnectionProxy | None = None


class PostgresDeliverySession(_DeliveryStatements):
    """The delivery worker's leases and rounds on its own connection. Each is one statement,
    committed on its own: there is no transaction to open or close."""

    def __init__(self, own: WorkerConnection) -> None:
        self._own = own

    @property
    def connection(self) -> asyncpg.pool.PoolConnectionProxy:
        if self._own.connection is None:
            raise asyncpg.InterfaceError("the delivery worker is not connected to PostgreSQL")
        return self._own.connection

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


# -- the delivery log (``aiguillage deliveries``, ``aiguillage timeline``) ----------------------
# Every attempt of one referral's deliveries, oldest first: recipient, channel, outcome, latency,
# what the peer and intake answered. Never a message's content.
_DELIVERY_ATTEMPTS = """
SELECT a.attempted_at, n.recipient_kind, n.recipient_id, n.topic, d.channel, d.delivery_id,
       d.fallback_for IS NOT NULL AS fallback, a.attempt, a.outcome, a.latency_ms,
       a.error_class, a.http_status, a.smtp_code, a.identity_release, d.state
FROM notifications n
JOIN deliveries d ON d.notification_id = n.notification_id
JOIN delivery_attempts a ON a.delivery_id = d.delivery_id
WHERE n.referral_id = $1
ORDER BY a.attempted_at, a.id
"""
# Every delivery still pending, with when it is tried next: not attempted yet, retrying, or held
# for the identity (how many tries, since when).
_PENDING_DELIVERIES = """
SELECT n.recipient_kind, n.recipient_id, n.topic, d.channel, d.state, d.next_attempt_at,
       d.fallback_for IS NOT NULL AS fallback, d.attempts, d.identity_waits,
       d.identity_wait_since
FROM notifications n JOIN deliveries d ON d.notification_id = n.notification_id
WHERE n.referral_id = $1 AND d.state = 'pending'
ORDER BY d.next_attempt_at, d.created_at
"""


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    attempts: list[asyncpg.Record]
    pending: list[asyncpg.Record]


async def read_delivery_log(
    connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, referral_id: str
) -> DeliveryLog:
    return DeliveryLog(
        await connection.fetch(_DELIVERY_ATTEMPTS, referral_id),
        await connection.fetch(_PENDING_DELIVERIES, referral_id),
    )
