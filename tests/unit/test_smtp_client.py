"""Issue #11: the e-mail channel's SMTP client pipelines the envelope and still speaks to any relay.

The demo's SMTP sink on an OS-chosen port, subclassed where a test needs a relay that behaves
otherwise (no PIPELINING, DATA taken after a refused recipient, STARTTLS and AUTH, a hold on the
end of data). Every read the sink makes is recorded: the bytes per read show what went together.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from aiguillage_demo.peers import ReceivedMail, SmtpSession, SmtpSink
from notifications.adapters.email import EmailSender
from notifications.adapters.smtp_client import (
    SmtpClient,
    SmtpProtocolError,
    SmtpReply,
    dot_stuffed,
    parse_replies,
)
from notifications.domain.delivery import AttemptResult, DeliveryJob
from tests.support.waiting import eventually
from tests.unit.test_notifications_throughput import SENDER, _mail

ENVELOPE_FROM = "notifications@aiguillage.demo.invalid"
TARGET = "coordination@ara-lyon.cpca.demo.invalid"


class RecordingSession(SmtpSession):
    """Records the bytes of every read: what the client wrote together arrives together."""

    sink: RecordingSink

    def __init__(self, sink: RecordingSink) -> None:
        super().__init__(sink)
        self.sink = sink

    def data_received(self, data: bytes) -> None:
        self.sink.reads.append(data)
        super().data_received(data)


class RecordingSink(SmtpSink):
    """Without CHUNKING unless asked: most tests here are about the DATA path (any relay)."""

    session_class: type[RecordingSession] = RecordingSession

    def __init__(self, chunking: bool = False) -> None:
        super().__init__(chunking)
        self.reads: list[bytes] = []
        self.greetings = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self.session_class(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def greeted(self, session: SmtpSession, name: str) -> None:
        self.greetings += 1

    def commands(self) -> list[bytes]:
        """The reads that were commands (not the message): their first line's verb."""
        return [read for read in self.reads if read[:4].isalpha() and read[:4].isupper()]


S = TypeVar("S", bound=RecordingSink)


@asynccontextmanager
async def _started(sink: S) -> AsyncIterator[S]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@pytest.fixture
async def sink() -> AsyncIterator[RecordingSink]:
    async with _started(RecordingSink()) as started:
        yield started


def _sender(port: int, **options: Any) -> EmailSender:
    return EmailSender("127.0.0.1", port, SENDER, "d.invalid", 5.0, local_hostname="w", **options)


async def _sent(sender: EmailSender, *jobs: DeliveryJob) -> list[AttemptResult]:
    """Send ``jobs`` one after the other, then close the sender (QUIT on its sessions)."""
    try:
        return [await sender.send(job) for job in jobs]
    finally:
        await sender.aclose()


def _envelope(target: str = TARGET) -> bytes:
    return f"MAIL FROM:<{ENVELOPE_FROM}>\r\nRCPT TO:<{target}>\r\nDATA\r\n".encode()


async def test_the_envelope_goes_in_one_write_and_the_message_in_the_next(
    sink: RecordingSink,
) -> None:
    sender = _sender(sink.port)
    results = await _sent(sender, _mail(delivery_id=uuid.uuid4()), _mail(delivery_id=uuid.uuid4()))
    assert [r.outcome for r in results] == ["delivered", "delivered"]
    assert len(sink.received) == 2
    # EHLO, then per e-mail: MAIL + RCPT + DATA together, then the message: two round trips.
    assert sink.reads[0] == b"EHLO w\r\n"
    assert sink.reads[1] == _envelope()
    assert sink.reads[2].startswith(b"From: ")
    assert sink.reads[2].endswith(b"\r\n.\r\n")
    assert sink.reads[3] == _envelope()
    assert sink.reads[4].endswith(b"\r\n.\r\n")
    assert sink.reads[5:] == [b"QUIT\r\n"]


async def test_with_chunking_the_envelope_and_the_message_go_in_one_write() -> None:
    async with _started(RecordingSink(chunking=True)) as sink:
        sender = _sender(sink.port)
        jobs = [_mail(delivery_id=uuid.uuid4()) for _ in range(2)]
        results = await _sent(sender, *jobs)
        assert [r.outcome for r in results] == ["delivered", "delivered"]
        # EHLO, then one write per e-mail (one round trip), then QUIT.
        assert sink.reads[0] == b"EHLO w\r\n"
        for read, mail in zip(sink.reads[1:3], sink.received, strict=True):
            head = f"MAIL FROM:<{ENVELOPE_FROM}>\r\nRCPT TO:<{TARGET}>\r\n"
            head += f"BDAT {len(mail.raw)} LAST\r\n"
            assert read == head.encode() + mail.raw
            assert mail.raw.startswith(b"From: ")
        assert sink.reads[3:] == [b"QUIT\r\n"]


