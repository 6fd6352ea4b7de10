"""The demo's SMTP sink: what a relay answers, including commands sent together (PIPELINING).

A real socket on an OS-chosen port; the client is written by hand, so that the bytes on the wire
are the ones under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aiguillage_demo.peers import SmtpSink


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = SmtpSink()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _replies(reader: asyncio.StreamReader, count: int) -> list[str]:
    """The next ``count`` replies, a multi-line reply as one."""
    replies: list[str] = []
    while len(replies) < count:
        lines = []
        while True:
            line = (await asyncio.wait_for(reader.readline(), 5.0)).decode()
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                break
        replies.append("\n".join(lines))
    return replies


async def test_pipelined_commands_are_answered_in_order_and_the_message_kept(
    sink: SmtpSink,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    try:
        (greeting,) = await _replies(reader, 1)
        assert greeting.startswith("220")
        writer.write(b"EHLO client.test\r\n")
        (ehlo,) = await _replies(reader, 1)
        assert "PIPELINING" in ehlo
        writer.write(
            b"MAIL FROM:<sender@a.test> SIZE=100\r\nRCPT TO:<one@b.test>\r\n"
            b"RCPT TO:<two@b.test>\r\nDATA\r\n"
        )
        codes = [reply[:3] for reply in await _replies(reader, 4)]
        assert codes == ["250", "250", "250", "354"]
        writer.write(b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
        codes = [reply[:3] for reply in await _replies(reader, 2)]
        assert codes == ["250", "221"]
    finally:
        writer.close()
    (mail,) = sink.received
    assert (mail.mail_from, mail.rcpt_tos) == ("sender@a.test", ["one@b.test", "two@b.test"])
    assert mail.raw == b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n"


async def test_a_refused_recipient_is_not_kept_and_data_needs_one(sink: SmtpSink) -> None:
    sink.refuse_next = 1
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    try:
        await _replies(reader, 1)
        writer.write(b"EHLO c\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<one@b.test>\r\nDATA\r\nRSET\r\n")
        codes = [reply[:3] for reply in await _replies(reader, 5)]
        assert codes == ["250", "250", "451", "503", "250"]
    finally:
        writer.close()
    assert (sink.refused, sink.received) == (1, [])


async def test_commands_out_of_order_or_unknown_are_refused(sink: SmtpSink) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    try:
        await _replies(reader, 1)
        writer.write(b"RCPT TO:<x@b.test>\r\nMAIL FROM:bad\r\nVRFY x\r\n")
        codes = [reply[:3] for reply in await _replies(reader, 3)]
        assert codes == ["503", "501", "502"]
    finally:
        writer.close()
