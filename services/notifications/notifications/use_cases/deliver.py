"""Use case: deliver due notifications on their channels, record every attempt, and give up cleanly.

A batch of due deliveries is leased (their next attempt is pushed past the send timeout, and the
lease names this worker) in one statement, into a queue per channel. Each channel has a few lanes
(its concurrency; the service's settings say how many), each sending its channel's jobs one after
the other; a lane that finds its queue empty leases the next batch, and NOTIFY of new deliveries
leases them too, so no lane waits for another's slow send to end. Right before a
send, a round renews the job's lease and commits an attempt row 'started'; the send happens
outside any transaction; the next round turns the row into the outcome and records the new state,
and starts the lane's next job in the same statement. Rounds that lanes ask for while one is
being written are written together (group commit), so a delivery costs about one statement.
So a crash repeats only the sends in flight at that moment, and they are few: a lane sends its
next job only once the outcome of the previous one is committed (e-mail one at a time by default;
webhooks carry an Idempotency-Key their receivers dedupe on).
When a worker starts, the deliveries leased by workers that are gone (their presence lock in
PostgreSQL is free) are reclaimed: a 'started' attempt becomes 'interrupted' in the delivery log,
and the delivery is due at once, re-sent with the same idempotency key (webhook header, e-mail
Message-ID). A live worker's leases are left alone: the lease and SKIP LOCKED keep each delivery
with one worker at a time.

A webhook held for the person's identity (intake cannot answer) sends nothing and does not spend
an attempt: it waits on the identity schedule, opens the e-mail fallback once the wait is long
enough, and dies only when the maximum wait is over (``notifications.domain.delivery``).
A dead delivery is published on the dead-letter topic (through the outbox, in the same
transaction) and, when it was a primary, hands over to the recipient's next channel.
Reminders are timers in the database: firing one records its notification in the transaction that
marks it fired, so it fires once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from aiguillage_common.logging import get_logger
from aiguillage_common.unit_of_work import UnitOfWork
from aiguillage_schemas.events.notifications import (
    NotificationDeliveryFailed,
    NotificationDeliveryFailedData,
)
from notifications.domain.delivery import (
    AttemptResult,
    BackoffPolicy,
    Decision,
    DeliveryJob,
    IdentityWaitPolicy,
    Reclaimed,
    Settled,
    decide,
)
from notifications.domain.messages import Delivery, Planner, Reminder, fallback_delivery_id
from notifications.use_cases.notify import SOURCE, NotificationsUnitOfWork, record_notifications

log = get_logger("aiguillage.notifications.delivery")

# Sends in flight per channel and worker: what a kill -9 may repeat at most. One e-mail at a time
# (a repeated e-mail reaches a person); a few webhooks (their receivers dedupe on the key).
DEFAULT_CONCURRENCY: Mapping[str, int] = {"email": 1, "webhook": 4}


class Sender(Protocol):
    async def send(self, job: DeliveryJob) -> AttemptResult: ...


class DeliverySession(Protocol):
    """The delivery worker's leases and rounds: either in a unit of work, or one statement each
    on the worker's own connection (committed on its own)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def lease_due(
        self, limit: int, lease_s: float, worker_id: uuid.UUID
    ) -> list[DeliveryJob]: ...

    async def settle(
        self,
        finished: Sequence[Settled],
        starting: Sequence[DeliveryJob],
        worker_id: uuid.UUID,
        lease_s: float,
    ) -> Mapping[uuid.UUID, int]:
        """One round, atomically: record ``finished`` (attempt row -> outcome, delivery -> new
        state) and start ``starting`` (renew the lease if still this worker's, attempt row
        'started'). Returns the started attempts' ids by delivery id; a job missing from it
        lost its lease (then nothing may be sent)."""
        ...


