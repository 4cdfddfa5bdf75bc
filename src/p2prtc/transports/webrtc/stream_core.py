"""The state of one libp2p stream on a data channel, sans-I/O (specs: webrtc/README.md).

Inputs: each data-channel message (`receive`), the channel's end (`channel_closed`) and the
application's calls (`send_data`, `close_write`, `close_read`, `reset`, `read`, `finish`).
Outputs: frames to put on the channel (`frames_to_send`) and events (returned by the inputs).
`stream.DataChannelStream` is the asyncio adapter (it sends the frames, closes the channel and
wakes readers and writers); `/webrtc` and webrtc-direct share both.

Data channels have no per-stream flow control, so unread data is held here: past
RECEIVE_BUFFER_LIMIT unread bytes the stream asks the remote to stop (STOP_SENDING), resets it
(RESET_STREAM) and frees the buffer, as js-libp2p does. Only that stream ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ...errors import ProtocolError, StreamClosed, StreamReset
from . import framing

# Unread inbound bytes per stream before it is reset: js-libp2p's DEFAULT_MAX_READ_BUFFER_LENGTH
# (4 MB = 4 * 2**20, @libp2p/utils abstract-message-stream.ts, which every @libp2p/webrtc
# stream uses); js aborts past it too (`>`), so a stream js may send us is one we accept.
RECEIVE_BUFFER_LIMIT = 4 * 1024 * 1024


# -- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DataReceived:
    """`size` bytes were added to the read buffer."""

    size: int


@dataclass(frozen=True, slots=True)
class RemoteFinished:
    """The remote will send no more (its FIN, or the channel ended): reads end after the buffer."""


@dataclass(frozen=True, slots=True)
class FinAcknowledged:
    """The remote got our FIN (FIN_ACK), or can no longer send one (channel ended, reset)."""


@dataclass(frozen=True, slots=True)
class RemoteStoppedReading:
    """The remote sent STOP_SENDING: our writes now fail (never answered with a reset)."""


@dataclass(frozen=True, slots=True)
class StreamWasReset:
    """The stream is aborted: writes raise StreamReset(reason), reads too once the buffer is
    read. `by_remote` when the remote reset it (or its connection ended); otherwise we did, said
    so with RESET_STREAM and dropped the buffer."""

    reason: str
    by_remote: bool


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """Nothing more will travel on the channel: close it and forget the stream (exactly once)."""


Event = (DataReceived | RemoteFinished | FinAcknowledged | RemoteStoppedReading | StreamWasReset
         | StreamFinished)

_FIN_ACK_FRAME = framing.encode_flag(framing.FIN_ACK)
_RESET_FRAME = framing.encode_flag(framing.RESET_STREAM)
_STOP_FRAME = framing.encode_flag(framing.STOP_SENDING)
_FIN_FRAME = framing.encode_flag(framing.FIN)


class StreamCore:
    """One stream's read buffer and both half-close state machines."""

    def __init__(self, *, receive_limit: int = RECEIVE_BUFFER_LIMIT) -> None:
        self.receive_limit = receive_limit
        self._decoder = framing.FrameDecoder()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._frames: list[bytes] = []
        self.read_finished = False  # remote FIN (or the channel ended)
        self.read_stopped = False  # we sent STOP_SENDING: incoming data is dropped
        self.write_closed = False  # we sent FIN
        self.fin_acked = False
        self.remote_stopped = False  # remote sent STOP_SENDING
        self.reset_reason: str | None = None
        self.finished = False

    @property
    def buffered(self) -> int:
        """Unread bytes held for the application."""
        return self._buffered

    def frames_to_send(self) -> list[bytes]:
        """The frames produced since the last call, in order (FIN_ACK, STOP_SENDING, RESET...)."""
        frames = self._frames
        if frames:
            self._frames = []
        return frames

    # -- from the channel ---------------------------------------------------------------------

    def receive(self, message: bytes) -> list[Event]:
        """One data-channel message (it may hold several frames, or part of one)."""
        if self.finished:
            return []
        try:
            frames = self._decoder.feed(message)
        except ProtocolError as e:
            return self._abort(f"bad frame from remote: {e}", by_remote=False)
        events: list[Event] = []
        for flag, payload in frames:
            if payload and not (self.read_finished or self.read_stopped or self.finished):
                self._chunks.append(payload)
                self._buffered += len(payload)
                if self._buffered > self.receive_limit:
                    return events + self._overflow()
                events.append(DataReceived(len(payload)))
            if flag is None:
                continue
            if flag == framing.FIN:
                if not self.read_finished:
                    self.read_finished = True
                    events.append(RemoteFinished())
                self._frames.append(_FIN_ACK_FRAME)
            elif flag == framing.FIN_ACK:
                if not self.fin_acked:
                    self.fin_acked = True
                    events.append(FinAcknowledged())
            elif flag == framing.STOP_SENDING:
                if not self.remote_stopped:
                    self.remote_stopped = True
                    events.append(RemoteStoppedReading())
            elif flag == framing.RESET_STREAM:
                return events + self._abort("stream reset by remote", by_remote=True)
        if self.write_closed:
            events += self._maybe_finish()
        return events

    def channel_closed(self) -> list[Event]:
        """The data channel ended: end of stream (what is buffered stays readable)."""
        events: list[Event] = []
        if not self.read_finished:
            self.read_finished = True
            events.append(RemoteFinished())
        if not self.fin_acked:
            self.fin_acked = True
            events.append(FinAcknowledged())
        return events + self._finish()

    def connection_closed(self, reason: str) -> list[Event]:
        """The connection under the stream ended."""
        return self._abort(f"connection closed: {reason}", by_remote=True)

    # -- from the application -----------------------------------------------------------------

    def read(self, n: int) -> bytes | None:
        """Up to n buffered bytes; b"" at the end of the stream; None when there is nothing yet.
        Raises StreamReset once the stream is reset and what arrived before is read."""
        chunks = self._chunks
        if not chunks:
            if self.reset_reason is not None:
                raise StreamReset(self.reset_reason)
            return b"" if self.read_finished else None
        chunk = chunks[0]
        if len(chunk) <= n:
            chunks.popleft()
        else:
            chunks[0] = chunk[n:]
            chunk = chunk[:n]
        self._buffered -= len(chunk)
        return chunk

    def check_writable(self) -> None:
        """Raise the error a write gets now (reset, our FIN sent, remote STOP_SENDING)."""
        if self.reset_reason is not None:
            raise StreamReset(self.reset_reason)
        if self.write_closed:
            raise StreamClosed("stream is closed for writing")
        if self.remote_stopped:
            raise StreamClosed("remote stopped reading this stream")

    def send_data(self, data: bytes | memoryview) -> bytes:
        """The frame carrying `data` (at most framing.MAX_DATA_SIZE bytes), if writing is allowed."""
        self.check_writable()
        return framing.encode_data(data)

    def close_write(self) -> list[Event]:
        """Half-close: FIN (then wait for FIN_ACK). Nothing to do after a reset or a second call."""
        if self.write_closed or self.reset_reason is not None:
            return []
        self.write_closed = True
        self._frames.append(_FIN_FRAME)
        return self._maybe_finish()

    def close_read(self) -> list[Event]:
        """We will read no more: drop the buffer, drop later data, and say STOP_SENDING (unless
        the remote has finished anyway)."""
        if self.read_stopped or self.reset_reason is not None:
            return []
        self.read_stopped = True
        self._chunks.clear()
        self._buffered = 0
        if not self.read_finished:
            self._frames.append(_STOP_FRAME)
        return []

    def reset(self, reason: str = "stream reset locally") -> list[Event]:
        return self._abort(reason, by_remote=False)

    def finish(self) -> list[Event]:
        """The application is done with the stream (close() after its bounded waits)."""
        return self._finish()

    # -- internals ----------------------------------------------------------------------------

    def _overflow(self) -> list[Event]:
        size = self._buffered
        self._frames.append(_STOP_FRAME)
        return self._abort(f"inbound buffer passed {self.receive_limit} bytes unread "
                           f"({size} buffered; the reader does not keep up)", by_remote=False)

    def _abort(self, reason: str, *, by_remote: bool) -> list[Event]:
        if self.reset_reason is not None or self.finished:
            return []
        self.reset_reason = reason
        if not by_remote:
            # We end it: nobody reads the buffer any more. (A remote reset leaves what arrived
            # before it readable, as a connection's end does.)
            self._chunks.clear()
            self._buffered = 0
            self._frames.append(_RESET_FRAME)
        events: list[Event] = [StreamWasReset(reason, by_remote)]
        if not self.fin_acked:
            self.fin_acked = True
            events.append(FinAcknowledged())
        if not self.read_finished:
            self.read_finished = True
            events.append(RemoteFinished())
        return events + self._finish()

    def _maybe_finish(self) -> list[Event]:
        # Both directions finished: the channel has nothing more to carry.
        if self.write_closed and self.fin_acked and self.read_finished:
            return self._finish()
        return []

    def _finish(self) -> list[Event]:
        if self.finished:
            return []
        self.finished = True
        return [StreamFinished()]