async def test_with_chunking_a_refused_recipient_is_reported_and_the_session_goes_on() -> None:
    async with _started(RecordingSink(chunking=True)) as sink:
        sink.refuse_next = 1
        sender = _sender(sink.port)
        refused, accepted = await _sent(
            sender, _mail(delivery_id=uuid.uuid4()), _mail(delivery_id=uuid.uuid4())
        )
        assert (refused.outcome, refused.smtp_code) == ("transient", 451)  # the RCPT refusal
        assert accepted.outcome == "delivered"
        assert len(sink.received) == 1
        assert sink.greetings == 1  # the same session


async def test_a_refused_recipient_is_reported_and_the_session_serves_the_next_email(
    sink: RecordingSink,
) -> None:
    sink.refuse_next = 1
    sender = _sender(sink.port)
    try:
        refused = await sender.send(_mail(delivery_id=uuid.uuid4()))
        assert sink.received == []
        accepted = await sender.send(_mail(delivery_id=uuid.uuid4()))
    finally:
        await sender.aclose()
    assert (refused.outcome, refused.smtp_code, refused.error_class) == (
        "transient",
        451,
        "smtp_451",
    )
    assert accepted.outcome == "delivered"
    assert len(sink.received) == 1
    assert sink.greetings == 1  # the same session
    # The refused envelope still went in one write, then RSET put the session back in step.
    assert sink.commands()[1:4] == [_envelope(), b"RSET\r\n", _envelope()]


class StartsDataAnywaySession(RecordingSession):
    """A relay that answers DATA with 354 even when no recipient was accepted (RFC 2920 3.1
    allows it): the client must end that empty message before going on."""

    def _command(self, line: bytes) -> str | None:
        if line.upper().startswith(b"DATA") and not self._rcpt_tos:
            self._data = []
            return "354 End data with <CR><LF>.<CR><LF>"
        return super()._command(line)


class StartsDataAnywaySink(RecordingSink):
    session_class = StartsDataAnywaySession

    def accept(self, mail: ReceivedMail) -> str:
        if not mail.rcpt_tos:
            return "554 5.5.1 No valid recipients"
        self.received.append(mail)
        return "250 2.0.0 OK"


async def test_data_taken_after_a_refused_recipient_is_ended_empty_and_the_refusal_reported() -> (
    None
):
    async with _started(StartsDataAnywaySink()) as sink:
        sink.refuse_next = 1
        sender = _sender(sink.port)
        try:
            refused = await sender.send(_mail(delivery_id=uuid.uuid4()))
            accepted = await sender.send(_mail(delivery_id=uuid.uuid4()))
        finally:
            await sender.aclose()
        assert (refused.outcome, refused.smtp_code) == ("transient", 451)  # the first refusal
        assert accepted.outcome == "delivered"
        assert len(sink.received) == 1
        assert sink.greetings == 1
        assert sink.reads[1:4] == [_envelope(), b".\r\n", b"RSET\r\n"]


class NoPipeliningSession(RecordingSession):
    def _command(self, line: bytes) -> str | None:
        reply = super()._command(line)
        return reply and reply.replace("250-PIPELINING\r\n", "")


class NoPipeliningSink(RecordingSink):
    session_class = NoPipeliningSession


async def test_a_relay_without_pipelining_gets_one_command_at_a_time() -> None:
    async with _started(NoPipeliningSink()) as sink:
        sender = _sender(sink.port)
        (result,) = await _sent(sender, _mail(delivery_id=uuid.uuid4()))
        assert result.outcome == "delivered"
        assert len(sink.received) == 1
        assert sink.commands() == [
            b"EHLO w\r\n",
            f"MAIL FROM:<{ENVELOPE_FROM}>\r\n".encode(),
            f"RCPT TO:<{TARGET}>\r\n".encode(),
            b"DATA\r\n",
            b"QUIT\r\n",
        ]


async def test_lines_starting_with_a_dot_arrive_intact(sink: RecordingSink) -> None:
    text = "Bonjour,\n.Point de départ\n..deux points\n.\nFin\n"
    sender = _sender(sink.port)
    (result,) = await _sent(sender, _mail(email_text=text))
    assert result.outcome == "delivered"
    (mail,) = sink.received
    assert mail.text().replace("\r\n", "\n") == text
    # And a message the client did not end with a line break still ends where it should.
    client = await SmtpClient.connect("127.0.0.1", sink.port, local_hostname="w", timeout_s=5.0)
    try:
        await client.send_message(ENVELOPE_FROM, TARGET, b"Subject: x\r\n\r\n.a\r\n.")
        await client.quit()
    finally:
        client.close()
    assert sink.received[1].raw == b"Subject: x\r\n\r\n.a\r\n.\r\n"


