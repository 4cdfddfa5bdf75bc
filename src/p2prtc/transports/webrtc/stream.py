"""A libp2p stream on one data channel (specs: webrtc/README.md).

Half-close with FIN / FIN_ACK, STOP_SENDING (never answered with a reset), RESET_STREAM.
Writes wait while the channel's queue is above the high-water mark; reads return buffered data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ...errors import ProtocolError, StreamClosed, StreamReset
from ...streams import ByteStream
from . import framing
from .engine import DataChannel

log = logging.getLogger(__name__)

# js waits this long for a FIN_ACK; so do we.
FIN_ACK_TIMEOUT = 10.0
# How long close() waits for the remote to finish writing before giving up on it.
REMOTE_FIN_TIMEOUT = 10.0
OPEN_TIMEOUT = 10.0


class DataChannelStream(ByteStream):
    def __init__(self, channel: DataChannel, *, on_finished=None) -> None:
        self.channel = channel
        self.protocol: str | None = None
        self.connection = None
        self._decoder = framing.FrameDecoder()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._read_eof = False  # remote sent FIN (or the channel closed)
        self._reset_reason: str | None = None
        self._write_closed = False  # we sent FIN
        self._remote_stopped = False  # remote sent STOP_SENDING
        self._we_stopped = False  # we sent STOP_SENDING: discard incoming data
        self._fin_acked = asyncio.Event()
        self._remote_fin = asyncio.Event()
        self._on_finished = on_finished
        self._finished = False
        channel.on_message = self._on_message
        channel.on_close = self._on_channel_close

    @property
    def stream_id(self) -> int | None:
        return self.channel.id

    @property
    def buffered(self) -> int:
        return self._buffered

    # -- inbound ---------------------------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as e:
            log.info("data channel %s: %s; resetting the stream", self.channel.id, e)
            self._abort(f"bad frame from remote: {e}", send_reset=True)
            return
        for flag, payload in frames:
            if payload and not self._read_eof and self._reset_reason is None and not self._we_stopped:
                self._chunks.append(payload)
                self._buffered += len(payload)
                self._readable.set()
            if flag is None:
                continue
            if flag == framing.FIN:
                self._read_eof = True
                self._remote_fin.set()
                self._readable.set()
                self._send_flag(framing.FIN_ACK)
            elif flag == framing.FIN_ACK:
                self._fin_acked.set()
            elif flag == framing.STOP_SENDING:
                self._remote_stopped = True
            elif flag == framing.RESET_STREAM:
                self._abort("stream reset by remote", send_reset=False)
        self._maybe_finish()

    def _on_channel_close(self) -> None:
        if not self._read_eof:
            self._read_eof = True
            self._remote_fin.set()
        self._fin_acked.set()
        self._readable.set()
        self._done()

    def _abort(self, reason: str, *, send_reset: bool) -> None:
        if self._reset_reason is None:
            self._reset_reason = reason
        if send_reset:
            self._send_flag(framing.RESET_STREAM)
        self._readable.set()
        self._fin_acked.set()
        self._remote_fin.set()
        self.channel.close()
        self._done()

    def _maybe_finish(self) -> None:
        # Both directions finished: the channel has nothing more to carry.
        if self._write_closed and self._fin_acked.is_set() and self._remote_fin.is_set():
            self.channel.close()
            self._done()

    def _done(self) -> None:
        if not self._finished:
            self._finished = True
            if self._on_finished is not None:
                self._on_finished(self)

    def _send_flag(self, flag: int) -> None:
        if self.channel.ready_state == "open":
            try:
                self.channel.send(framing.encode_flag(flag))
            except Exception as e:  # InvalidStateError while closing
                log.debug("could not send %s: %s", framing.FLAG_NAMES[flag], e)

    async def read(self, n: int = 65536) -> bytes:
        while not self._chunks:
            if self._reset_reason is not None:
                raise StreamReset(self._reset_reason)
            if self._read_eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks[0]
        if len(chunk) <= n:
            self._chunks.popleft()
        else:
            self._chunks[0] = chunk[n:]
            chunk = chunk[:n]
        self._buffered -= len(chunk)
        return chunk

    # -- outbound --------------------------------------------------------------------------

    async def _ensure_writable(self) -> None:
        if self._reset_reason is not None:
            raise StreamReset(self._reset_reason)
        if self._write_closed:
            raise StreamClosed("stream is closed for writing")
        if self._remote_stopped:
            raise StreamClosed("remote stopped reading this stream")
        if self.channel.ready_state != "open":
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    opened = await self.channel.wait_open()
            except TimeoutError:
                opened = False
            if not opened:
                raise StreamClosed(f"data channel is {self.channel.ready_state}")

    async def write(self, data) -> None:
        await self._ensure_writable()
        view = memoryview(data)
        channel = self.channel
        for i in range(0, len(view), framing.MAX_DATA_SIZE):
            if self._reset_reason is not None:
                raise StreamReset(self._reset_reason)
            if channel.ready_state != "open":
                raise StreamClosed(f"data channel is {channel.ready_state}")
            channel.send(framing.encode_data(view[i:i + framing.MAX_DATA_SIZE]))
            if channel.buffered_amount > 0:
                await channel.drain()

    async def close_write(self) -> None:
        if self._write_closed or self._reset_reason is not None:
            return
        if self.channel.ready_state == "connecting":
            await self._ensure_writable()
        self._write_closed = True
        self._send_flag(framing.FIN)
        try:
            async with asyncio.timeout(FIN_ACK_TIMEOUT):
                await self._fin_acked.wait()
        except TimeoutError:
            log.debug("data channel %s: no FIN_ACK within %.0f s", self.channel.id, FIN_ACK_TIMEOUT)
        self._maybe_finish()

    async def close(self) -> None:
        await self.close_write()
        if not self._remote_fin.is_set() and self._reset_reason is None:
            # We will not read any more: tell the remote, then give it a moment to finish.
            self._we_stopped = True
            self._chunks.clear()
            self._buffered = 0
            self._send_flag(framing.STOP_SENDING)
            try:
                async with asyncio.timeout(REMOTE_FIN_TIMEOUT):
                    await self._remote_fin.wait()
            except TimeoutError:
                pass
        self.channel.close()
        self._done()

    def reset(self) -> None:
        self._abort("stream reset locally", send_reset=True)
