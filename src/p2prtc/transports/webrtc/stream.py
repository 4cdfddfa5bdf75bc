"""A libp2p stream on one data channel (specs: webrtc/README.md): the asyncio adapter of
`stream_core.StreamCore`, which holds the protocol state (FIN / FIN_ACK half-close, STOP_SENDING
never answered with a reset, RESET_STREAM, the bounded read buffer).

This module puts the core's frames on the channel, closes the channel when the core is done,
wakes readers, and makes writers wait while the channel's queue is above its high-water mark.
With a budget (`budget`, the stream's p2prtc.resources scope) it keeps the bytes reserved there
equal to the core's unread bytes (reserved as they arrive, given back as the application reads
or the stream ends); past the peer's or the system's memory budget the stream is reset with the
reason, as the core's own bound does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ...errors import StreamClosed
from ...resources import StreamScope
from ...streams import Stream
from . import framing
from .engine_base import DataChannel
from .stream_core import (
    RECEIVE_BUFFER_LIMIT,
    DataReceived,
    Event,
    FinAcknowledged,
    RemoteFinished,
    StreamCore,
    StreamFinished,
    StreamWasReset,
)

log = logging.getLogger(__name__)

# js waits this long for a FIN_ACK (@libp2p/webrtc DEFAULT_FIN_ACK_TIMEOUT); so do we.
FIN_ACK_TIMEOUT = 10.0
# How long close() waits for the remote to finish writing before giving up on it.
REMOTE_FIN_TIMEOUT = 10.0
OPEN_TIMEOUT = 10.0


class DataChannelStream(Stream):
    def __init__(self, channel: DataChannel, *,
                 on_finished: Callable[[DataChannelStream], None] | None = None,
                 receive_limit: int = RECEIVE_BUFFER_LIMIT,
                 budget: StreamScope | None = None) -> None:
        self.channel = channel
        self.protocol: str | None = None
        self._core = StreamCore(receive_limit=receive_limit)
        self._budget = budget
        self._budget_reason: str | None = None  # the reset reason when a budget ended it
        self._readable = asyncio.Event()
        self._fin_acked = asyncio.Event()
        self._remote_fin = asyncio.Event()
        self._on_finished = on_finished
        channel.on_message = self._on_message
        channel.on_close = self._on_channel_close

    @property
    def stream_id(self) -> int | None:
        return self.channel.id

    @property
    def buffered(self) -> int:
        """Unread bytes held for the reader (at most the core's receive_limit)."""
        return self._core.buffered

    @property
    def reset_reason(self) -> str | None:
        return self._core.reset_reason

    @property
    def finished(self) -> bool:
        """Done: nothing more travels on the channel."""
        return self._core.finished

    # -- from the channel and the core ---------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        self._apply(self._core.receive(data))

    def _on_channel_close(self) -> None:
        self._apply(self._core.channel_closed())

    def connection_closed(self, reason: str) -> None:
        """The connection under this stream ended (called by the muxer)."""
        self._apply(self._core.connection_closed(reason))

    def _charge(self) -> list[Event]:
        """Keep the budget's reservation at the core's unread bytes; over it: reset."""
        budget = self._budget
        if budget is None or budget.closed:
            return []
        events: list[Event] = []
        more = self._core.buffered - budget.memory
        if more > 0:
            refusal = budget.reserve_memory(more)
            if refusal is not None:  # over a memory budget: this stream ends, others go on
                self._budget_reason = refusal.reason
                events = self._core.reset(refusal.reason)
                line = budget.log_line(f"data channel {self.channel.id} "
                                       f"({self.protocol or 'no protocol yet'}) reset", refusal)
                if line is not None:
                    log.info("%s", line)
        less = budget.memory - self._core.buffered
        if less > 0:
            budget.release_memory(less)
        return events

    def _apply(self, events: list[Event]) -> None:
        if self._budget is not None:
            events = events + self._charge()  # before the frames: a reset goes out with them
        frames = self._core.frames_to_send()
        if frames:
            self._send_frames(frames)
        for ev in events:
            kind = type(ev)
            if kind is DataReceived:
                self._readable.set()
            elif kind is RemoteFinished:
                self._remote_fin.set()
                self._readable.set()
            elif kind is FinAcknowledged:
                self._fin_acked.set()
            elif isinstance(ev, StreamWasReset):
                self._readable.set()
                if (not ev.by_remote and ev.reason != "stream reset locally"
                        and ev.reason != self._budget_reason):  # (that one was logged)
                    log.warning("data channel %s (%s): %s; stream reset", self.channel.id,
                                self.protocol or "no protocol yet", ev.reason)
            elif kind is StreamFinished:
                if self._budget is not None:
                    self._budget.close()
                self.channel.close()
                if self._on_finished is not None:
                    self._on_finished(self)

    def _send_frames(self, frames: list[bytes]) -> None:
        if self.channel.ready_state != "open":
            return
        try:
            for frame in frames:
                self.channel.send(frame)
        except Exception as e:  # noqa: BLE001 - InvalidStateError while closing
            log.debug("data channel %s: could not send a flag: %s", self.channel.id, e)

    # -- reading -------------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        core = self._core
        while True:
            data = core.read(n)
            if data is not None:
                if self._budget is not None:
                    self._charge()  # gives back what was read
                return data
            self._readable.clear()
            await self._readable.wait()

    async def wait_remote_finished(self) -> None:
        """Until the remote has sent FIN (or the stream/channel ended)."""
        await self._remote_fin.wait()

    def close_read(self) -> None:
        """Read no more: drop what is buffered and tell the remote (STOP_SENDING)."""
        self._apply(self._core.close_read())

    # -- writing -------------------------------------------------------------------------------

    async def _ensure_writable(self) -> None:
        self._core.check_writable()
        if self.channel.ready_state != "open":
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    opened = await self.channel.wait_open()
            except TimeoutError:
                opened = False
            if not opened:
                raise StreamClosed(f"data channel is {self.channel.ready_state}")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._ensure_writable()
        view = memoryview(data)
        channel = self.channel
        send_data = self._core.send_data
        step = framing.MAX_DATA_SIZE
        for i in range(0, len(view), step):
            frame = send_data(view[i:i + step])  # raises once reset or stopped
            if channel.ready_state != "open":
                raise StreamClosed(f"data channel is {channel.ready_state}")
            channel.send(frame)
            if channel.buffered_amount > 0:
                await channel.drain()

    async def close_write(self) -> None:
        core = self._core
        if core.write_closed or core.reset_reason is not None:
            return
        if self.channel.ready_state == "connecting":
            await self._ensure_writable()
        self._apply(core.close_write())
        try:
            async with asyncio.timeout(FIN_ACK_TIMEOUT):
                await self._fin_acked.wait()
        except TimeoutError:
            log.debug("data channel %s: no FIN_ACK within %.0f s", self.channel.id, FIN_ACK_TIMEOUT)

    async def close(self) -> None:
        await self.close_write()
        core = self._core
        if not core.read_finished and core.reset_reason is None:
            # We will not read any more: tell the remote, then give it a moment to finish.
            self.close_read()
            try:
                async with asyncio.timeout(REMOTE_FIN_TIMEOUT):
                    await self._remote_fin.wait()
            except TimeoutError:
                pass
        self._apply(core.finish())

    def reset(self) -> None:
        self._apply(self._core.reset())
