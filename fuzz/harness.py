"""Helpers shared by the fuzz targets: drive our asyncio-facing decoders without an event loop.

The decoders under test are sans-I/O; where the public entry point is a coroutine over a
`ByteStream` (multistream-select, length-prefixed reads), the target runs it over
`BufferStream`, which never suspends, so `run_sync` can step the coroutine to its end.
"""

from __future__ import annotations

from p2prtc.streams import ByteStream


class Suspended(AssertionError):
    """A coroutine tried to wait although its input was all there: it would hang."""


def run_sync(coro):
    """Run a coroutine that must not suspend; return its result (or raise its exception)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise Suspended("coroutine suspended on a stream that never blocks")


class BufferStream(ByteStream):
    """A ByteStream over fixed input: reads return at most `max_read` bytes, then b"" (EOF)."""

    def __init__(self, data: bytes, max_read: int = 1 << 30) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._max_read = max(1, max_read)
        self.written = bytearray()
        self.closed = False

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    async def read(self, n: int = 65536) -> bytes:
        if n <= 0:
            raise ValueError("read size must be positive")
        take = min(n, self._max_read, self.remaining)
        chunk = bytes(self._data[self._pos:self._pos + take])
        self._pos += take
        return chunk

    async def write(self, data) -> None:
        self.written += data

    async def close_write(self) -> None:
        self.closed = True

    async def close(self) -> None:
        self.closed = True

    def reset(self) -> None:
        self.closed = True


def split_points(data: bytes, seed: int) -> list[bytes]:
    """Cut data into chunks whose sizes follow from seed (1..seed+1 bytes, cycling), so a
    streaming decoder sees every kind of split: one byte at a time, or everything at once."""
    if seed == 0 or not data:
        return [data]
    out = []
    pos = 0
    step = 0
    while pos < len(data):
        size = 1 + (seed * (step + 1)) % (seed + 7)
        out.append(data[pos:pos + size])
        pos += size
        step += 1
    return out
