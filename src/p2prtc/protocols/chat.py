"""The chat protocol of js-libp2p's private-to-private example: `/libp2p/examples/chat/1.0.0`,
raw UTF-8 with no framing (each chunk read is one message). The dialer opens the stream when it
first sends; the listener keeps the inbound stream and answers on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import P2PError
from ..identity import PeerId
from ..streams import Stream

if TYPE_CHECKING:
    from ..connection import Connection
    from ..network import Network

log = logging.getLogger(__name__)

CHAT = "/libp2p/examples/chat/1.0.0"
# One message per read; js sends a message in one write, which arrives as one chunk.
MAX_MESSAGE = 64 * 1024
# How long `drained` waits for what a closed connection delivered to be read out.
DRAIN_TIMEOUT = 2.0


class NotSent(P2PError):
    """The message was not written: the relayed connection it would go over has no room left
    under the relay's limits (it would be cut off and lost on the way)."""


class ChatService:
    """Keeps one chat stream per peer and reports every message received."""

    def __init__(self, host: Network, on_message: Callable[[PeerId, str], None],
                 on_closed: Callable[[PeerId, str], None] | None = None) -> None:
        self.host = host
        self.on_message = on_message
        self.on_closed = on_closed
        self.streams: dict[PeerId, Stream] = {}
        self._opening: dict[PeerId, asyncio.Future[Stream]] = {}
        self._reading: dict[Stream, asyncio.Event] = {}  # stream -> set when its reader ends
        # Allowed on limited connections: when no direct path exists, Python peers still chat
        # over the relay (js only chats on direct connections).
        host.handle(CHAT, self._handle, allow_limited=True)

    async def _handle(self, stream: Stream) -> None:
        if stream.connection is None:  # (set for every inbound stream)
            stream.reset()
            return
        peer = stream.connection.remote_peer
        old = self.streams.get(peer)
        self.streams[peer] = stream
        if old is not None and old is not stream:
            old.reset()
        await self._read_loop(peer, stream)

    def reading(self, conn: Connection) -> bool:
        """Whether a chat stream on `conn` is still being read."""
        return any(getattr(stream, "connection", None) is conn for stream in self._reading)

    async def drained(self, conn: Connection, timeout: float = DRAIN_TIMEOUT) -> None:
        """Return once every message that arrived on `conn` has been reported (its chat streams'
        readers have ended), or after `timeout`: a connection that just closed may still hold
        received messages in its streams' buffers."""
        ends = [done.wait() for stream, done in self._reading.items()
                if getattr(stream, "connection", None) is conn]
        if ends:
            try:
                await asyncio.wait_for(asyncio.gather(*ends), timeout)
            except TimeoutError:
                log.debug("chat streams on %r still being read after %.0f s", conn, timeout)

    async def _read_loop(self, peer: PeerId, stream: Stream) -> None:
        reason = "chat stream closed"
        self._reading[stream] = done = asyncio.Event()
        try:
            while True:
                data = await stream.read(MAX_MESSAGE)
                if not data:
                    break
                self.on_message(peer, data.decode("utf-8", errors="replace"))
        except P2PError as e:
            reason = f"chat stream ended: {e}"
        finally:
            done.set()
            del self._reading[stream]
            if self.streams.get(peer) is stream:
                del self.streams[peer]
                if self.on_closed is not None:
                    self.on_closed(peer, reason)

    async def _stream_for(self, peer: PeerId) -> Stream:
        stream = self.streams.get(peer)
        if stream is not None:
            return stream
        pending = self._opening.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._opening[peer] = fut
        try:
            stream = await self.host.new_stream(peer, [CHAT], allow_limited=True)
            self.streams[peer] = stream
            self.host.spawn(self._read_loop(peer, stream))
            fut.set_result(stream)
            return stream
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            del self._opening[peer]

    async def send(self, peer: PeerId, text: str) -> None:
        data = text.encode("utf-8")
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
        stream = await self._stream_for(peer)
        conn = stream.connection  # (set by new_stream/accept_stream)
        meter = conn.limit_meter if conn is not None else None
        if meter is not None:
            why = meter.refuse(len(data), time.monotonic())
            if why is not None:
                if meter.data_used_up() and conn is not None:
                    # nothing useful fits any more: end it now rather than at the relay's cut
                    # (frees the relay's slot; the peer's own count tells it why)
                    self.host.spawn(conn.close())
                raise NotSent(why)
        await stream.write(data)
