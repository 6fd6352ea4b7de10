"""Real local peers for the notifications channels: an SMTP sink and a webhook receiver.

Both are real servers on 127.0.0.1 with OS-chosen ports, run in the caller's event loop, so that
the tests and the demo exercise the notifications service's actual SMTP and HTTP clients. They can
be told to fail (SMTP 451 / 550, HTTP statuses) to exercise retries, dead letters and fallback.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from notifications.adapters.webhook import SIGNATURE_HEADER, verify


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content() if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(("html",))
        return part.get_content() if part is not None else ""


class SmtpSink:
    """Accepts mail; ``refuse_next`` recipients get ``refuse_with`` (e.g. a 451) first.

    A small SMTP server (RFC 5321: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) that offers
    PIPELINING (RFC 2920), as relays do: commands arriving together are answered in order; and
    CHUNKING (RFC 3030: BDAT) unless ``chunking`` is False, as Postfix does since 3.4. It
    replaces aiosmtpd, whose address parsing through the ``email`` package cost more CPU per
    message than the notifications service spent sending it, on the same two cores in the
    end-to-end benchmark. Stopping it drops the open sessions too: a stopped relay is down for
    everyone, not only for new connections.
    """

    def __init__(self, chunking: bool = True) -> None:
        self.chunking = chunking
        self.received: list[ReceivedMail] = []
        self.refuse_next = 0
        self.refuse_with = "451 4.3.2 Service temporairement indisponible"
        self.refused = 0
        self._server: asyncio.Server | None = None
        self.sessions: set[SmtpSession] = set()  # open now
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SmtpSession(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_sessions()
            await self._server.wait_closed()

    def drop_sessions(self) -> None:
        """Close every open session, as a relay's idle timeout does."""
        for session in list(self.sessions):
            session.close()

    def greeted(self, session: SmtpSession, name: str) -> None:
        """A client said EHLO or HELO ``name`` (a hook for tests counting sessions)."""

    def recipient(self, address: str) -> str:
        """The reply to ``RCPT TO:<address>``."""
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return self.refuse_with
        return "250 2.1.5 OK"

    def accept(self, mail: ReceivedMail) -> str | Awaitable[str]:
        """The reply to the end of DATA (given later when awaitable)."""
        self.received.append(mail)
        return "250 2.0.0 Message accepted for delivery"

    def to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.received if address in mail.rcpt_tos]


_MAX_LINE = 4096  # a command line; message lines are bounded by the whole message instead
_MAX_MESSAGE = 10 * 1024 * 1024


