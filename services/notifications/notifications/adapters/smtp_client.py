"""A small SMTP client (RFC 5321) that pipelines the envelope (RFC 2920).

aiosmtplib cannot pipeline: its protocol drops a reply that arrives while no command is pending,
so several commands written together lose their replies. Here a message costs two writes and two
reads when the relay offers PIPELINING (``MAIL``, ``RCPT`` and ``DATA`` together, then the body)
instead of four of each, and one write and one read when it also offers CHUNKING (RFC 3030:
``MAIL``, ``RCPT`` and ``BDAT <size> LAST`` with the message, which needs no 354 to wait for and
no dot-stuffing); without PIPELINING the commands go one at a time, as to any relay.

Failures are raised as: ``SmtpRefused`` (a reply refusing a command, with its code),
``TimeoutError``, ``OSError`` (``SmtpDisconnected`` when the relay closed the session, TLS
errors) and ``SmtpProtocolError`` (a relay that does not speak as expected: a malformed reply,
STARTTLS or a usable AUTH mechanism not offered). A session that raised anything but
``SmtpRefused`` is closed.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import NamedTuple

_READ_SIZE = 65536
_MAX_REPLY = 64 * 1024  # a reply longer than this is not from a relay worth waiting for


class SmtpReply(NamedTuple):
    code: int
    message: str  # the text of every line, joined by "\n"


class SmtpError(Exception):
    pass


class SmtpRefused(SmtpError):
    def __init__(self, command: str, reply: SmtpReply) -> None:
        super().__init__(f"{command}: {reply.code} {reply.message}")
        self.command = command  # "MAIL", "RCPT", "DATA", "message", "EHLO", "AUTH", ...
        self.code = reply.code


class SmtpProtocolError(SmtpError):
    pass


class SmtpDisconnected(ConnectionError):
    def __init__(self, command: str) -> None:
        super().__init__(f"the relay closed the session (awaiting the reply to {command})")
        self.command = command


def parse_replies(buffer: bytearray) -> list[SmtpReply]:
    """The complete replies at the start of ``buffer``, removed from it; a partial one stays.

    Several replies can arrive in one read (the answers to pipelined commands): all are taken.
    """
    replies: list[SmtpReply] = []
    start = 0
    lines: list[str] = []
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            break
        line = bytes(buffer[start:end]).rstrip(b"\r")
        start = end + 1
        code, separator = line[:3], line[3:4]
        if not (code.isdigit() and len(code) == 3 and separator in (b"", b" ", b"-")):
            raise SmtpProtocolError(f"malformed reply line {line[:80]!r}")
        lines.append(line[4:].decode("utf-8", "replace"))
        if separator != b"-":  # the last line of this reply
            replies.append(SmtpReply(int(code), "\n".join(lines)))
            lines = []
            del buffer[:start]
            start = 0
    if len(buffer) > _MAX_REPLY:
        raise SmtpProtocolError("reply too long")
    return replies


def _terminated(message: bytes) -> bytes:
    """``message`` ending with a line break, as both DATA and BDAT send it."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def dot_stuffed(message: bytes) -> bytes:
    """``message`` as the DATA payload: a leading dot doubled on every line (RFC 5321 4.5.2),
    CRLF-terminated, then the ``.`` line that ends it."""
    stuffed = _terminated(message).replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


# The envelope's commands and the replies that accept them.
_ENVELOPE = (("MAIL", (250,)), ("RCPT", (250, 251)), ("DATA", (354,)))
# With CHUNKING, the reply to "BDAT <size> LAST" is the reply to the message.
_CHUNKED = (("MAIL", (250,)), ("RCPT", (250, 251)), ("message", (250,)))


def _path(address: str) -> str:
    # A line break would end the command and start another one of the caller's choosing.
    if "\r" in address or "\n" in address:
        raise ValueError("an SMTP address may not contain a line break")
    return f"<{address}>"


