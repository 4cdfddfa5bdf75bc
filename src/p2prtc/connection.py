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
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import NegotiationFailed, ProtocolError, StreamClosed
from .identity import PeerId, PublicKey
from .multiaddr import Multiaddr
from .streams import Stream
from .wire import multistream

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# A stream that does not finish protocol negotiation in this time is reset.
NEGOTIATION_TIMEOUT = 10.0


@dataclass(frozen=True)
class CandidatePair:
    """The ICE candidate pair a WebRTC connection uses: types ("host", "srflx", "prflx",
    "relay") and "ip:port" addresses ("" when unknown)."""
    local: str
    remote: str
    local_addr: str
    remote_addr: str

    def to_dict(self) -> dict[str, str]:
        return {"local": self.local, "remote": self.remote, "local_addr": self.local_addr,
                "remote_addr": self.remote_addr}


@dataclass(frozen=True)
class RelayLimit:
    """A relay's limit on a relayed connection (0: none): seconds and bytes."""
    duration: int
    data: int

    def to_dict(self) -> dict[str, int]:
        return {"duration": self.duration, "data": self.data}


@dataclass
class ConnectionDetails:
    """What the transport that made a connection knows of it that is worth showing; each
    transport fills its own fields, the rest stay None."""

    # circuit: the relay's limit (None: the relay set none)
    limit: RelayLimit | None = None
    # /webrtc: "direct" or "turn", the candidate pair, the TURN server's relayed address when
    # on "turn", and the relayed connection the upgrade ran over
    path: str | None = None
    candidate_pair: CandidatePair | None = None
    turn_relay: str | None = None
    relayed_via: str | None = None
    # /webrtc: ms to the relayed connection (dialer) and for the upgrade over it
    relayed_ms: float | None = None
    upgrade_ms: float | None = None
    # webrtc-direct: the ICE ufrag and the handshake version (1, 2)
    ufrag: str | None = None
    webrtc_direct_version: int | None = None
    # ms per phase of the connection's setup (signaling: offer_ms, answer_ms, connected_ms, ...;
    # webrtc-direct: its stages, handshake_ms)
    timings: dict[str, float] = field(default_factory=dict)

    def limit_dict(self) -> dict[str, int] | None:
        return self.limit.to_dict() if self.limit is not None else None

    def candidate_pair_dict(self) -> dict[str, str] | None:
        return self.candidate_pair.to_dict() if self.candidate_pair is not None else None


class Muxer(Protocol):
    """What a Connection needs from yamux, or from the WebRTC data-channel muxer."""

    on_stream: Callable[[Any], None] | None
    close_reason: str | None

    @property
    def going_away(self) -> bool:
        """No new streams: closed, closing, or a GoAway sent or received."""
        ...

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
        self.details = ConnectionDetails()
        # Set by the circuit transport on relayed connections: bytes and time used against the
        # relay's limits (a transports.circuit_limit.CircuitMeter).
        self.limit_meter: Any = None
        # Set by a transport that can say in words why this connection ended (a relay's limit,
        # the relay gone): called once with the muxer's low-level reason.
        self.explain_end: Callable[[str], str] | None = None
        self._end_reason: str | None = None

    def start(self, on_stream: Callable[[Stream], None]) -> None:
        self.muxer.on_stream = on_stream
        self.muxer.start()

    @property
    def is_closed(self) -> bool:
        return self.muxer.close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self.muxer.close_reason

    @property
    def going_away(self) -> bool:
        """Takes no new streams any more (closed, closing, or its muxer got or sent a GoAway):
        not one to pick for new work."""
        return self.muxer.going_away

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
