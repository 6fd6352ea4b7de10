"""Issue #11, notifications: the cheaper paths keep their promises.

E-mails rendered straight to bytes read like the ones ``EmailMessage`` built; SMTP sessions are
reused, renewed and replaced without handing a message over twice; the delivery worker's rounds
are written together, yet no lane sends before the outcome of its previous send is recorded.
Real local servers (the demo's SMTP sink, aiohttp) on OS-chosen ports; no Kafka, no PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from aiguillage_demo.peers import SmtpSession, SmtpSink
from notifications.adapters.email import EmailSender, build_message, render_message
from notifications.adapters.http import HttpClient, HttpFailure
from notifications.domain.delivery import AttemptResult, DeliveryJob, Settled
from notifications.use_cases.deliver import Deliverer
from tests.support.waiting import eventually
from tests.unit.fakes import FakeStore
from tests.unit.test_notification_identity_waits import NOW, POLICY
from tests.unit.test_notifications import FakeDeliveryUow, _job

SENDER = "Aiguillage <notifications@aiguillage.demo.invalid>"


def _mail(**changes: Any) -> DeliveryJob:
    job = replace(
        _job("email"),
        target="coordination@ara-lyon.cpca.demo.invalid",
        title="Orientation ref-1 : proposée à votre site — réponse attendue",
        email_text="Bonjour,\n\nUne orientation est proposée à votre site.\n.\nFin = fin\n",
        email_html="<h1>Orientation</h1>\n<p>proposée à votre site</p>",
    )
    return replace(job, **changes)


def test_the_rendered_email_is_seven_bit_and_reads_as_written() -> None:
    job = _mail()
    envelope_from, raw = render_message(job, SENDER, "d.invalid")
    assert envelope_from == "notifications@aiguillage.demo.invalid"
    assert raw.isascii()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    message = build_message(job, SENDER, "d.invalid")
    assert message["Subject"] == job.title
    assert message["Message-ID"] == f"<{job.delivery_id}@d.invalid>"
    assert message["From"] == SENDER
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n") == job.email_text
    assert html.get_content().replace("\r\n", "\n") == job.email_html + "\n"


def test_a_long_subject_is_folded_into_encoded_words_that_decode_to_it() -> None:
    title = "Rappel : l'orientation ref-1 attend votre réponse " * 8
    message = build_message(_mail(title=title), SENDER, "d.invalid")
    assert message["Subject"] == " ".join(title.split())


def test_a_line_break_in_a_header_is_refused_rather_than_sent() -> None:
    with pytest.raises(ValueError, match="line break"):
        render_message(_mail(target="a@b.invalid\r\nBcc: x@y.invalid"), SENDER, "d.invalid")


class CountingSink(SmtpSink):
    """Counts sessions (EHLO) and the names given in them."""

    def __init__(self) -> None:
        super().__init__()
        self.ehlo_names: list[str] = []
        self.greeted_sessions: list[SmtpSession] = []

    def greeted(self, session: SmtpSession, name: str) -> None:
        self.ehlo_names.append(name)
        self.greeted_sessions.append(session)


@pytest.fixture
async def sink() -> AsyncIterator[CountingSink]:
    server = CountingSink()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_one_smtp_session_carries_many_emails_then_is_renewed(sink: CountingSink) -> None:
    sender = EmailSender(
        "127.0.0.1", sink.port, SENDER, "d.invalid", 5.0, local_hostname="worker-1.test",
        max_messages=3,
    )  # fmt: skip
    try:
        results = [await sender.send(_mail(delivery_id=uuid.uuid4())) for _ in range(7)]
    finally:
        await sender.aclose()
    assert {r.outcome for r in results} == {"delivered"}
    assert len(sink.received) == 7
    assert sink.ehlo_names == ["worker-1.test"] * 3  # 3 + 3 + 1 messages


async def test_a_session_the_relay_closed_is_replaced_and_the_email_sent_once(
    sink: CountingSink,
) -> None:
    sender = EmailSender("127.0.0.1", sink.port, SENDER, "d.invalid", 5.0, local_hostname="w")
    try:
        assert (await sender.send(_mail(delivery_id=uuid.uuid4()))).outcome == "delivered"
        sink.drop_sessions()  # the relay's idle timeout

        # Until the kept session has seen its connection go (then the next send must reconnect).
        async def connected() -> list[bool]:
            return [session.smtp.is_connected for session in sender._idle]

        await eventually(
            connected,
            lambda states: not any(states),
            timeout_s=10,
            interval_s=0.01,
            what="the dropped SMTP session seen closed",
        )
        again = _mail(delivery_id=uuid.uuid4())
        assert (await sender.send(again)).outcome == "delivered"
    finally:
        await sender.aclose()
    assert [m.message_id for m in sink.received].count(f"<{again.delivery_id}@d.invalid>") == 1
    assert len(sink.ehlo_names) == 2


async def test_a_refused_recipient_leaves_the_session_usable(sink: CountingSink) -> None:
    sender = EmailSender("127.0.0.1", sink.port, SENDER, "d.invalid", 5.0, local_hostname="w")
    sink.refuse_next = 1
    try:
        refused = await sender.send(_mail(delivery_id=uuid.uuid4()))
        accepted = await sender.send(_mail(delivery_id=uuid.uuid4()))
    finally:
        await sender.aclose()
    assert (refused.outcome, refused.smtp_code) == ("transient", 451)
    assert accepted.outcome == "delivered"
    assert len(sink.ehlo_names) == 1


async def test_an_idle_session_is_closed() -> None:
    sink = CountingSink()
    await sink.start()
    try:
        sender = EmailSender(
            "127.0.0.1", sink.port, SENDER, "d.invalid", 5.0, local_hostname="w",
            idle_timeout_s=0.05,
        )  # fmt: skip
        assert (await sender.send(_mail(delivery_id=uuid.uuid4()))).outcome == "delivered"
        (session,) = sink.greeted_sessions
        # QUIT said, nothing left open on the relay.
        await eventually(lambda: session.is_open, lambda is_open: not is_open, timeout_s=5.0)
        await sender.aclose()
    finally:
        await sink.stop()


async def test_no_relay_is_a_transient_connect_failure() -> None:
    sender = EmailSender("127.0.0.1", 9, SENDER, "d.invalid", 2.0, local_hostname="w")
    result = await sender.send(_mail())
    assert (result.outcome, result.error_class) == ("transient", "connect")


# The HTTP client of webhooks and identity lookups.


async def test_http_connections_are_kept_open_and_failures_are_classified() -> None:
    peers: set[Any] = set()

    async def answer(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        await request.read()
        if request.path == "/slow":
            await asyncio.sleep(1)
        return web.Response(status=201 if request.path == "/ok" else 302, body=b"{}")

    app = web.Application()
    app.router.add_post("/{name}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpClient()
    try:
        for _ in range(5):
            answered = await client.post(f"http://127.0.0.1:{port}/ok", b"{}", {}, 2.0)
            assert answered.status == 201
        assert len(peers) == 1  # one connection for the five requests
        assert (await client.post(f"http://127.0.0.1:{port}/moved", b"", {}, 2.0)).status == 302
        failures = []
        for url, timeout_s in (
            (f"http://127.0.0.1:{port}/slow", 0.1),
            ("http://127.0.0.1:9/x", 2.0),
            ("ftp://127.0.0.1/x", 2.0),
        ):
            with pytest.raises(HttpFailure) as failed:
                await client.post(url, b"", {}, timeout_s)
            failures.append(failed.value.kind)
        assert failures == ["timeout", "connect", "bad_url"]
    finally:
        await client.aclose()
        await runner.cleanup()


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "intake.internal")
    client = HttpClient()
    assert client._proxy("https://hooks.example/centre/1") == "http://proxy.test:3128"
    assert client._proxy("https://intake.internal/identity") is None
    assert client._proxy("http://hooks.example/centre/1") is None  # no HTTP_PROXY
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("NO_PROXY")
    assert HttpClient()._proxy("https://hooks.example/centre/1") is None


# The delivery worker's rounds.


class CountingUow(FakeDeliveryUow):
    rounds: list[tuple[int, int]]

    async def settle(
        self,
        finished: Sequence[Settled],
        starting: Sequence[DeliveryJob],
        worker_id: uuid.UUID,
        lease_s: float,
    ) -> dict[uuid.UUID, int]:
        self.store.tables.setdefault("rounds", []).append((len(finished), len(starting)))
        await asyncio.sleep(0.005)  # a statement takes a while: rounds asked meanwhile wait
        return await super().settle(finished, starting, worker_id, lease_s)


class RecordedBeforeNext:
    """A sender that checks, at each send, that every earlier send of its channel has its
    outcome recorded, except those of the other lanes still in flight."""

    def __init__(self, store: FakeStore, lanes: int) -> None:
        self.store, self.lanes = store, lanes
        self.sent: list[uuid.UUID] = []
        self.unrecorded_at_send: list[int] = []

    async def send(self, job: DeliveryJob) -> AttemptResult:
        recorded = {delivery_id for delivery_id, _, _ in self.store.rows("attempts")}
        self.unrecorded_at_send.append(len([d for d in self.sent if d not in recorded]))
        self.sent.append(job.delivery_id)
        await asyncio.sleep(0.002)
        return AttemptResult("delivered", 2, http_status=200, smtp_code=250)


async def test_rounds_are_written_together_and_no_lane_sends_before_its_last_outcome() -> None:
    store = FakeStore()
    jobs = [_job("email") for _ in range(8)] + [_job("webhook") for _ in range(16)]
    mails, hooks = RecordedBeforeNext(store, 1), RecordedBeforeNext(store, 4)
    deliverer = Deliverer(
        lambda: CountingUow(store, jobs, []),
        {"email": mails, "webhook": hooks},
        POLICY,
        "dead-letter",
        30.0,
        50,
        lambda: NOW,
    )
    assert await deliverer.deliver_due() == 24
    assert len(store.rows("attempts")) == 24
    assert max(mails.unrecorded_at_send) == 0  # one e-mail in flight, ever
    assert max(hooks.unrecorded_at_send) <= 3  # the other three webhook lanes at most
    rounds = store.rows("rounds")
    assert sum(started for _, started in rounds) == 24
    assert sum(finished for finished, _ in rounds) == 24
    assert len(rounds) < 24  # rounds of different lanes went together


class Timed:
    """A sender that takes ``delay_s`` per send and notes when each of its sends ended."""

    def __init__(self, delay_s: float, ended: list[tuple[str, uuid.UUID]]) -> None:
        self.delay_s, self.ended = delay_s, ended

    async def send(self, job: DeliveryJob) -> AttemptResult:
        await asyncio.sleep(self.delay_s)
        self.ended.append((job.channel, job.delivery_id))
        return AttemptResult("delivered", 1, http_status=200, smtp_code=250)


def _timed(
    store: FakeStore, jobs: list[DeliveryJob], senders: dict[str, Timed], batch: int, **options: Any
) -> Deliverer:
    """A deliverer leasing ``batch`` jobs at a time from ``jobs`` (a lease takes them away)."""
    return Deliverer(
        lambda: FakeDeliveryUow(store, jobs, []),
        dict(senders),
        POLICY,
        "dead-letter",
        30.0,
        batch,
        lambda: NOW,
        **options,
    )


async def test_a_slow_webhook_does_not_hold_the_email_lanes_until_the_next_lease() -> None:
    # Leases of 4: the first brings the slow webhook and 3 e-mails, the next ones e-mails only.
    store = FakeStore()
    jobs = [_job("webhook"), *(_job("email") for _ in range(11))]
    ended: list[tuple[str, uuid.UUID]] = []
    senders = {"email": Timed(0.001, ended), "webhook": Timed(0.5, ended)}
    deliverer = _timed(store, jobs, senders, 4, concurrency={"email": 1, "webhook": 1})
    assert await deliverer.deliver_due() == 12
    # Every e-mail, those of later leases included, went out while the webhook was in flight.
    assert [channel for channel, _ in ended] == ["email"] * 11 + ["webhook"]
    assert len(store.rows("attempts")) == 12


async def test_leasing_stops_when_the_run_is_over_and_the_rest_waits_for_the_next_call() -> None:
    store = FakeStore()
    jobs = [_job("email") for _ in range(6)]
    ended: list[tuple[str, uuid.UUID]] = []
    # run_for_s 0: one lease per call of deliver_due.
    deliverer = _timed(store, jobs, {"email": Timed(0.001, ended)}, 2, run_for_s=0.0)
    assert await deliverer.deliver_due() == 2
    assert await deliverer.deliver_due() == 2
    assert len(ended) == 4
    assert len(jobs) == 2  # the last two are still due, not leased


async def test_deliveries_recorded_during_a_slow_send_go_out_without_waiting_for_it() -> None:
    store = FakeStore()
    jobs = [_job("webhook")]
    ended: list[tuple[str, uuid.UUID]] = []
    deliverer = _timed(
        store, jobs, {"email": Timed(0.001, ended), "webhook": Timed(0.3, ended)}, 10
    )
    running = asyncio.create_task(deliverer.deliver_due())
    # The webhook is leased; nothing else is due yet.
    await eventually(lambda: len(jobs), lambda due: due == 0, interval_s=0.01)
    jobs.extend(_job("email") for _ in range(3))
    deliverer.due_now()  # as the worker does on NOTIFY
    assert await running == 4
    assert [channel for channel, _ in ended] == ["email"] * 3 + ["webhook"]
