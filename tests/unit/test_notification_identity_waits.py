"""Issue #8, notifications: a webhook held for the identity waits without spending its attempts,
the e-mail fallback opens once, and a crash repeats at most the sends that were in flight."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aiguillage_common.codec import encode_event
from aiguillage_schemas.events.notifications import NotificationDeliveryFailed
from notifications.adapters.email import IDENTITY_WAIT_NOTICE, build_message
from notifications.domain.delivery import (
    AttemptResult,
    BackoffPolicy,
    DeliveryJob,
    History,
    IdentityWaitPolicy,
    Reclaimed,
    decide,
    http_result,
)
from notifications.domain.messages import Delivery, fallback_delivery_id
from notifications.use_cases.deliver import Deliverer, Sender
from tests.support.contracts import schema_errors
from tests.unit.fakes import FakeStore
from tests.unit.test_notifications import FakeDeliveryUow, ScriptedSender, _job

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = BackoffPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)
WAIT = IdentityWaitPolicy(
    base_delay_s=30.0, max_delay_s=3600.0, max_wait_s=72 * 3600.0, fallback_after_s=60.0
)
HELD = AttemptResult("held", 4, "identity_unavailable", identity_release="connecterror")


def test_a_held_try_waits_on_its_own_schedule_and_spends_no_attempt() -> None:
    # Two attempts of three already spent on HTTP failures: a held try must not be the third.
    decision = decide(HELD, History(attempts=2), POLICY, NOW, random.Random(1), WAIT)
    assert decision.state == "pending"
    assert decision.held
    assert decision.identity_wait_since == NOW  # the wait starts with its first held try
    assert decision.next_attempt_at is not None
    assert 15 <= (decision.next_attempt_at - NOW).total_seconds() <= 30
    assert decision.fallback is None  # intake a little behind is no reason for an e-mail


def test_the_wait_grows_to_hourly_tries_and_dies_at_the_maximum_wait_with_its_own_reason() -> None:
    since, now, rng = NOW, NOW, random.Random(3)
    delays = []
    waits = 0
    while True:
        history = History(identity_waits=waits, identity_wait_since=since if waits else None)
        decision = decide(HELD, history, POLICY, now, rng, WAIT)
        if decision.state == "dead":
            break
        assert decision.state == "pending"
        assert decision.next_attempt_at is not None
        delays.append((decision.next_attempt_at - now).total_seconds())
        now, waits = decision.next_attempt_at, waits + 1
    assert decision.dead_reason == "identity_wait_expired"
    assert decision.fallback == "dead"  # the e-mail fallback exists (or is opened now)
    assert now == since + timedelta(hours=72)  # the last try lands on the deadline
    assert max(delays) <= 3600
    assert sorted(delays[:6]) == delays[:6]  # growing at first
    assert 70 < len(delays) < 100  # about hourly once capped: not thousands of intake calls


def test_the_fallback_is_asked_for_once_the_wait_is_long_enough_and_never_for_a_fallback() -> None:
    started = NOW - timedelta(seconds=61)
    history = History(identity_waits=2, identity_wait_since=started)
    assert decide(HELD, history, POLICY, NOW, None, WAIT).fallback == "identity_wait"
    early = History(identity_waits=1, identity_wait_since=NOW - timedelta(seconds=59))
    assert decide(HELD, early, POLICY, NOW, None, WAIT).fallback is None
    immediate = replace(WAIT, fallback_after_s=0)
    assert decide(HELD, History(), POLICY, NOW, None, immediate).fallback == "identity_wait"
    fallback = replace(history, is_fallback=True)
    assert decide(HELD, fallback, POLICY, NOW, None, WAIT).fallback is None


def test_an_http_failure_after_identity_waits_counts_only_its_own_attempts() -> None:
    history = History(attempts=0, identity_waits=40, identity_wait_since=NOW - timedelta(hours=9))
    decision = decide(http_result(503, 5), history, POLICY, NOW, None, WAIT)
    assert (decision.state, decision.held) == ("pending", False)
    assert decide(http_result(200, 5), history, POLICY, NOW, None, WAIT).state == "delivered"


@settings(max_examples=200, deadline=None)
@given(
    waits=st.integers(min_value=0, max_value=500),
    waited_s=st.floats(min_value=0, max_value=80 * 3600.0),
    attempts=st.integers(min_value=0, max_value=10),
    base=st.floats(min_value=0.1, max_value=120.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_held_tries_never_die_early_never_wait_past_the_deadline_nor_spend_attempts(
    waits: int, waited_s: float, attempts: int, base: float, seed: int
) -> None:
    policy = replace(WAIT, base_delay_s=base)
    since = NOW - timedelta(seconds=waited_s)
    history = History(attempts, waits, since if waits else None)
    decision = decide(HELD, history, POLICY, NOW, random.Random(seed), policy)
    deadline = (since if waits else NOW) + timedelta(seconds=policy.max_wait_s)
    assert decision.held
    if deadline <= NOW:
        assert (decision.state, decision.dead_reason) == ("dead", "identity_wait_expired")
    else:
        # Many attempts spent, or none: only the wait decides.
        assert decision.state == "pending"
        assert decision.next_attempt_at is not None
        assert NOW < decision.next_attempt_at <= deadline
        assert decision.next_attempt_at - NOW <= timedelta(seconds=policy.max_delay_s)


# The use case, against the in-memory unit of work.


def _deliverer(
    store: FakeStore,
    jobs: list[DeliveryJob],
    senders: dict[str, Sender],
    wait: IdentityWaitPolicy = WAIT,
    concurrency: dict[str, int] | None = None,
) -> Deliverer:
    copy = Delivery(uuid.uuid4(), jobs[0].notification_id if jobs else uuid.uuid4(), "email",
                    "c@x.invalid", 1)  # fmt: skip
    return Deliverer(
        lambda: FakeDeliveryUow(store, jobs, [copy]),
        senders,
        POLICY,
        "dead-letter",
        30.0,
        10,
        lambda: NOW,
        identity_policy=wait,
        concurrency=concurrency if concurrency is not None else {"email": 1, "webhook": 4},
    )


async def test_the_fallback_opens_once_and_a_later_death_names_that_same_fallback() -> None:
    store, job = FakeStore(), _job()
    immediate = replace(WAIT, fallback_after_s=0)
    sender = ScriptedSender(HELD, HELD, http_result(404, 3))
    for done in range(3):
        tried = replace(job, identity_waits=min(done, 2), identity_wait_since=NOW if done else None)
        await _deliverer(store, [tried], {"webhook": sender}, immediate).deliver_due()

    (fallback,) = store.rows("deliveries")  # asked for three times, created once
    assert fallback.delivery_id == fallback_delivery_id(job.delivery_id)
    assert (fallback.channel, fallback.fallback_for) == ("email", job.delivery_id)
    assert fallback.fallback_reason == "identity_wait"
    decisions = [decision for _, _, decision in store.rows("attempts")]
    assert [(d.state, d.held) for d in decisions] == [
        ("pending", True),
        ("pending", True),
        ("dead", False),
    ]
    ((topic, letter),) = store.outbox  # only the death is dead-lettered
    assert topic == "dead-letter"
    assert isinstance(letter, NotificationDeliveryFailed)
    assert letter.data.fallback_delivery_id == fallback.delivery_id
    assert letter.data.attempts == 3  # every try, held ones included


async def test_the_end_of_the_wait_is_dead_lettered_with_a_clear_error_class() -> None:
    store = FakeStore()
    expired = replace(
        _job(), identity_waits=80, identity_wait_since=NOW - timedelta(hours=72, seconds=1)
    )
    await _deliverer(store, [expired], {"webhook": ScriptedSender(HELD)}).deliver_due()
    ((_, letter),) = store.outbox
    assert isinstance(letter, NotificationDeliveryFailed)
    # The v1 contract knows two reasons; the error class says which wait ran out.
    assert (letter.data.reason, letter.data.error_class) == (
        "retries_exhausted",
        "identity_wait_expired",
    )
    (fallback,) = store.rows("deliveries")
    assert fallback.fallback_reason == "dead"


async def test_the_dead_letter_of_an_expired_wait_is_valid_for_the_published_schema() -> None:
    # What a consumer of notifications.dead-letter checks against schemas/json: the reason the
    # service gives itself (identity_wait_expired) must not reach a field whose enum lacks it.
    store = FakeStore()
    expired = replace(_job(), identity_waits=3, identity_wait_since=NOW - timedelta(hours=73))
    await _deliverer(store, [expired], {"webhook": ScriptedSender(HELD)}).deliver_due()
    ((_, letter),) = store.outbox
    assert isinstance(letter, NotificationDeliveryFailed)
    assert letter.data.error_class == "identity_wait_expired"
    assert schema_errors(letter.schema_name(), encode_event(letter)) == []


async def test_nothing_is_sent_when_the_lease_was_lost_while_waiting_for_a_turn() -> None:
    store, job, sender = FakeStore(), _job(), ScriptedSender(http_result(200, 1))
    store.tables["lost_leases"] = [job.delivery_id]
    await _deliverer(store, [job], {"webhook": sender}).deliver_due()
    assert sender.sent == []
    assert store.rows("attempts") == []


class SlowSender:
    """Counts how many sends are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.sent = 0

    async def send(self, job: DeliveryJob) -> AttemptResult:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.sent += 1
        return AttemptResult("delivered", 10, smtp_code=250)