def test_dot_stuffing_doubles_leading_dots_and_ends_the_message() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert dot_stuffed(b"a") == b"a\r\n.\r\n"


def test_replies_are_parsed_several_per_read_and_multi_line() -> None:
    buffer = bytearray(b"250-sink.local\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 Go on\r\n25")
    assert parse_replies(buffer) == [
        SmtpReply(250, "sink.local\nPIPELINING\nSIZE 10"),
        SmtpReply(354, "Go on"),
    ]
    assert buffer == b"25"  # a partial reply waits for the rest
    buffer += b"0 OK\r\n"
    assert parse_replies(buffer) == [SmtpReply(250, "OK")]
    with pytest.raises(SmtpProtocolError):
        parse_replies(bytearray(b"hello\r\n"))


_LINE = st.text(alphabet=". aZ=", max_size=6)


@given(st.lists(_LINE, max_size=8), st.booleans())
def test_a_dot_stuffed_message_reads_back_as_sent(lines: list[str], last_line_ended: bool) -> None:
    message = "\r\n".join(lines).encode() + (b"\r\n" if last_line_ended and lines else b"")
    payload = dot_stuffed(message)
    # What a relay does (RFC 5321 4.5.2): up to the "." line, one leading dot removed per line.
    received = payload.split(b"\r\n")
    assert received[-2:] == [b".", b""]  # the end of data, once, at the end
    body = [line[1:] if line.startswith(b".") else line for line in received[:-2]]
    expected = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert b"".join(line + b"\r\n" for line in body) == expected


@given(
    st.lists(
        st.tuples(st.integers(200, 599), st.lists(st.text("abc -=", max_size=5), min_size=1)),
        max_size=5,
    ),
    st.lists(st.integers(1, 20), max_size=10),
)
def test_replies_cut_anywhere_are_parsed_once_complete(
    replies: list[tuple[int, list[str]]], cuts: list[int]
) -> None:
    wire = b"".join(
        b"".join(
            f"{code}{'-' if i < len(texts) - 1 else ' '}{text}\r\n".encode()
            for i, text in enumerate(texts)
        )
        for code, texts in replies
    )
    buffer, parsed, at = bytearray(), [], 0
    for size in [*cuts, len(wire)]:  # the reads a socket may give
        buffer += wire[at : at + size]
        at += size
        parsed += parse_replies(buffer)
    assert parsed == [SmtpReply(code, "\n".join(texts)) for code, texts in replies]
    assert buffer == b""


async def test_the_extensions_offered_are_known(sink: RecordingSink) -> None:
    client = await SmtpClient.connect("127.0.0.1", sink.port, local_hostname="w", timeout_s=5.0)
    try:
        assert client.extensions == {"PIPELINING": "", "8BITMIME": "", "SIZE": "10485760"}
        assert client.is_connected
        await client.noop()
        await client.quit()
        assert not client.is_connected
    finally:
        client.close()


async def test_an_address_with_a_line_break_is_refused_before_anything_is_sent(
    sink: RecordingSink,
) -> None:
    sender = _sender(sink.port)
    (result,) = await _sent(sender, _mail(target=f"{TARGET}\r\nRCPT TO:<x@evil.invalid>"))
    assert (result.outcome, result.error_class) == ("permanent", "bad_address")
    assert sink.reads == []


class HoldingSink(RecordingSink):
    """Never answers the end of data: the relay hangs."""

    def accept(self, mail: ReceivedMail) -> Awaitable[str]:
        return asyncio.get_running_loop().create_future()


async def test_a_relay_that_hangs_is_a_timeout_and_its_session_is_closed() -> None:
    async with _started(HoldingSink()) as sink:
        sender = EmailSender("127.0.0.1", sink.port, SENDER, "d.invalid", 0.3, local_hostname="w")
        (result,) = await _sent(sender, _mail())
        assert (result.outcome, result.error_class) == ("transient", "timeout")
        assert sender._idle == []
        await eventually(lambda: len(sink.sessions), lambda open_: open_ == 0, timeout_s=5.0)


