"""E-mail channel over SMTP: French plain text and HTML, never identity or judicial details.

The Message-ID derives from the delivery id, so a message re-sent after a lost answer carries the
same id and mail systems (and people) can tell it is the same message.

The message is rendered straight to the bytes sent (7-bit: RFC 2047 subject, quoted-printable
parts), not through ``email.message.EmailMessage`` and its generator, which cost more than the
SMTP exchange itself. It is sent with ``smtp_client`` (the envelope pipelined when the relay
offers it: two round trips per message instead of four). SMTP sessions are kept open and reused
(one per e-mail sent at a time, so at most ``max_sessions``): a new one is opened on the first
send, after ``max_messages`` messages, after ``idle_timeout_s`` without use, and whenever a
session failed. A reused session that turns out to be closed by the relay is replaced and the
message offered again on a fresh one, which is safe: nothing is handed over before the end of DATA.
"""

from __future__ import annotations

import asyncio
import binascii
import email
import email.policy
import functools
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

from notifications.adapters.smtp_client import (
    SmtpClient,
    SmtpDisconnected,
    SmtpProtocolError,
    SmtpRefused,
)
from notifications.domain.delivery import AttemptResult, DeliveryJob, smtp_result

FALLBACK_NOTICE = (
    "Ce message vous parvient par courriel parce que votre système d'information n'a pas pu "
    "être joint. Merci d'en informer votre service informatique."
)
# The centre's system is fine: the offer waits for the person's identity, which intake cannot
# give right now. The centre learns of the offer now and gets the identity on its system later.
IDENTITY_WAIT_SUBJECT = "[Identité à suivre]"
IDENTITY_WAIT_NOTICE = (
    "Ce message vous parvient par courriel parce que l'identité de la personne ne peut pas être "
    "transmise pour le moment. Votre système d'information recevra cette proposition avec "
    "l'identité dès qu'elle sera disponible ; aucune action n'est requise de votre part."
)

# RFC 2047: a line with encoded words is at most 76 characters; 39 bytes of UTF-8 give 52 of
# base64, 64 with the markers, 73 after "Subject: ".
_WORD_BYTES = 39


def message_id(job: DeliveryJob, domain: str) -> str:
    return f"<{job.delivery_id}@{domain}>"


def _content(job: DeliveryJob) -> tuple[str, str, str]:
    subject = job.title
    text, html = job.email_text, job.email_html
    if job.fallback_for is not None:
        if job.fallback_reason == "identity_wait":
            prefix, notice = IDENTITY_WAIT_SUBJECT, IDENTITY_WAIT_NOTICE
        else:
            prefix, notice = "[Action requise]", FALLBACK_NOTICE
        subject = f"{prefix} {subject}"
        text = f"{notice}\n\n{text}"
        html = html.replace("</h1>", f"</h1>\n<p><strong>{notice}</strong></p>", 1)
    return subject, text, html


def _header(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value may not contain a line break")
    return value


def _encoded_words(value: str) -> str:
    """The subject as RFC 2047 encoded words (folded), or as is when it is short ASCII."""
    value = " ".join(value.split())  # a line break in a subject is never meant
    if value.isascii() and len(value) <= 900:
        return value
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode())
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return "\r\n ".join(
        "=?utf-8?b?" + binascii.b2a_base64(word.encode(), newline=False).decode() + "?="
        for word in words
    )


def _quoted_printable(text: str) -> bytes:
    plain = text.replace("\r\n", "\n").replace("\r", "\n")
    if not plain.endswith("\n"):
        plain += "\n"  # as EmailMessage.set_content does: the part ends with its last line
    return binascii.b2a_qp(plain.encode(), istext=True).replace(b"\n", b"\r\n")


@functools.lru_cache(maxsize=8)
def _sender(sender: str) -> tuple[str, str]:
    """The envelope address and the From header (a non-ASCII name encoded) of ``sender``."""
    name, address = parseaddr(sender)
    return address, _header(formataddr((name, address), charset="utf-8"))


