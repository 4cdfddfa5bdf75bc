"""The in-memory ByteStream pair other tests build on must itself follow the streams.py contract."""

from __future__ import annotations

import asyncio
import os

import pytest

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.streams import (
    IncompleteRead,
    read_exactly,
    read_length_prefixed,
    read_uvarint,
    write_length_prefixed,
)
from tests.helpers import memory_pipe


async def test_both_directions():
    a, b = memory_pipe()
    await a.write(b"ping")
    assert await b.read() == b"ping"
    await b.write(b"pong")
    assert await a.read() == b"pong"


async def test_read_returns_at_most_n_in_order():
    a, b = memory_pipe()
    await a.write(b"abcdef")
    await a.write(b"gh")
    assert await b.read(4) == b"abcd"
    assert await b.read(100) == b"ef"  # never more than one write's worth, never more than n
    assert await b.read(1) == b"g"
    assert await b.read(1) == b"h"


async def test_read_size_must_be_positive():
    a, b = memory_pipe()
    with pytest.raises(ValueError):
        await b.read(0)


async def test_reader_waits_for_data():
    a, b = memory_pipe()
    task = asyncio.create_task(b.read())
    await asyncio.sleep(0)
    assert not task.done()
    await a.write(b"late")
    assert await task == b"late"


async def test_half_close_gives_eof_after_data():
    a, b = memory_pipe()
    await a.write(b"last words")
    await a.close_write()
    await a.close_write()  # idempotent
    assert await b.read() == b"last words"
    assert await b.read() == b""
    assert await b.read() == b""
    # the other half still works
    await b.write(b"reply")
    assert await a.read() == b"reply"


async def test_eof_wakes_a_waiting_reader():
    a, b = memory_pipe()
    task = asyncio.create_task(b.read())
    await asyncio.sleep(0)
    await a.close_write()
    assert await task == b""


async def test_write_after_close_write_fails():
    a, b = memory_pipe()
    await a.close_write()
    with pytest.raises(StreamClosed):
        await a.write(b"x")


async def test_close_closes_both_halves():
    a, b = memory_pipe()
    await b.write(b"unread")
    await a.write(b"bye")
    await a.close()
    assert await b.read() == b"bye"
    assert await b.read() == b""
    with pytest.raises(StreamClosed):
        await b.write(b"nobody reads this")  # like EPIPE: not dropped silently
    with pytest.raises(StreamClosed):
        await a.read()
    with pytest.raises(StreamClosed):
        await a.write(b"x")


async def test_reset_aborts_both_ends():
    a, b = memory_pipe()
    await a.write(b"in flight")
    a.reset()
    assert a.is_reset and b.is_reset
    for s in (a, b):
        with pytest.raises(StreamReset):
            await s.read()
        with pytest.raises(StreamReset):
            await s.write(b"x")
    # StreamReset is a StreamClosed, as the contract's callers expect
    assert issubclass(StreamReset, StreamClosed)


async def test_reset_wakes_blocked_reader_and_writer():
    a, b = memory_pipe(capacity=10)
    reader = asyncio.create_task(a.read())
    await a.write(b"0123456789")  # fills b's buffer
    writer = asyncio.create_task(a.write(b"more"))
    await asyncio.sleep(0)
    assert not reader.done() and not writer.done()
    b.reset()
    with pytest.raises(StreamReset):
        await reader
    with pytest.raises(StreamReset):
        await writer


async def test_backpressure():
    a, b = memory_pipe(capacity=100)
    await a.write(bytes(60))
    await a.write(bytes(60))  # accepted: the buffer was below capacity
    blocked = asyncio.create_task(a.write(b"x"))
    await asyncio.sleep(0.01)
    assert not blocked.done() and b.buffered == 120
    assert len(await b.read(60)) == 60
    await asyncio.wait_for(blocked, 1)
    assert b.buffered == 61


async def test_close_wakes_blocked_writer_on_the_other_end():
    a, b = memory_pipe(capacity=1)
    await a.write(b"x")
    writer = asyncio.create_task(a.write(b"y"))
    await asyncio.sleep(0)
    await b.close()
    with pytest.raises(StreamClosed):
        await writer


async def test_writes_are_copied():
    a, b = memory_pipe()
    buf = bytearray(b"original")
    await a.write(buf)
    await a.write(memoryview(buf)[:4])
    buf[:] = b"CHANGED!"
    assert await b.read() == b"original"
    assert await b.read() == b"orig"


async def test_empty_write_is_a_no_op():
    a, b = memory_pipe()
    await a.write(b"")
    await a.write(b"x")
    assert await b.read() == b"x"


async def test_max_read_and_stream_helpers():
    a, b = memory_pipe(max_read=1)
    await write_length_prefixed(a, b"hello")
    await a.write(b"\x96\x01")  # varint 150
    await a.write(b"rest")
    assert await read_length_prefixed(b, 100) == b"hello"
    assert await read_uvarint(b) == 150
    assert await read_exactly(b, 4) == b"rest"
    await a.close_write()
    assert await read_uvarint(b, allow_eof=True) is None


async def test_read_exactly_reports_early_eof():
    a, b = memory_pipe()
    await a.write(b"abc")
    await a.close_write()
    with pytest.raises(IncompleteRead):
        await read_exactly(b, 4)


async def test_large_transfer_integrity():
    a, b = memory_pipe(capacity=4096)
    data = os.urandom(1 << 20)

    async def send():
        for off in range(0, len(data), 10_000):
            await a.write(data[off : off + 10_000])
        await a.close_write()

    async def receive():
        parts = []
        while chunk := await b.read(3000):
            assert len(chunk) <= 3000
            parts.append(chunk)
        return b"".join(parts)

    _, got = await asyncio.gather(send(), receive())
    assert got == data
    assert a.bytes_written == b.bytes_read == len(data)


async def test_async_context_manager():
    a, b = memory_pipe()
    async with a:
        await a.write(b"x")
    assert await b.read() == b"x" and await b.read() == b""
    c, d = memory_pipe()
    with pytest.raises(RuntimeError):
        async with c:
            raise RuntimeError("boom")
    assert d.is_reset
