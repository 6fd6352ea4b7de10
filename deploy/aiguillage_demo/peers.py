"""Real local peers for the notifications channels: an SMTP sink and a webhook receiver.

Both are real servers on 127.0.0.1 with OS-chosen ports, run in the caller's event loop, so that
the tests and the demo exercise the notifications service's actual SMTP and HTTP clients. They can
be told to fail (SMTP 451 / 550, HTTP statuses) to exercise retries, dead letters and fallback.
aiosmtpd is a development dependency, imported only when an SMTP sink is started.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import time
from collections import Counter
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
    """Accepts mail; ``refuse_next`` recipients get ``refuse_with`` (e.g. a 451) first."""

    def __init__(self) -> None:
        self.received: list[ReceivedMail] = []
        self.refuse_next = 0
        self.refuse_with = "451 4.3.2 Service temporairement indisponible"
        self.refused = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="sink.local"), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.received if address in mail.rcpt_tos]


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
