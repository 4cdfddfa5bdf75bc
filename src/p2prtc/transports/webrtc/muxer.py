"""Streams of a WebRTC connection: one data channel each (the Muxer interface of Connection).

Shared by /webrtc and webrtc-direct. A remote's channels are bounded: at most MAX_INBOUND_STREAMS
open at once (counting those that wait for the connection to start, at most MAX_EARLY_CHANNELS);
more are closed at once, unread. Each stream bounds its own read buffer (stream_core).
With a budget (`resources`, the connection's p2prtc.resources scope) each stream and its unread
bytes are reserved in the peer's scope too: a stream over it is refused (inbound: closed at
once; outbound: ResourceLimitExceeded), and all is given back when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ...errors import StreamClosed
from ...resources import ConnectionScope, Refusal, ResourceLimitExceeded
from .engine_base import DataChannel
from .signaling import watch_init_channel
from .stream import DataChannelStream

log = logging.getLogger(__name__)

# Channels labelled "init" carry the ICE set-up of /webrtc, never a stream (js ignores them too).
INIT_LABEL = "init"
# Streams the remote may have open at once: the same cap as our yamux (MAX_INBOUND_STREAMS, 256:
# rust-libp2p's yamux allows 512 in total, go and js refuse inbound streams past 1000). The
# channels past it are closed unread, so 5,000 opened at once hold no more than 256.
MAX_INBOUND_STREAMS = 256
# Of which channels opened before the connection is handed to the host (js-libp2p keeps 10
# "early streams", DEFAULT_MAX_EARLY_STREAMS; a remote has no reason to open more during setup).
MAX_EARLY_CHANNELS = 16
OPEN_TIMEOUT = 10.0


class MuxedPeerConnection(Protocol):
    """What the muxer uses of a peer connection: an engine's (`engine_base.PeerConnection`) or
    webrtc-direct's (`webrtc_direct.peer.DirectPeerConnection`)."""

    on_datachannel: Callable[[DataChannel], None] | None
    on_state: Callable[[str], None] | None

    def create_channel(self, label: str = "") -> DataChannel: ...
    async def close(self) -> None: ...


class DataChannelMuxer:
    def __init__(self, pc: MuxedPeerConnection, *,
                 resources: ConnectionScope | None = None) -> None:
        self.pc = pc
        self._budget = resources
        self.on_stream: Callable[[DataChannelStream], None] | None = None
        self.close_reason: str | None = None
        self._closed = asyncio.Event()
        self._early: list[DataChannel] = []
        self._started = False
        self.streams: set[DataChannelStream] = set()
        self._inbound: set[DataChannelStream] = set()
        self.refused_channels = 0  # remote channels closed at once (over a cap)
        self._releasing: asyncio.Future[None] | None = None  # pc.close() after ICE failed
        # Take channels from the first moment: a remote may open its first streams before the
        # connection object exists (js does identify at once).
        pc.on_datachannel = self._on_datachannel
        pc.on_state = self._on_state

    def _on_datachannel(self, channel: DataChannel) -> None:
        if channel.label == INIT_LABEL:
            watch_init_channel(channel)  # the initiator closes it once connected
            return
        if not self._started and len(self._early) >= MAX_EARLY_CHANNELS:
            self._refuse(channel, f"{MAX_EARLY_CHANNELS} channels opened before the "
                                  "connection was set up")
            return
        if len(self._inbound) + len(self._early) >= MAX_INBOUND_STREAMS:
            self._refuse(channel, f"the peer has {MAX_INBOUND_STREAMS} streams open")
            return
        if not self._started:
            self._early.append(channel)
            return
        self._accept(channel)

    def _refuse(self, channel: DataChannel, why: str) -> None:
        self.refused_channels += 1
        n = self.refused_channels
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: a flood of channels is a few lines, not thousands
            log.info("closing data channel %s at once: %s (%d refused on this connection)",
                     channel.id, why, n)
        channel.on_message = _discard  # frees anything it had buffered; keeps nothing more
        channel.close()

    @property
    def going_away(self) -> bool:
        """No new streams (a data-channel connection has no GoAway: only its end)."""
        return self.close_reason is not None

    @property
    def inbound_streams(self) -> int:
        """Streams the remote opened that are still open (or waiting for the connection)."""
        return len(self._inbound) + len(self._early)

    @property
    def buffered(self) -> int:
        """Unread bytes held for all streams of this connection."""
        return sum(s.buffered for s in self.streams)

    def _forget(self, stream: DataChannelStream) -> None:
        self.streams.discard(stream)
        self._inbound.discard(stream)

    def _accept(self, channel: DataChannel) -> None:
        budget = None
        if self._budget is not None:
            reserved = self._budget.open_stream("inbound")
            if isinstance(reserved, Refusal):  # over a budget: refuse this stream only
                self._refuse(channel, reserved.reason)
                return
            budget = reserved
        stream = DataChannelStream(channel, on_finished=self._forget, budget=budget)
        self.streams.add(stream)
        self._inbound.add(stream)
        if self.on_stream is not None:
            self.on_stream(stream)
        else:
            stream.reset()

    def _on_state(self, state: str) -> None:
        if state in ("failed", "closed") and self.close_reason is None:
            # "closed" before our own close(): the peer closed it (SCTP/DTLS ended, both engines)
            self._mark_closed("ICE connection failed (peer unreachable)" if state == "failed"
                              else "the peer left")
        if state == "failed" and self._releasing is None:
            # Nothing uses a failed peer connection again, and only close() releases its ICE
            # sockets: without this every connection whose peer vanished kept one UDP socket
            # (bench/soak.py found it: one fd per dialer that left).
            self._releasing = asyncio.ensure_future(self.pc.close())
            self._releasing.add_done_callback(_log_close_error)

    def _mark_closed(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        for s in list(self.streams):
            s.connection_closed(reason)
        if self._budget is not None:
            self._budget.close()  # the connection's reservations, its streams' too
        self._closed.set()

    def start(self) -> None:
        self._started = True
        early, self._early = self._early, []
        for channel in early:
            self._accept(channel)

    async def open_stream(self) -> DataChannelStream:
        if self.close_reason is not None:
            raise StreamClosed(f"connection is closed: {self.close_reason}")
        budget = None
        if self._budget is not None:
            reserved = self._budget.open_stream("outbound")
            if isinstance(reserved, Refusal):
                raise ResourceLimitExceeded(reserved)
            budget = reserved
        try:
            channel = self.pc.create_channel("")
        except BaseException:
            if budget is not None:
                budget.close()
            raise
        stream = DataChannelStream(channel, on_finished=self._forget, budget=budget)
        self.streams.add(stream)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                opened = await channel.wait_open()
        except TimeoutError:
            opened = False
        if not opened:
            stream.reset()
            raise StreamClosed("data channel did not open")
        return stream

    async def close(self) -> None:
        if self.close_reason is None:
            self._mark_closed("closed locally")
        await self.pc.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()


def _discard(data: bytes) -> None:
    pass


def _log_close_error(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("closing a failed peer connection: %s", task.exception())