class DeliveryUnitOfWork(NotificationsUnitOfWork, DeliverySession, UnitOfWork, Protocol):
    async def start_attempt(
        self, job: DeliveryJob, worker_id: uuid.UUID, lease_s: float
    ) -> int | None:
        """Renew ``job``'s lease and record its attempt as started; None when the lease is no
        longer this worker's (then nothing may be sent)."""
        ...

    async def record_attempt(
        self, job: DeliveryJob, attempt_id: int, result: AttemptResult, decision: Decision
    ) -> None: ...

    async def next_channel(self, job: DeliveryJob) -> Delivery | None:
        """The recipient's next channel after ``job``'s, other than Kafka, if any."""
        ...

    async def reclaim_from_dead_workers(self, worker_id: uuid.UUID) -> list[Reclaimed]:
        """Pending deliveries leased by workers that are gone: due now, 'started' attempts
        recorded as 'interrupted'."""
        ...

    async def due_reminders(self, limit: int) -> list[Reminder]:
        """Due, pending reminders, locked and marked fired in this transaction."""
        ...


class Deliverer:
    def __init__(
        self,
        uow_factory: Callable[[], DeliveryUnitOfWork],
        senders: Mapping[str, Sender],
        policy: BackoffPolicy,
        dead_letter_topic: str,
        lease_s: float,
        batch_size: int,
        clock: Callable[[], datetime],
        identity_policy: IdentityWaitPolicy | None = None,
        concurrency: Mapping[str, int] = DEFAULT_CONCURRENCY,
        worker_id: uuid.UUID | None = None,
        session_factory: Callable[[], DeliverySession] | None = None,
        on_attempt: Callable[[str, str], None] | None = None,
        run_for_s: float = 1.0,
    ) -> None:
        self._uow_factory = uow_factory
        # Leases and rounds; in production on the worker's own connection (adapters.postgres).
        self._session_factory: Callable[[], DeliverySession] = session_factory or uow_factory
        self._senders = senders
        self._policy = policy
        self._identity_policy = identity_policy or IdentityWaitPolicy()
        self._dead_letter_topic = dead_letter_topic
        self._lease_s = lease_s
        self._batch_size = batch_size
        self._clock = clock
        # Lanes per channel (a channel left out gets one per job leased): _Feed starts no more.
        self._widths = dict(concurrency)
        # Names this worker's leases; its presence lock (adapters.worker) says it is alive.
        self.worker_id = worker_id or uuid.uuid4()
        self._draining = False
        # Told (channel, attempt_outcome(decision)) once each attempt's outcome is recorded.
        self._on_attempt = on_attempt
        # A call of deliver_due leases more for this long at most, so the worker's loop still
        # looks at reminders and at its connection while deliveries keep coming.
        self._run_for_s = run_for_s
        self._feed: _Feed | None = None  # while deliver_due runs

    def drain(self) -> None:
        """Shutting down: sends in flight finish, leased jobs still waiting for their turn are
        not started (the next worker to start reclaims them at once)."""
        self._draining = True

    async def reclaim(self) -> int:
        """At start: take back what dead workers left in flight; returns how many."""
        async with self._uow_factory() as uow:
            reclaimed = await uow.reclaim_from_dead_workers(self.worker_id)
        for item in reclaimed:
            log.warning(
                "delivery.interrupted"
                if item.interrupted_attempt is not None
                else "delivery.lease_reclaimed",
                referral_id=item.referral_id,
                correlation_id=str(item.correlation_id),
                delivery_id=str(item.delivery_id),
                recipient_kind=item.recipient_kind,
                recipient_id=item.recipient_id,
                channel=item.channel,
                attempt=item.interrupted_attempt,
            )
        return len(reclaimed)

    async def deliver_due(self) -> int:
        """Attempt due deliveries until none is left, or for about ``run_for_s``; returns how
        many were leased.

        Lanes do not wait for one another between batches: a lane that finds its channel's
        queue empty leases the next batch (one lease at a time), and lanes are added for the
        channels it brought. With a barrier per batch, the e-mail lanes sat idle while the
        batch's last webhooks went out: in a burst of 2,000 referrals the 12 lanes were busy
        7.6 on average and the deliveries fell behind while the machine had CPU to spare."""
        lock = asyncio.Lock()  # leases and rounds share the worker's connection
        rounds = _Rounds(self._session_factory, self.worker_id, self._lease_s, lock)

        async def lease() -> list[DeliveryJob]:
            async with lock, self._session_factory() as session:
                return await session.lease_due(self._batch_size, self._lease_s, self.worker_id)

        self._feed = feed = _Feed(
            lease,
            self._widths,
            lambda channel, feed: self._lane(channel, feed, rounds),
            until=time.monotonic() + self._run_for_s,
            queued_at_most=self._batch_size,
        )
        try:
            return await feed.run()
        finally:
            self._feed = None
            await rounds.close()

    def due_now(self) -> None:
        """Deliveries were just recorded: the lanes at work lease them without waiting."""
        if self._feed is not None and not self._draining:
            self._feed.poke()

    async def _lane(self, channel: str, feed: _Feed, rounds: _Rounds) -> None:
        # A send counts as in flight until its outcome is committed, since that is what a crash
        # would repeat: the lane's next send waits for the round that records it.
        done: Settled | None = None
        while True:
            # Shutting down: the outcome in hand is recorded, no other job is started.
            job = None if self._draining else await feed.next(channel)
            if done is None and job is None:
                return
            attempt_id = await rounds.settle(done, job)
            if done is not None:
                _log_outcome(done.job, done.result, done.decision, None, False)
                self._attempted(done.job, done.decision)
                done = None
            if job is None:
                return
            if attempt_id is None:
                # Waited so long for its turn that the lease expired and another worker
                # took it.
                log.warning("delivery.lease_lost", **_fields(job))
                continue
            result = await self._send(job)
            decision = decide(
                result,
                job.history,
                self._policy,
                self._clock(),
                identity_policy=self._identity_policy,
            )
            settled = Settled(job, attempt_id, result, decision)
            if decision.fallback is None and decision.state != "dead":
                done = settled  # recorded by the next round, with the next start
            else:
                await self._record_alone(settled)

    async def _record_alone(self, settled: Settled) -> None:
        """An outcome that opens a fallback or a dead letter: its own transaction."""
        job, result, decision = settled.job, settled.result, settled.decision
        fallback, opened = None, False
        async with self._uow_factory() as uow:
            await uow.record_attempt(job, settled.attempt_id, result, decision)
            if decision.fallback is not None:
                following = await uow.next_channel(job)
                if following is not None:
                    # Deterministic id, inserted with ON CONFLICT DO NOTHING: the fallback
                    # opened while the identity was awaited is the one a later death names.
                    fallback = Delivery(
                        fallback_delivery_id(job.delivery_id),
                        job.notification_id,
                        following.channel,
                        following.target,
                        following.position,
                        fallback_for=job.delivery_id,
                        fallback_reason=decision.fallback,
                    )
                    opened = await uow.add_delivery(fallback)
            if decision.state == "dead":
                await uow.emit(
                    self._dead_letter_topic, _dead_letter(job, result, decision, fallback)
                )
        _log_outcome(job, result, decision, fallback, opened)
        self._attempted(job, decision)

    def _attempted(self, job: DeliveryJob, decision: Decision) -> None:
        if self._on_attempt is not None:
            self._on_attempt(job.channel, attempt_outcome(decision))

    async def _send(self, job: DeliveryJob) -> AttemptResult:
        sender = self._senders.get(job.channel)
        if sender is None:
            return AttemptResult("permanent", 0, f"no_sender_{job.channel}")
        try:
            return await sender.send(job)
        except Exception as error:
            # A bug for this delivery (the channels classify every network failure): retrying
            # would fail the same way forever, so it is dead-lettered with the error's type.
            return AttemptResult("permanent", 0, f"internal_{type(error).__name__}")

    async def fire_due_reminders(self, planner: Planner, outbound_topic: str) -> int:
        async with self._uow_factory() as uow:
            reminders = await uow.due_reminders(self._batch_size)
            for reminder in reminders:
                notification = planner.reminder_notification(reminder)
                await record_notifications(
                    uow,
                    (notification,),
                    reminder.reminder_id,
                    reminder.correlation_id,
                    outbound_topic,
                )
        for reminder in reminders:
            log.info(
                "reminder.fired",
                referral_id=reminder.referral_id,
                correlation_id=str(reminder.correlation_id),
                centre_id=reminder.centre_id,
            )
        return len(reminders)