def render_message(
    job: DeliveryJob, sender: str, domain: str, date: str | None = None
) -> tuple[str, bytes]:
    """The envelope sender and the message as sent: 7-bit, multipart text + HTML."""
    address, from_header = _sender(sender)
    subject, text, html = _content(job)
    # "=_" never occurs in quoted-printable text: the boundary cannot clash with the parts.
    boundary = f"=_aiguillage_{job.delivery_id.hex}"
    head = (
        f"From: {from_header}\r\n"
        f"To: {_header(job.target)}\r\n"
        f"Subject: {_encoded_words(subject)}\r\n"
        f"Date: {date or formatdate(localtime=False)}\r\n"
        f"Message-ID: {_header(message_id(job, domain))}\r\n"
        f"X-Aiguillage-Reference: {_header(job.referral_id)}\r\n"
        f"X-Correlation-Id: {job.correlation_id}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
        "\r\n"
    )
    # Each delimiter starts with the CRLF that ends the part before it (RFC 2046 5.1.1).
    part = (
        '\r\n--{b}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    raw = b"".join(
        (
            head.encode("ascii"),
            part.format(b=boundary, kind="plain").encode()[2:],
            _quoted_printable(text),
            part.format(b=boundary, kind="html").encode(),
            _quoted_printable(html),
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    return address, raw


def build_message(job: DeliveryJob, sender: str, domain: str) -> EmailMessage:
    """The message sent for ``job``, parsed back (for tests and tools)."""
    _, raw = render_message(job, sender, domain)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# The commands whose refusal is about the message; any other (greeting, EHLO, STARTTLS, AUTH)
# refuses the session.
_MESSAGE_COMMANDS = frozenset({"MAIL", "RCPT", "DATA", "message"})


class _Session:
    __slots__ = ("expiry", "sent", "smtp")

    def __init__(self, smtp: SmtpClient) -> None:
        self.smtp = smtp
        self.sent = 0
        self.expiry: asyncio.TimerHandle | None = None


class EmailSender:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        message_domain: str,
        timeout_s: float,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
        *,
        local_hostname: str = "",
        max_sessions: int = 1,
        max_messages: int = 100,
        idle_timeout_s: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._domain = message_domain
        self._timeout_s = timeout_s
        self._username = username
        self._password = password
        self._start_tls = start_tls
        self._tls_context = tls_context  # None: the system's CAs, host name checked
        # EHLO name: given, or this host's FQDN looked up once (not per connection).
        self._local_hostname = local_hostname or None
        self._max_messages = max(1, max_messages)
        self._idle_timeout_s = idle_timeout_s
        self._idle: list[_Session] = []
        self._slots = asyncio.Semaphore(max(1, max_sessions))
        self._closed = False

    async def send(self, job: DeliveryJob) -> AttemptResult:
        # A line break in an address would end the command and start another: refused, like an
        # address that cannot be written in an SMTP command at all.
        if not job.target.isascii() or "\r" in job.target or "\n" in job.target:
            return AttemptResult("permanent", 0, "bad_address")
        envelope_from, raw = render_message(job, self._sender, self._domain)
        async with self._slots:
            started = time.monotonic()
            try:
                await self._hand_over(envelope_from, job.target, raw)
            except SmtpRefused as error:
                about_message = error.command in _MESSAGE_COMMANDS
                return smtp_result(error.code, _ms(started), about_message=about_message)
            except TimeoutError:
                return AttemptResult("transient", _ms(started), "timeout")
            except OSError:  # refused, reset or closed connection, TLS failure
                return AttemptResult("transient", _ms(started), "connect")
            except SmtpProtocolError:
                # A relay that does not speak as expected (or offers no STARTTLS though asked):
                # nothing wrong with the message, and never sent in clear instead.
                return AttemptResult("transient", _ms(started), "protocol")
            return AttemptResult("delivered", _ms(started), smtp_code=250)

    async def _hand_over(self, envelope_from: str, target: str, raw: bytes) -> None:
        """Send on a pooled session. A refused message leaves its session usable once its
        envelope is reset; any other failure closes it. A reused session the relay has closed
        meanwhile (disconnected before answering MAIL, or 421 to it) is replaced once and the
        message offered again: nothing was handed over yet."""
        session, reused = await self._checkout()
        while True:
            try:
                await session.smtp.send_message(envelope_from, target, raw)
            except SmtpRefused as error:
                if not (reused and error.command == "MAIL" and error.code == 421):
                    if await self._reset(session):
                        self._checkin(session)
                    raise
                session.smtp.close()
            except SmtpDisconnected as error:
                session.smtp.close()
                if not (reused and error.command == "MAIL"):
                    raise
            except BaseException:
                session.smtp.close()
                raise
            else:
                self._checkin(session)
                return
            session, reused = await self._open(), False

    async def aclose(self) -> None:
        """Say QUIT on the idle sessions (at shutdown)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            if session.expiry is not None:
                session.expiry.cancel()
            await self._quit(session)

    async def _checkout(self) -> tuple[_Session, bool]:
        while self._idle:
            session = self._idle.pop()
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None
            if session.smtp.is_connected:
                return session, True
            session.smtp.close()
        return await self._open(), False

    def _checkin(self, session: _Session) -> None:
        session.sent += 1
        if not session.smtp.is_connected:
            session.smtp.close()
            return
        if self._closed or session.sent >= self._max_messages:
            self._retire(session)
            return
        session.expiry = asyncio.get_running_loop().call_later(
            self._idle_timeout_s, self._expire, session
        )
        self._idle.append(session)

    def _expire(self, session: _Session) -> None:
        if session in self._idle:
            self._idle.remove(session)
            self._retire(session)

    def _retire(self, session: _Session) -> None:
        """Close a healthy session politely, without making anyone wait for it."""
        task = asyncio.get_running_loop().create_task(self._quit(session))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _quit(self, session: _Session) -> None:
        try:
            async with asyncio.timeout(min(self._timeout_s, 2.0)):
                await session.smtp.quit()
        except Exception:
            session.smtp.close()

    async def _reset(self, session: _Session) -> bool:
        try:
            await session.smtp.rset()
        except Exception:
            session.smtp.close()
            return False
        return True

    async def _open(self) -> _Session:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        if self._start_tls and self._tls_context is None:
            # The system's CAs are loaded once, not per connection (milliseconds each time).
            self._tls_context = ssl.create_default_context()
        smtp = await SmtpClient.connect(
            self._host,
            self._port,
            local_hostname=self._local_hostname,
            timeout_s=self._timeout_s,
            start_tls=self._start_tls,
            tls_context=self._tls_context,
            username=self._username,
            password=self._password,
        )
        return _Session(smtp)


# Sessions being closed in the background: a reference keeps their task alive until it ends.
_background: set[asyncio.Task[None]] = set()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
