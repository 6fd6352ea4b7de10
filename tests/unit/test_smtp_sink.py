"""The demo's SMTP sink: what a relay answers, including commands sent together (PIPELINING)
and messages sent in chunks (CHUNKING).

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


async def test_a_message_in_chunks_is_kept_byte_for_byte_whatever_the_reads(
    sink: SmtpSink,
) -> None:
    first, last = b"Subject: x\r\n\r\n.no dot-stuffing", b" here\r\n.\r\nend\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    try:
        await _replies(reader, 1)
        writer.write(b"EHLO c\r\n")
        (ehlo,) = await _replies(reader, 1)
        assert "CHUNKING" in ehlo
        wire = (
            b"MAIL FROM:<s@a.test>\r\nRCPT TO:<one@b.test>\r\n"
            + f"BDAT {len(first)}\r\n".encode()
            + first
            + f"BDAT {len(last)} LAST\r\n".encode()
            + last
            + b"NOOP\r\n"
        )
        for at in range(0, len(wire), 7):  # cut anywhere, a chunk's size line included
            writer.write(wire[at : at + 7])
            await writer.drain()
        replies = await _replies(reader, 5)
        assert [reply[:3] for reply in replies] == ["250", "250", "250", "250", "250"]
        assert replies[2] == f"250 2.0.0 {len(first)} octets received"  # the chunk, not a read
    finally:
        writer.close()
    (mail,) = sink.received
    assert mail.raw == first + last


async def test_a_chunk_after_a_refused_envelope_is_read_and_refused_and_the_session_goes_on(
    sink: SmtpSink,
) -> None:
    sink.refuse_next = 1
    message = b"Subject: x\r\n\r\nbody\r\n"
    bdat = f"BDAT {len(message)} LAST\r\n".encode() + message
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    try:
        await _replies(reader, 1)
        writer.write(
            b"EHLO c\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<one@b.test>\r\n"
            + bdat
            + b"MAIL FROM:<s@a.test>\r\nRCPT TO:<two@b.test>\r\n"
            + bdat
        )
        codes = [reply[:3] for reply in await _replies(reader, 7)]
        assert codes == ["250", "250", "451", "503", "250", "250", "250"]
    finally:
        writer.close()
    (mail,) = sink.received
    assert (mail.rcpt_tos, mail.raw) == (["two@b.test"], message)


async def test_a_sink_without_chunking_neither_offers_nor_takes_bdat() -> None:
    sink = SmtpSink(chunking=False)
    await sink.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
        try:
            await _replies(reader, 1)
            writer.write(b"EHLO c\r\nBDAT 0 LAST\r\n")
            ehlo, bdat = await _replies(reader, 2)
            assert "CHUNKING" not in ehlo
            assert bdat.startswith("502")
        finally:
            writer.close()
    finally:
        await sink.stop()
