"""The chat protocol of js-libp2p's private-to-private example: `/libp2p/examples/chat/1.0.0`,
raw UTF-8 with no framing (each chunk read is one message). The dialer opens the stream when it
first sends; the listener keeps the inbound stream and answers on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..errors import P2PError
from ..identity import PeerId
from ..streams import Stream

if TYPE_CHECKING:
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


class ChatStream(Protocol):
    """What a chat stream needs: the internal `streams.Stream` and the public `node.Stream`."""

    async def read(self, n: int = ...) -> bytes: ...

    def reset(self) -> None: ...


K = TypeVar("K", bound=Hashable)  # the peer key: PeerId (a Network) or str (a Node)
S = TypeVar("S", bound=ChatStream)


class ChatStreams(Generic[K, S]):
    """The per-peer stream bookkeeping both chat front ends share (`ChatService` on a Network,
    `nodechat.NodeChat` on a Node): one stream per peer (a newer inbound one replaces it),
    opened once on first send even when sends race, each read to its end, every message to
    `on_message(peer, text)`."""

    def __init__(self, on_message: Callable[[K, str], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.on_message = on_message
        self._spawn = spawn
        self.streams: dict[K, S] = {}
        self._opening: dict[K, asyncio.Future[S]] = {}
        self._reading: dict[S, asyncio.Event] = {}  # stream -> set when its reader ends

    async def adopt(self, peer: K, stream: S) -> None:
        """An inbound chat stream from `peer`: it replaces the old one; read it to its end."""
        old = self.streams.get(peer)
        self.streams[peer] = stream
        if old is not None and old is not stream:
            old.reset()
        await self._read_loop(peer, stream)

    def being_read(self) -> list[S]:
        """The streams whose readers have not ended yet."""
        return list(self._reading)

    async def drained(self, streams: Callable[[S], bool], timeout: float = DRAIN_TIMEOUT) -> None:
        """Return once the readers of the streams picked by `streams` have ended (every message
        that arrived on them reported), or after `timeout`: a connection that just closed may
        still hold received messages in its streams' buffers."""
        ends = [done.wait() for stream, done in self._reading.items() if streams(stream)]
        if ends:
            try:
                await asyncio.wait_for(asyncio.gather(*ends), timeout)
            except TimeoutError:
                log.debug("%d chat streams still being read after %.0f s", len(ends), timeout)

    async def _read_loop(self, peer: K, stream: S) -> None:
        self._reading[stream] = done = asyncio.Event()
        try:
            while data := await stream.read(MAX_MESSAGE):
                self.on_message(peer, data.decode("utf-8", errors="replace"))
        except P2PError as e:
            log.debug("chat with %s ended: %s", peer, e)
        finally:
            done.set()
            del self._reading[stream]
            if self.streams.get(peer) is stream:
                del self.streams[peer]

    async def stream_for(self, peer: K, open_stream: Callable[[], Awaitable[S]]) -> S:
        """The chat stream to `peer`, opened with `open_stream()` (once) when there is none."""
        stream = self.streams.get(peer)
        if stream is not None:
            return stream
        pending = self._opening.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[S] = asyncio.get_running_loop().create_future()
        self._opening[peer] = fut
        try:
            stream = await open_stream()
            self.streams[peer] = stream
            self._spawn(self._read_loop(peer, stream))
            fut.set_result(stream)
            return stream
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            del self._opening[peer]


def check_size(text: str) -> bytes:
    """`text` as one chat message; ValueError when it is longer than MAX_MESSAGE bytes."""
    data = text.encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
    return data


class ChatService:
    """Chat on a Network (the lab agents and tests): keeps one chat stream per peer and reports
    every message received."""

    def __init__(self, host: Network, on_message: Callable[[PeerId, str], None]) -> None:
        self.host = host
        self._chats: ChatStreams[PeerId, Stream] = ChatStreams(on_message, host.spawn)
        # Allowed on limited connections: when no direct path exists, Python peers still chat
        # over the relay (js only chats on direct connections).
        host.handle(CHAT, self._handle, allow_limited=True)

    @property
    def streams(self) -> dict[PeerId, Stream]:
        """The chat stream of each peer."""
        return self._chats.streams

    async def _handle(self, stream: Stream) -> None:
        if stream.connection is None:  # (set for every inbound stream)
            stream.reset()
            return
        await self._chats.adopt(stream.connection.remote_peer, stream)

    async def send(self, peer: PeerId, text: str) -> None:
        data = check_size(text)
        stream = await self._chats.stream_for(
            peer, lambda: self.host.new_stream(peer, [CHAT], allow_limited=True))
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