class ChattySink(RecordingSink):
    """Answers the end of the first message with one reply too many."""

    def accept(self, mail: ReceivedMail) -> str:
        reply = str(super().accept(mail))
        return f"{reply}\r\n250 2.0.0 and one more" if len(self.received) == 1 else reply


async def test_a_reply_nobody_asked_for_is_never_paired_with_the_next_command() -> None:
    async with _started(ChattySink()) as sink:
        sender = _sender(sink.port)
        first, second, third = (_mail(delivery_id=uuid.uuid4()) for _ in range(3))
        results = await _sent(sender, first, second, third)
        # The second e-mail finds the stray reply queued: not sent on that session (which is
        # dropped), a transient failure retried later; the third goes on a fresh session.
        assert [(r.outcome, r.error_class) for r in results] == [
            ("delivered", None),
            ("transient", "protocol"),
            ("delivered", None),
        ]
        ids = [m.message_id for m in sink.received]
        assert ids == [f"<{first.delivery_id}@d.invalid>", f"<{third.delivery_id}@d.invalid>"]
        assert sink.greetings == 2


class ClosingSession(RecordingSession):
    """Answers MAIL with 421 and hangs up when the sink says so (a relay's idle timeout)."""

    sink: ClosingSink

    def _command(self, line: bytes) -> str | None:
        if line.upper().startswith(b"MAIL") and self.sink.close_next:
            self.sink.close_next = False
            return "421 4.4.2 Idle too long, closing"
        return super()._command(line)

    def _write(self, replies: list[str]) -> None:
        super()._write(replies)
        if any(reply.startswith("421") for reply in replies):
            self.close()


class ClosingSink(RecordingSink):
    session_class = ClosingSession
    close_next = False


async def _sent_once_after(sink: Any, disrupt: Callable[[], None]) -> None:
    """One e-mail on a fresh session, ``disrupt`` the kept session, then another: the second is
    delivered, received once, on a second session."""
    sender = _sender(sink.port)
    try:
        assert (await sender.send(_mail(delivery_id=uuid.uuid4()))).outcome == "delivered"
        disrupt()
        again = _mail(delivery_id=uuid.uuid4())
        result = await sender.send(again)
    finally:
        await sender.aclose()
    assert result.outcome == "delivered"
    assert [m.message_id for m in sink.received].count(f"<{again.delivery_id}@d.invalid>") == 1
    assert sink.greetings == 2


async def test_a_421_to_mail_on_a_kept_session_sends_the_email_once_on_a_fresh_one() -> None:
    async with _started(ClosingSink()) as sink:

        def close_next() -> None:
            sink.close_next = True

        await _sent_once_after(sink, close_next)


async def test_a_kept_session_dropped_just_before_a_send_is_replaced_and_the_email_sent_once(
    sink: RecordingSink,
) -> None:
    # Dropped with no chance for the client to see it first: the envelope goes out on the dead
    # session and meets an end of file or a reset instead of the reply to MAIL.
    await _sent_once_after(sink, sink.drop_sessions)


async def test_start_tls_asked_of_a_relay_that_does_not_offer_it_sends_nothing(
    sink: RecordingSink,
) -> None:
    sender = _sender(sink.port, start_tls=True)
    (result,) = await _sent(sender, _mail())
    assert (result.outcome, result.error_class) == ("transient", "protocol")
    assert sink.received == []
    assert not any(read.startswith(b"MAIL") for read in sink.reads)


# STARTTLS and AUTH: a certificate made here, trusted by the client for this test only.