async def test_emails_go_one_at_a_time_and_each_is_started_before_it_is_sent() -> None:
    store, mails, hooks = FakeStore(), SlowSender(), SlowSender()
    jobs = [_job("email") for _ in range(6)] + [_job("webhook") for _ in range(6)]
    expected = sorted(j.delivery_id for j in jobs)
    deliverer = _deliverer(store, jobs, {"email": mails, "webhook": hooks})
    assert await deliverer.deliver_due() == 12
    assert (mails.sent, mails.most) == (6, 1)
    assert (hooks.sent, hooks.most) == (6, 4)
    assert sorted(store.rows("started")) == expected


async def test_reclaim_reports_what_dead_workers_left_in_flight() -> None:
    store = FakeStore()
    store.tables["reclaimable"] = [
        Reclaimed(uuid.uuid4(), "ref-1", uuid.uuid4(), "centre", "ARA-LYON", "email", 2),
        Reclaimed(uuid.uuid4(), "ref-2", uuid.uuid4(), "centre", "ARA-LYON", "webhook", None),
    ]
    assert await _deliverer(store, [], {}).reclaim() == 2


def test_the_identity_wait_fallback_says_the_identity_follows_not_that_the_system_failed() -> None:
    job = replace(_job("email", fallback_for=uuid.uuid4()), fallback_reason="identity_wait")
    message = build_message(job, "a@b.invalid", "b.invalid")
    assert message["Subject"].startswith("[Identité à suivre]")
    body = message.get_body(("plain",))
    assert body is not None
    assert IDENTITY_WAIT_NOTICE in body.get_content()
    assert "n'a pas pu être joint" not in body.get_content()