class SmtpSession(asyncio.Protocol):
    """One SMTP connection of a ``SmtpSink``: lines are handled in the order they arrive, which
    is all PIPELINING asks of a server."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._in_data = False  # between DATA and the line "."
        self._parts: list[bytes] = []  # the message so far (DATA lines or BDAT chunks)
        self._size = 0
        self._mail_from: str | None = None
        self._rcpt_tos: list[str] = []
        self._waiting: asyncio.Future[str] | None = None  # the sink's answer to the last DATA
        # BDAT (RFC 3030): the chunk's declared size, the bytes of it still to read, whether it
        # is the last one, and the refusal owed once it is read.
        self._chunk_size = 0
        self._chunk_left: int | None = None
        self._chunk_last = False
        self._chunk_refusal: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sink.sessions.add(self)
        transport.write(b"220 sink.local ESMTP\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._sink.sessions.discard(self)

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        """Answer the complete lines buffered, in order, until one must wait for the sink."""
        replies: list[str] = []
        while self._waiting is None:
            if self._chunk_left is not None:
                chunk_reply = self._chunk_bytes()
                if chunk_reply is None:
                    break  # the rest of the chunk is still on its way
                self._answer(chunk_reply, replies)
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if not self._in_data and len(self._buffer) > _MAX_LINE:
                    replies.append("500 5.5.6 Line too long")
                    self._buffer.clear()
                break
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            reply = self._message_line(line) if self._in_data else self._command(line)
            if reply is not None and self._answer(reply, replies):
                break
        self._write(replies)

    def _answer(self, reply: str | Awaitable[str], replies: list[str]) -> bool:
        """Queue ``reply``; True when nothing after it is to be read (the session ends)."""
        if isinstance(reply, str):
            replies.append(reply)
            return reply.startswith("221")
        # The sink answers later (a test holding the reply): what follows waits for it.
        self._waiting = asyncio.ensure_future(reply)
        self._waiting.add_done_callback(self._answered)
        return False

    def _chunk_bytes(self) -> str | Awaitable[str] | None:
        """Take what is buffered of the current BDAT chunk; its reply once it is all read."""
        assert self._chunk_left is not None
        taken = bytes(self._buffer[: self._chunk_left])
        del self._buffer[: len(taken)]
        self._chunk_left -= len(taken)
        self._take(taken)
        if self._chunk_left:
            return None
        self._chunk_left = None
        if self._chunk_refusal is not None or self._size > _MAX_MESSAGE:
            # The chunk was read all the same (RFC 3030 2): the session stays in step.
            refusal = self._chunk_refusal or "552 5.3.4 Message too big"
            self._reset()
            return refusal
        if not self._chunk_last:
            return f"250 2.0.0 {self._chunk_size} octets received"
        return self._end_message()

    def _answered(self, answer: asyncio.Future[str]) -> None:
        self._waiting = None
        if answer.cancelled() or answer.exception() is not None:
            self.close()
            return
        self._write([answer.result()])
        self._process()

    def _write(self, replies: list[str]) -> None:
        if replies and self._transport is not None:
            self._transport.write("".join(f"{reply}\r\n" for reply in replies).encode())
            if replies[-1].startswith("221"):
                self._transport.close()

    def _message_line(self, line: bytes) -> str | Awaitable[str] | None:
        if line in (b".\r\n", b".\n"):
            self._in_data = False
            return self._end_message()
        # Dot-stuffing (RFC 5321 4.5.2): a leading dot was doubled by the client.
        self._take(line[1:] if line.startswith(b".") else line)
        return None

    def _take(self, part: bytes) -> None:
        """Part of the message (a DATA line, a BDAT chunk): kept up to the size limit."""
        self._size += len(part)
        if self._size <= _MAX_MESSAGE:
            self._parts.append(part)

    def _end_message(self) -> str | Awaitable[str]:
        """The message is complete: refused when too big, else the sink's answer."""
        mail = ReceivedMail(self._mail_from or "", list(self._rcpt_tos), b"".join(self._parts))
        too_big = self._size > _MAX_MESSAGE
        self._reset()
        return "552 5.3.4 Message too big" if too_big else self._sink.accept(mail)

    def _reset(self) -> None:
        """A new mail transaction: no envelope, no message, no chunk owed a refusal."""
        self._mail_from, self._rcpt_tos, self._size = None, [], 0
        self._parts, self._chunk_refusal = [], None

    def _command(self, line: bytes) -> str | None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            self._reset()
            self._sink.greeted(self, argument.strip())
            chunking = "250-CHUNKING\r\n" if self._sink.chunking else ""
            return (
                f"250-sink.local\r\n250-PIPELINING\r\n250-8BITMIME\r\n{chunking}250 SIZE 10485760"
            )
        if verb == "HELO":
            self._reset()
            self._sink.greeted(self, argument.strip())
            return "250 sink.local"
        if verb == "MAIL":
            if self._mail_from is not None:
                return "503 5.5.1 Nested MAIL command"
            address = _path(argument, "FROM:")
            if address is None:
                return "501 5.5.4 Syntax: MAIL FROM:<address>"
            self._mail_from = address
            return "250 2.1.0 OK"
        if verb == "RCPT":
            if self._mail_from is None:
                return "503 5.5.1 Need MAIL first"
            address = _path(argument, "TO:")
            if not address:
                return "501 5.5.4 Syntax: RCPT TO:<address>"
            reply = self._sink.recipient(address)
            if reply.startswith("2"):
                self._rcpt_tos.append(address)
            return reply
        if verb == "DATA":
            if not self._rcpt_tos:
                return "503 5.5.1 Need RCPT first"
            self._in_data = True
            return "354 End data with <CR><LF>.<CR><LF>"
        if verb == "BDAT" and self._sink.chunking:
            size, _, last = argument.strip().partition(" ")
            if not size.isdigit() or last.strip().upper() not in ("", "LAST"):
                return "501 5.5.4 Syntax: BDAT <size> [LAST]"
            self._chunk_size = self._chunk_left = int(size)
            self._chunk_last = bool(last.strip())
            if not self._rcpt_tos:
                self._chunk_refusal = "503 5.5.1 Need RCPT first"
            return None  # answered once the chunk is read
        if verb == "RSET":
            self._reset()
            return "250 2.0.0 OK"
        if verb == "NOOP":
            return "250 2.0.0 OK"
        if verb == "QUIT":
            return "221 2.0.0 Bye"
        return "502 5.5.2 Command not implemented"


def _path(argument: str, keyword: str) -> str | None:
    """The address of ``FROM:<a@b> SIZE=10`` (``keyword`` 'FROM:'), '' for the null path."""
    if not argument.upper().startswith(keyword):
        return None
    rest = argument[len(keyword) :].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    return rest[1 : rest.index(">")]


@dataclass
class WebhookCall:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    signature_ok: bool
    at: float = field(default_factory=time.time)  # when the call arrived (epoch seconds)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def idempotency_key(self) -> str:
        return self.headers.get("idempotency-key", "")


@dataclass
class WebhookReceiver:
    """A receiver as a centre would run it: checks the signature (401 when wrong) and answers
    scripted statuses per path first (e.g. 500, 500, then 200). Every call is kept, so that the
    accepted calls per Idempotency-Key show whether anything was delivered twice."""

    secret: bytes
    scripts: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    calls: list[WebhookCall] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)  # kept-alive connections

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop the kept-alive connections: a stopped receiver is down for
        everyone, not only for new connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()

    def accepted(self, path: str | None = None) -> list[WebhookCall]:
        return [c for c in self.calls if 200 <= c.status < 300 and (path is None or c.path == path)]

    def accepted_per_key(self) -> Counter[str]:
        return Counter(c.idempotency_key for c in self.accepted())

    def _status(self, path: str, signature_ok: bool) -> int:
        if not signature_ok:
            return 401
        if path in self.always:
            return self.always[path]
        script = self.scripts.get(path)
        if script:
            return script.pop(0)
        return 200

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keep-alive, as a centre's web server would: one connection serves requests until the
        # client closes it or asks to (``Connection: close``).
        self._open.add(writer)
        try:
            while await self._answer_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return False
        _method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        signature_ok = verify(
            self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body, time.time()
        )
        status = self._status(path, signature_ok)
        self.calls.append(WebhookCall(path, headers, body, status, signature_ok))
        answer = b'{"ok":true}' if status < 300 else b'{"ok":false}'
        keep = headers.get("connection", "").lower() != "close"
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(answer)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        return keep


def free_port() -> int:
    """A loopback port free now; whoever asked binds it a moment later (fine on one machine)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
