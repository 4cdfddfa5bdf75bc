"""A connection to one remote peer: secured, multiplexed, authenticated.

Transports build it; the host starts it (so inbound streams find their handlers from the first
frame) and tracks it until it closes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import NegotiationFailed, ProtocolError, StreamClosed
from .identity import PeerId, PublicKey
from .multiaddr import Multiaddr
from .wire import multistream

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# A stream that does not finish protocol negotiation in this time is reset.
NEGOTIATION_TIMEOUT = 10.0


class Stream(Protocol):
    """A stream of a connection, as protocol handlers and `new_stream` callers see it: a
    `streams.ByteStream` plus the protocol negotiated on it and its connection. Yamux streams
    and WebRTC data-channel streams satisfy it; `protocol` and `connection` are set only by
    `Connection.new_stream` (outbound) and `Connection.accept_stream` (inbound)."""

    protocol: str | None
    connection: Connection | None

    async def read(self, n: int = 65536) -> bytes: ...
    async def write(self, data: bytes | bytearray | memoryview) -> None: ...
    async def close_write(self) -> None: ...
    async def close(self) -> None: ...
    def reset(self) -> None: ...


class Muxer(Protocol):
    """What a Connection needs from yamux, or from the WebRTC data-channel muxer."""

    on_stream: Callable[[Any], None] | None
    close_reason: str | None

    def start(self) -> None: ...
    async def open_stream(self) -> Any: ...
    async def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


class Connection:
    def __init__(
        self,
        *,
        muxer: Muxer,
        remote_peer: PeerId,
        remote_public_key: PublicKey | None,
        local_addr: Multiaddr,
        remote_addr: Multiaddr,
        direction: str,
        transport: str,
        limited: bool = False,
        security: str | None = "/noise",
        muxer_protocol: str | None = "/yamux/1.0.0",
    ) -> None:
        self.id = next(_ids)
        self.muxer = muxer
        self.remote_peer = remote_peer
        self.remote_public_key = remote_public_key
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.direction = direction  # "inbound" | "outbound"
        self.transport = transport  # "tcp" | "ws" | "circuit" | "webrtc" | "webrtc-direct"
        self.limited = limited
        self.security = security
        self.muxer_protocol = muxer_protocol
        self.opened_at = time.monotonic()
        # Filled by the transport when useful to show (e.g. ICE candidate pair of a WebRTC conn).
        self.details: dict[str, Any] = {}
        # Set by the circuit transport on relayed connections: bytes and time used against the
        # relay's limits (a transports.circuit_limit.CircuitMeter).
        self.limit_meter: Any = None
        # Set by a transport that can say in words why this connection ended (a relay's limit,
        # the relay gone): called once with the muxer's low-level reason.
        self.explain_end: Callable[[str], str] | None = None
        self._end_reason: str | None = None

    def start(self, on_stream: Callable[[Any], None]) -> None:
        self.muxer.on_stream = on_stream
        self.muxer.start()

    @property
    def is_closed(self) -> bool:
        return self.muxer.close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self.muxer.close_reason

    @property
    def end_reason(self) -> str | None:
        """Why the connection ended, in words where the transport knows more than the muxer
        (None while open). Worked out on first use, which should be when it ends."""
        low = self.muxer.close_reason
        if low is None or self.explain_end is None:
            return low
        if self._end_reason is None:
            self._end_reason = self.explain_end(low)
        return self._end_reason

    async def new_stream(self, protocols: Sequence[str]) -> Stream:
        """Open a stream and negotiate one of `protocols` (in order of preference)."""
        stream: Stream = await self.muxer.open_stream()
        stream.connection = self
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                stream.protocol = await multistream.select_outbound(stream, protocols)
        except BaseException:
            stream.reset()
            raise
        return stream

    async def accept_stream(self, stream: Stream,
                            supports: Callable[[str], bool]) -> str | None:
        """Negotiate an inbound stream to a protocol `supports`; returns it (also set as
        `stream.protocol`), or None after resetting a stream whose negotiation failed."""
        stream.connection = self
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                proto = await multistream.handle_inbound(stream, supports)
        except (TimeoutError, NegotiationFailed, ProtocolError, StreamClosed) as e:
            log.debug("inbound stream from %s: negotiation failed: %s", self.remote_peer.short(), e)
            stream.reset()
            return None
        stream.protocol = proto
        return proto

    async def close(self) -> None:
        await self.muxer.close()

    async def wait_closed(self) -> None:
        await self.muxer.wait_closed()

    def __repr__(self) -> str:
        flags = " limited" if self.limited else ""
        return (f"<Connection #{self.id} {self.direction} {self.transport}{flags} "
                f"{self.remote_peer.short()} {self.remote_addr}>")