class SmtpClient:
    """One SMTP session. Each reply awaited (and the TLS handshake) has ``timeout_s``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        timeout_s: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host
        self._timeout_s = timeout_s
        self._buffer = bytearray()
        self._pending: list[SmtpReply] = []  # replies read but not asked for yet
        self.extensions: dict[str, str] = {}  # EHLO keyword (upper case) -> its parameters

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        local_hostname: str,
        timeout_s: float,
        start_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> SmtpClient:
        """A session greeted, EHLO (or HELO) said, upgraded to TLS and logged in as asked."""
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer, host, timeout_s)
        try:
            greeting = await client._exchange(b"", "greeting")
            if greeting.code != 220:
                raise SmtpRefused("greeting", greeting)
            await client._hello(local_hostname)
            if start_tls:
                await client._start_tls(tls_context or ssl.create_default_context())
                await client._hello(local_hostname)
            if username is not None and password is not None:
                await client._login(username, password)
        except BaseException:
            client.close()
            raise
        return client

    @property
    def is_connected(self) -> bool:
        """False once the relay closed the session (seen without reading) or it was closed."""
        return not self._writer.is_closing() and not self._reader.at_eof()

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    async def send_message(self, mail_from: str, rcpt_to: str, message: bytes) -> SmtpReply:
        """Hand ``message`` over for ``rcpt_to``; the reply to its end of data when accepted.

        Raises ``SmtpRefused`` for the first refused command; the replies of the commands sent
        with it are read (the session stays in step) and an envelope refused with ``DATA``
        accepted ends with an empty message, so ``RSET`` is all the session needs afterwards.
        """
        if self.pipelining and "CHUNKING" in self.extensions:
            return await self._send_chunked(mail_from, rcpt_to, message)
        commands = f"MAIL FROM:{_path(mail_from)}\r\nRCPT TO:{_path(rcpt_to)}\r\nDATA\r\n"
        envelope = commands.encode("ascii")
        payload = dot_stuffed(message)
        if not self.pipelining:  # one command at a time, as any relay understands
            lines = envelope.splitlines(keepends=True)
            for line, (verb, accepted) in zip(lines, _ENVELOPE, strict=True):
                reply = await self._exchange(line, verb)
                if reply.code not in accepted:
                    raise SmtpRefused(verb, reply)
            return await self._accepted(payload)
        self._write(envelope, "MAIL")
        await self._pipelined(_ENVELOPE)
        return await self._accepted(payload)

    async def _send_chunked(self, mail_from: str, rcpt_to: str, message: bytes) -> SmtpReply:
        """The envelope and the whole message in one write. A relay reads a chunk even when the
        envelope before it was refused (RFC 3030 2), and answers it with an error: the session
        stays in step, and the first refusal is the one raised."""
        message = _terminated(message)
        commands = (
            f"MAIL FROM:{_path(mail_from)}\r\nRCPT TO:{_path(rcpt_to)}\r\n"
            f"BDAT {len(message)} LAST\r\n"
        )
        self._write(commands.encode("ascii") + message, "MAIL")
        return await self._pipelined(_CHUNKED)

    async def _pipelined(self, expected: tuple[tuple[str, tuple[int, ...]], ...]) -> SmtpReply:
        """Read the replies to pipelined commands and return the last one; raise the first
        refusal among them once the replies after it are read too (the session stays in
        step)."""
        refusal: SmtpRefused | None = None
        reply = SmtpReply(0, "")
        for verb, accepted in expected:
            try:
                reply = await self._read(verb)
            except OSError:
                if refusal is not None:  # the relay hung up after refusing: that is the news
                    self.close()
                    raise refusal from None
                raise
            if reply.code not in accepted and refusal is None:
                refusal = SmtpRefused(verb, reply)
                if reply.code == 421:  # closing: no further replies are coming
                    self.close()
                    raise refusal
            if verb == "DATA" and reply.code == 354 and refusal is not None:
                # RFC 2920 3.1: the relay took DATA although the envelope failed; an empty
                # message ends it (and is refused: no recipient).
                await self._exchange(b".\r\n", "message")
        if refusal is not None:
            raise refusal
        return reply

    async def _accepted(self, payload: bytes) -> SmtpReply:
        reply = await self._exchange(payload, "message")
        if reply.code != 250:
            raise SmtpRefused("message", reply)
        return reply

    async def rset(self) -> None:
        reply = await self._exchange(b"RSET\r\n", "RSET")
        if reply.code != 250:
            raise SmtpRefused("RSET", reply)

    async def noop(self) -> None:
        reply = await self._exchange(b"NOOP\r\n", "NOOP")
        if reply.code != 250:
            raise SmtpRefused("NOOP", reply)

    async def quit(self) -> None:
        """Say QUIT and close, whatever the relay answers."""
        try:
            await self._exchange(b"QUIT\r\n", "QUIT")
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()

    async def _hello(self, name: str) -> None:
        reply = await self._exchange(f"EHLO {name}\r\n".encode("ascii"), "EHLO")
        if 500 <= reply.code < 600:  # an old relay without ESMTP
            reply = await self._exchange(f"HELO {name}\r\n".encode("ascii"), "HELO")
            if reply.code != 250:
                raise SmtpRefused("HELO", reply)
            self.extensions = {}
            return
        if reply.code != 250:
            raise SmtpRefused("EHLO", reply)
        self.extensions = {}
        for line in reply.message.split("\n")[1:]:  # the first line is the relay's name
            keyword, _, parameters = line.strip().partition(" ")
            self.extensions[keyword.upper()] = parameters
        for keyword, parameters in list(self.extensions.items()):
            if keyword.startswith("AUTH=") and "AUTH" not in self.extensions:
                # Old relays wrote "AUTH=PLAIN LOGIN" (draft syntax) instead of "AUTH PLAIN".
                self.extensions["AUTH"] = f"{keyword[5:]} {parameters}".strip()

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        if "STARTTLS" not in self.extensions:
            # Never fall back to clear text: the offer may have been stripped on the way.
            raise SmtpProtocolError("the relay does not offer STARTTLS")
        reply = await self._exchange(b"STARTTLS\r\n", "STARTTLS")
        if reply.code != 220:
            raise SmtpRefused("STARTTLS", reply)
        if self._buffer or self._pending:
            # RFC 3207 5: what came before TLS cannot be trusted after it.
            raise SmtpProtocolError("data after the STARTTLS reply")
        async with asyncio.timeout(self._timeout_s):
            await self._writer.start_tls(context, server_hostname=self._host)

    async def _login(self, username: str, password: str) -> None:
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
            reply = await self._exchange(f"AUTH PLAIN {token}\r\n".encode("ascii"), "AUTH")
        elif "LOGIN" in mechanisms:
            reply = await self._exchange(b"AUTH LOGIN\r\n", "AUTH")
            for secret in (username, password):
                if reply.code != 334:
                    break
                line = base64.b64encode(secret.encode()) + b"\r\n"
                reply = await self._exchange(line, "AUTH")
        else:
            raise SmtpProtocolError(f"no AUTH mechanism in common (offered: {mechanisms})")
        if reply.code != 235:
            raise SmtpRefused("AUTH", reply)

    def _write(self, data: bytes, command: str) -> None:
        if self._writer.is_closing():
            raise SmtpDisconnected(command)
        if self._pending or self._buffer:
            # A reply nobody asked for (a relay out of step): the next command would be paired
            # with it, even a stale 250 with the end of a message. The session is not reused.
            self.close()
            raise SmtpProtocolError(f"unexpected reply before {command}")
        self._writer.write(data)

    async def _exchange(self, data: bytes, command: str) -> SmtpReply:
        """Write ``data`` (if any) and read one reply."""
        if data:
            self._write(data, command)
        return await self._read(command)

    async def _read(self, command: str) -> SmtpReply:
        """The next reply: from those already read, else from the socket (one read may bring
        the replies of several pipelined commands, which are kept for the next calls)."""
        if not self._pending:
            try:
                async with asyncio.timeout(self._timeout_s):
                    # Flow control only when the socket is slow: small writes never wait.
                    if self._writer.transport.get_write_buffer_size():
                        await self._writer.drain()
                    while not self._pending:
                        data = await self._reader.read(_READ_SIZE)
                        if not data:
                            raise SmtpDisconnected(command)
                        self._buffer += data
                        self._pending = parse_replies(self._buffer)
            except ConnectionError as error:
                self.close()
                if isinstance(error, SmtpDisconnected):
                    raise
                # Reset by the relay: closed like an end of file, and told apart from a
                # connection that could not be made.
                raise SmtpDisconnected(command) from error
            except BaseException:
                self.close()
                raise
        return self._pending.pop(0)