class _Feed:
    """The leased jobs of one ``deliver_due`` waiting per channel, and the lanes working them.

    A lane asks for its channel's next job; an empty queue is refilled by a lease (one at a time:
    the lanes that ask meanwhile wait for it) unless a lease found nothing due, time is up, or
    enough jobs already wait in the other channels' queues (a job waits with its lease running).
    After each lease, lanes are started for the channels it brought, up to each channel's
    width. A lane ends when its channel has nothing left for it; ``run`` ends with the last."""

    def __init__(
        self,
        lease: Callable[[], Awaitable[list[DeliveryJob]]],
        widths: Mapping[str, int],
        lane: Callable[[str, _Feed], Coroutine[Any, Any, None]],
        until: float,
        queued_at_most: int,
    ) -> None:
        self._lease = lease
        self._widths = widths
        self._lane = lane
        self._until = until
        self._queued_at_most = queued_at_most
        self._queues: dict[str, deque[DeliveryJob]] = {}
        self._lanes: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._filling: asyncio.Task[None] | None = None
        self._nothing_due = False
        self._leased = 0

    async def run(self) -> int:
        """Lease, work every lane to its end; the number of jobs leased."""
        failures: list[BaseException] = []
        try:
            await self._fill()
            while self._tasks:  # lanes started while waiting are waited for in turn
                tasks, self._tasks = self._tasks, []
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                failures += [o for o in outcomes if isinstance(o, BaseException)]
        finally:
            for task in self._tasks:
                task.cancel()
        # One lane whose round could not be written (database gone) must not hide the others':
        # they are recorded; its deliveries are due again when their lease expires.
        if failures:
            raise failures[0]
        return self._leased

    def poke(self) -> None:
        """New deliveries were recorded (NOTIFY): lease them now, even if the last lease found
        nothing, rather than when the lanes still working (a slow webhook) have ended."""
        self._nothing_due = False
        if time.monotonic() < self._until and (self._filling is None or self._filling.done()):
            self._tasks.append(asyncio.create_task(self._fill()))

    async def next(self, channel: str) -> DeliveryJob | None:
        """The channel's next leased job, leasing more if none waits; None when there is none."""
        while True:
            queue = self._queues.get(channel)
            if queue:
                return queue.popleft()
            if (
                self._nothing_due
                or time.monotonic() >= self._until
                or sum(map(len, self._queues.values())) >= self._queued_at_most
            ):
                return None
            await self._fill()

    async def _fill(self) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._lease_more())
        await asyncio.shield(self._filling)

    async def _lease_more(self) -> None:
        jobs = await self._lease()
        self._leased += len(jobs)
        self._nothing_due = not jobs
        for job in jobs:
            self._queues.setdefault(job.channel, deque()).append(job)
        for channel, queue in self._queues.items():
            width = self._widths.get(channel) or self._lanes[channel] + len(queue)
            for _ in range(min(len(queue), width - self._lanes[channel])):
                self._lanes[channel] += 1
                self._tasks.append(asyncio.create_task(self._work(channel)))

    async def _work(self, channel: str) -> None:
        try:
            await self._lane(channel, self)
        finally:
            self._lanes[channel] -= 1