def test_intake_a_little_behind_is_asked_again_within_a_second_then_less_and_less_often() -> None:
    # 409: intake has not read the offer from referrals.routed yet; it usually catches up in well
    # under a second, so the first tries come at 25-50 ms, 50-100 ms, 0.1-0.2 s...
    lagging = AttemptResult("held", 3, "identity_unavailable", identity_release="http_409")
    rng = random.Random(5)
    delays = []
    for waits in range(12):
        history = History(identity_waits=waits, identity_wait_since=NOW if waits else None)
        decision = decide(lagging, history, POLICY, NOW, rng, IdentityWaitPolicy())
        assert decision.state == "pending"
        assert decision.held
        assert decision.next_attempt_at is not None
        delays.append((decision.next_attempt_at - NOW).total_seconds())
    assert 0.025 <= delays[0] <= 0.05
    assert 0.05 <= delays[1] <= 0.1
    assert sum(delays[:3]) < 0.5
    ceilings = [0.05 * 2**n for n in range(12)]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))


def test_intake_unreachable_keeps_the_slow_identity_schedule() -> None:
    for release in ("http_503", "connecterror", "timeout"):
        held = AttemptResult("held", 3, "identity_unavailable", identity_release=release)
        decision = decide(held, History(), POLICY, NOW, random.Random(2), IdentityWaitPolicy())
        assert decision.next_attempt_at is not None
        assert 2.5 <= (decision.next_attempt_at - NOW).total_seconds() <= 5.0
