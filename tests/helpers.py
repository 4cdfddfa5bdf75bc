"""Test helpers shared by unit and interop tests."""

from __future__ import annotations

import asyncio
from collections import deque

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.streams import ByteStream

# Bytes a pipe direction holds before write() waits (a small socket buffer's worth).
DEFAULT_PIPE_CAPACITY = 256 * 1024


class _Direction:
    """One direction of a pipe: what the writer end has sent and the reader end not yet read."""

    __slots__ = ("chunks", "offset", "size", "capacity", "eof", "reader_closed", "reset",
                 "readable", "writable")

    def __init__(self, capacity: int) -> None:
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # bytes of chunks[0] already read
        self.size = 0  # unread bytes
        self.capacity = capacity
        self.eof = False  # the writer closed its write half
        self.reader_closed = False  # the reader closed the stream: further writes fail
        self.reset = False
        self.readable = asyncio.Event()  # data, eof or reset
        self.writable = asyncio.Event()  # room, reader closed or reset
        self.writable.set()

    def wake_all(self) -> None:
        self.readable.set()
        self.writable.set()


class MemoryStream(ByteStream):
    """One end of `memory_pipe()`. Follows the ByteStream contract in p2prtc.streams:

    - read(n) returns 1..n bytes, b"" once the other end closed its write half and everything
      was read; raises StreamReset after a reset by either end, StreamClosed after our close().
    - write() waits while the other end has `capacity` or more unread bytes (backpressure),
      raises StreamClosed after our close_write()/close() or the other end's close(), and
      StreamReset after a reset. Data is copied, so callers may reuse their buffers.
    - close_write() sends EOF; close() closes both halves; reset() aborts both ends at once.

    `max_read`, if set, caps what one read() returns, to exercise partial reads.
    """

    def __init__(self, incoming: _Direction, outgoing: _Direction, name: str,
                 max_read: int | None = None) -> None:
        self._in = incoming
        self._out = outgoing
        self.name = name
        self.max_read = max_read
        self._write_closed = False
        self._closed = False
        self.bytes_written = 0
        self.bytes_read = 0

    def __repr__(self) -> str:
        return f"<MemoryStream {self.name}>"

    @property
    def is_reset(self) -> bool:
        return self._in.reset

    @property
    def buffered(self) -> int:
        """Bytes written to us and not read yet."""
        return self._in.size

    async def read(self, n: int = 65536) -> bytes:
        if n <= 0:
            raise ValueError("read size must be positive")
        if self.max_read is not None:
            n = min(n, self.max_read)
        d = self._in
        while True:
            if d.reset:
                raise StreamReset(f"{self.name}: stream was reset")
            if self._closed:
                raise StreamClosed(f"{self.name}: stream is closed")
            if d.chunks:
                break
            if d.eof:
                return b""
            d.readable.clear()
            await d.readable.wait()
        chunk = d.chunks[0]
        off = d.offset
        if len(chunk) - off <= n:
            d.chunks.popleft()
            d.offset = 0
            data = chunk[off:] if off else chunk
        else:
            data = chunk[off : off + n]
            d.offset = off + n
        d.size -= len(data)
        self.bytes_read += len(data)
        if d.size < d.capacity:
            d.writable.set()
        return data

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        d = self._out
        while True:
            if d.reset:
                raise StreamReset(f"{self.name}: stream was reset")
            if self._write_closed:
                raise StreamClosed(f"{self.name}: stream is closed for writing")
            if d.reader_closed:
                raise StreamClosed(f"{self.name}: the other end closed the stream")
            if d.size < d.capacity:
                break
            d.writable.clear()
            await d.writable.wait()
        if not data:
            return
        chunk = bytes(data)
        d.chunks.append(chunk)
        d.size += len(chunk)
        self.bytes_written += len(chunk)
        d.readable.set()

    async def close_write(self) -> None:
        if self._write_closed:
            return
        self._write_closed = True
        self._out.eof = True
        self._out.wake_all()

    async def close(self) -> None:
        await self.close_write()
        if self._closed:
            return
        self._closed = True
        d = self._in
        d.reader_closed = True
        d.chunks.clear()
        d.offset = 0
        d.size = 0
        d.wake_all()

    def reset(self) -> None:
        for d in (self._in, self._out):
            d.reset = True
            d.wake_all()


def memory_pipe(
    capacity: int = DEFAULT_PIPE_CAPACITY, *, max_read: int | None = None
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory ByteStreams: what one writes the other reads."""
    a_to_b = _Direction(capacity)
    b_to_a = _Direction(capacity)
    a = MemoryStream(b_to_a, a_to_b, "a", max_read)
    b = MemoryStream(a_to_b, b_to_a, "b", max_read)
    return a, b


async def public_verdict(events, timeout: float = 30):
    """The first `Reachability` event of a Node's `events()` iterator that needs no relay (an
    AutoNAT v2 verdict of "public"); AssertionError when none comes within `timeout`."""
    from p2prtc import api_events

    try:
        async with asyncio.timeout(timeout):
            async for e in events:
                if isinstance(e, api_events.Reachability) and not e.needs_relay:
                    assert e.reachability == "public", e
                    return e
    except TimeoutError:
        pass
    raise AssertionError(f"no public reachability verdict within {timeout} s")