class _Rounds:
    """Group commit of the lanes' rounds: those asked for while one is being written go together
    in the next statement. Each lane waits for its own round, so no lane sends before the
    outcome of its previous send is committed."""

    def __init__(
        self,
        session_factory: Callable[[], DeliverySession],
        worker_id: uuid.UUID,
        lease_s: float,
        lock: asyncio.Lock,
    ) -> None:
        self._session_factory = session_factory
        self._lock = lock
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._asked: list[
            tuple[Settled | None, DeliveryJob | None, asyncio.Future[int | None]]
        ] = []
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._write(), name="notifications-delivery-rounds")

    async def settle(self, done: Settled | None, job: DeliveryJob | None) -> int | None:
        """Record ``done`` and start ``job``; the attempt id of ``job``, None if its lease is
        lost."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._asked.append((done, job, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            asked, self._asked = self._asked, []
            try:
                async with self._lock, self._session_factory() as session:
                    started = await session.settle(
                        [done for done, _, _ in asked if done is not None],
                        [job for _, job, _ in asked if job is not None],
                        self._worker_id,
                        self._lease_s,
                    )
            except Exception as error:
                for _, _, future in asked:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, job, future in asked:
                if not future.done():
                    future.set_result(started.get(job.delivery_id) if job is not None else None)


def attempt_outcome(decision: Decision) -> str:
    """An attempt's outcome as the metrics name it: delivered, retry, identity_held (a try held
    back while intake has not released the identity yet) or failed (dead on this channel)."""
    if decision.state == "delivered":
        return "delivered"
    if decision.state == "dead":
        return "failed"
    return "identity_held" if decision.held else "retry"


def _fields(job: DeliveryJob) -> dict[str, Any]:
    return {
        "referral_id": job.referral_id,
        "correlation_id": str(job.correlation_id),
        "delivery_id": str(job.delivery_id),
        "recipient_kind": job.recipient_kind,
        "recipient_id": job.recipient_id,
        "channel": job.channel,
        "attempt": job.attempts + 1,
    }


def _log_outcome(
    job: DeliveryJob,
    result: AttemptResult,
    decision: Decision,
    fallback: Delivery | None,
    opened: bool,
) -> None:
    fields = {
        **_fields(job),
        "latency_ms": result.latency_ms,
        "error_class": result.error_class,
        "identity_release": result.identity_release,
    }
    if decision.held:
        fields["identity_waits"] = job.identity_waits + 1
        fields["identity_wait_since"] = (
            decision.identity_wait_since.isoformat() if decision.identity_wait_since else None
        )
    if decision.state == "delivered":
        log.info("delivery.delivered", **fields)
    elif decision.state == "pending":
        log.warning(
            "delivery.identity_held" if decision.held else "delivery.retry_scheduled",
            next_attempt_at=decision.next_attempt_at.isoformat()
            if decision.next_attempt_at
            else None,
            **fields,
        )
    else:
        # The line an operator alerts on: a recipient was not reached on this channel.
        log.error(
            "delivery.dead_lettered",
            reason=decision.dead_reason,
            fallback_channel=fallback.channel if fallback else None,
            **fields,
        )
    if opened and fallback is not None and decision.fallback == "identity_wait":
        log.warning(
            "delivery.fallback_opened",
            reason="identity_wait",
            fallback_channel=fallback.channel,
            fallback_delivery_id=str(fallback.delivery_id),
            **_fields(job),
        )


def _dead_letter(
    job: DeliveryJob, result: AttemptResult, decision: Decision, fallback: Delivery | None
) -> NotificationDeliveryFailed:
    assert decision.dead_reason is not None
    expired = decision.dead_reason == "identity_wait_expired"
    return NotificationDeliveryFailed(
        event_id=uuid.uuid5(job.delivery_id, "dead-letter"),
        source=SOURCE,
        correlation_id=job.correlation_id,
        subject=job.referral_id,
        data=NotificationDeliveryFailedData(
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            recipient_kind=job.recipient_kind,
            recipient_id=job.recipient_id,
            channel=job.channel,
            # The contract (v1) knows two reasons; the end of the identity wait is "retrying
            # stopped", told apart by its error class until the contract names it.
            reason="retries_exhausted" if expired else decision.dead_reason,
            attempts=job.tries + 1,  # every try, held ones included: the delivery log's rows
            error_class="identity_wait_expired" if expired else result.error_class or "unknown",
            http_status=result.http_status,
            smtp_code=result.smtp_code,
            fallback_delivery_id=fallback.delivery_id if fallback else None,
        ),
    )
