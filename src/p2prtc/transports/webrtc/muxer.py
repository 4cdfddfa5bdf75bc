"""Streams of a WebRTC connection: one data channel each (the Muxer interface of Connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ...errors import StreamClosed
from .engine import DataChannel, PeerConnection
from .signaling import watch_init_channel
from .stream import DataChannelStream

log = logging.getLogger(__name__)

# Channels labelled "init" carry the ICE set-up of /webrtc, never a stream (js ignores them too).
INIT_LABEL = "init"
MAX_STREAMS = 512
OPEN_TIMEOUT = 10.0


class DataChannelMuxer:
    def __init__(self, pc: PeerConnection) -> None:
        self.pc = pc
        self.on_stream: Callable[[DataChannelStream], None] | None = None
        self.close_reason: str | None = None
        self._closed = asyncio.Event()
        self._early: list[DataChannel] = []
        self._started = False
        self.streams: set[DataChannelStream] = set()
        self._releasing: asyncio.Future | None = None  # pc.close() after ICE failed
        # Take channels from the first moment: a remote may open its first streams before the
        # connection object exists (js does identify at once).
        pc.on_datachannel = self._on_datachannel
        pc.on_state = self._on_state

    def _on_datachannel(self, channel: DataChannel) -> None:
        if channel.label == INIT_LABEL:
            watch_init_channel(channel)  # the initiator closes it once connected
            return
        if len(self.streams) >= MAX_STREAMS:
            log.info("closing data channel %s: %d streams open", channel.id, MAX_STREAMS)
            channel.close()
            return
        if not self._started:
            self._early.append(channel)
            return
        self._accept(channel)

    def _accept(self, channel: DataChannel) -> None:
        stream = DataChannelStream(channel, on_finished=self.streams.discard)
        self.streams.add(stream)
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
            s._abort(f"connection closed: {reason}", send_reset=False)
        self._closed.set()

    def start(self) -> None:
        self._started = True
        early, self._early = self._early, []
        for channel in early:
            self._accept(channel)

    async def open_stream(self) -> DataChannelStream:
        if self.close_reason is not None:
            raise StreamClosed(f"connection is closed: {self.close_reason}")
        channel = self.pc.create_channel("")
        stream = DataChannelStream(channel, on_finished=self.streams.discard)
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


def _log_close_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("closing a failed peer connection: %s", task.exception())