def _certificate(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the relay's context and the client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, ssl.create_default_context(cadata=pem.decode())


class AuthSession(RecordingSession):
    """Offers STARTTLS (when the sink has a certificate) and AUTH; MAIL needs a login."""

    sink: AuthSink

    def __init__(self, sink: AuthSink) -> None:
        super().__init__(sink)
        self.tls = False  # STARTTLS answered
        self.logged_in = False
        self._upgrade: asyncio.Task[None] | None = None
        self._held: list[str] = []  # replies written while TLS was being set up

    def _command(self, line: bytes) -> str | None:
        verb, _, argument = line.decode().rstrip("\r\n").partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            offers = f"250-AUTH {self.sink.mechanisms}\r\n"
            if self.sink.tls_context is not None and not self.tls:
                offers += "250-STARTTLS\r\n"
            reply = super()._command(line) or ""
            return reply.replace("250-PIPELINING", offers + "250-PIPELINING")
        if verb == "STARTTLS" and self.sink.tls_context is not None and not self.tls:
            self.tls = True  # upgraded right after this reply is written (see _write)
            return "220 2.0.0 Ready to start TLS"
        if verb == "AUTH":
            return self._auth(argument)
        if verb == "MAIL" and not self.logged_in:
            return "530 5.7.0 Authentication required"
        return super()._command(line)

    def _auth(self, argument: str) -> str:
        mechanism, _, token = argument.partition(" ")
        if mechanism.upper() != "PLAIN" or "PLAIN" not in self.sink.mechanisms:
            return "504 5.5.4 Unrecognized authentication type"
        _, user, password = base64.b64decode(token).decode().split("\0")
        encrypted = self._transport is not None and self._transport.get_extra_info("ssl_object")
        self.sink.logins.append((user, password, bool(encrypted)))
        if (user, password) != self.sink.credentials:
            return "535 5.7.8 Authentication credentials invalid"
        self.logged_in = True
        return "235 2.7.0 Authentication successful"

    def _write(self, replies: list[str]) -> None:
        if self._upgrade is not None and not self._upgrade.done():
            # The client's first command over TLS can be read before start_tls returns the
            # new transport: its reply waits rather than go out in clear on the old one.
            self._held.extend(replies)
            return
        super()._write(replies)
        if replies and replies[-1].startswith("220 2.0.0") and self._upgrade is None:
            self._upgrade = asyncio.ensure_future(self._start_tls())

    async def _start_tls(self) -> None:
        assert self._transport is not None
        assert self.sink.tls_context is not None
        try:
            upgraded = await asyncio.get_running_loop().start_tls(
                self._transport, self, self.sink.tls_context, server_side=True
            )
        except (ssl.SSLError, ConnectionError):
            self.close()
            return
        if not isinstance(upgraded, asyncio.Transport):
            return  # the client gave up the handshake (did not trust the certificate)
        self._transport = upgraded
        held, self._held = self._held, []
        SmtpSession._write(self, held)


class AuthSink(RecordingSink):
    session_class = AuthSession

    def __init__(self, tls_context: ssl.SSLContext | None, mechanisms: str = "PLAIN") -> None:
        super().__init__()
        self.tls_context = tls_context
        self.mechanisms = mechanisms
        self.credentials = ("relay-user", "s3cret")
        self.logins: list[tuple[str, str, bool]] = []  # user, password, over TLS


async def test_start_tls_then_auth_plain_over_it(tmp_path: Path) -> None:
    relay_context, client_context = _certificate(tmp_path)
    async with _started(AuthSink(relay_context)) as sink:
        sender = _sender(
            sink.port,
            start_tls=True,
            username="relay-user",
            password="s3cret",
            tls_context=client_context,
        )
        results = await _sent(
            sender, _mail(delivery_id=uuid.uuid4()), _mail(delivery_id=uuid.uuid4())
        )
        assert [r.outcome for r in results] == ["delivered", "delivered"]
        assert len(sink.received) == 2
        # Logged in once per session, over TLS; in clear only EHLO and STARTTLS.
        assert sink.logins == [("relay-user", "s3cret", True)]
        assert sink.reads[:3] == [b"EHLO w\r\n", b"STARTTLS\r\n", b"EHLO w\r\n"]


async def test_a_relay_certificate_not_trusted_is_a_connect_failure(tmp_path: Path) -> None:
    relay_context, _ = _certificate(tmp_path)
    async with _started(AuthSink(relay_context)) as sink:
        sender = _sender(sink.port, start_tls=True, username="relay-user", password="s3cret")
        (result,) = await _sent(sender, _mail())
        assert (result.outcome, result.error_class) == ("transient", "connect")
        assert sink.logins == []


async def test_auth_plain_without_tls_and_wrong_credentials_refused() -> None:
    async with _started(AuthSink(None)) as sink:
        sender = _sender(sink.port, username="relay-user", password="s3cret")
        wrong = _sender(sink.port, username="relay-user", password="nope")
        try:
            assert (await sender.send(_mail())).outcome == "delivered"
            refused = await wrong.send(_mail())
        finally:
            await sender.aclose()
            await wrong.aclose()
        # Refused credentials refuse the session, not the message: retried once fixed.
        assert (refused.outcome, refused.smtp_code) == ("transient", 535)
        assert len(sink.received) == 1
        assert sink.logins == [("relay-user", "s3cret", False), ("relay-user", "nope", False)]


async def test_no_auth_mechanism_in_common_sends_nothing() -> None:
    async with _started(AuthSink(None, mechanisms="CRAM-MD5")) as sink:
        sender = _sender(sink.port, username="relay-user", password="s3cret")
        (result,) = await _sent(sender, _mail())
        assert (result.outcome, result.error_class) == ("transient", "protocol")
        assert sink.received == []
