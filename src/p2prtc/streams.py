"""The byte-stream interface every layer speaks, and helpers that read from it.

A `ByteStream` is reliable, ordered, bidirectional and can half-close. TCP and WebSocket
connections, Noise sessions, yamux streams, relayed circuits and WebRTC data channels all
implement it, so each upper layer (multistream-select, Noise, yamux, application protocols)
runs on any lower one.

Contract:
- `read(n)` returns between 1 and n bytes, or b"" once the remote has closed its write half
  (and everything before it has been read). It raises `StreamReset` if the stream was reset.
- `write(data)` returns once the data is accepted by the layer below; it waits (backpressure)
  while the peer's window or our send buffer is full. Never drops data. Raises `StreamClosed`
  after close_write/close/reset.
- `close_write()` sends end-of-stream; reading still works.
- `close()` closes both halves gracefully; `reset()` aborts at once.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

from .errors import ProtocolError
from .wire.varint import MAX_VARINT_LEN

if TYPE_CHECKING:
    from .connection import Connection


class ByteStream(abc.ABC):
    @abc.abstractmethod
    async def read(self, n: int = 65536) -> bytes: ...

    @abc.abstractmethod
    async def write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abc.abstractmethod
    async def close_write(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def reset(self) -> None: ...

    async def __aenter__(self) -> ByteStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        else:
            self.reset()


class Stream(ByteStream):
    """A stream of a connection, as protocol handlers and `new_stream` callers see it: a
    ByteStream plus the protocol negotiated on it and its connection. Yamux streams and WebRTC
    data-channel streams are Streams; both fields are set only by `Connection.new_stream`
    (outbound) and `Connection.accept_stream` (inbound)."""

    protocol: str | None = None
    connection: Connection | None = None


class IncompleteRead(ProtocolError):
    """The stream ended in the middle of a message."""


async def read_exactly(stream: ByteStream, n: int) -> bytes:
    """Read exactly n bytes; raise IncompleteRead if the stream ends first."""
    if n == 0:
        return b""
    chunk = await stream.read(n)
    if len(chunk) == n:
        return chunk
    parts = [chunk]
    got = len(chunk)
    while chunk and got < n:
        chunk = await stream.read(n - got)
        parts.append(chunk)
        got += len(chunk)
    if got < n:
        raise IncompleteRead(f"stream ended after {got} of {n} bytes")
    return b"".join(parts)


@overload
async def read_uvarint(stream: ByteStream, *, allow_eof: Literal[False] = False) -> int: ...
@overload
async def read_uvarint(stream: ByteStream, *, allow_eof: bool) -> int | None: ...


async def read_uvarint(stream: ByteStream, *, allow_eof: bool = False) -> int | None:
    """Read one unsigned varint byte by byte (never reads past it).

    Returns None on a clean end of stream before the first byte when allow_eof is set.
    """
    value = 0
    for i in range(MAX_VARINT_LEN):
        b = await stream.read(1)
        if not b:
            if i == 0 and allow_eof:
                return None
            raise IncompleteRead("stream ended inside a varint")
        byte = b[0]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ProtocolError("varint is not minimally encoded")
            return value
    raise ProtocolError("varint longer than 9 bytes")


@overload
async def read_length_prefixed(
    stream: ByteStream, max_size: int, *, allow_eof: Literal[False] = False
) -> bytes: ...
@overload
async def read_length_prefixed(
    stream: ByteStream, max_size: int, *, allow_eof: bool
) -> bytes | None: ...


async def read_length_prefixed(
    stream: ByteStream, max_size: int, *, allow_eof: bool = False
) -> bytes | None:
    """Read one uvarint-length-prefixed message of at most max_size bytes."""
    length = await read_uvarint(stream, allow_eof=allow_eof)
    if length is None:
        return None
    if length > max_size:
        raise ProtocolError(f"message of {length} bytes exceeds the limit of {max_size}")
    return await read_exactly(stream, length)


async def write_length_prefixed(stream: ByteStream, payload: bytes) -> None:
    from .wire.varint import encode_uvarint

    await stream.write(encode_uvarint(len(payload)) + payload)
