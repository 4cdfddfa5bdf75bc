"""Yamux (`/yamux/1.0.0`) protocol core, sans-I/O: bytes in -> events, calls -> bytes out.

Wire format: hashicorp/yamux spec.md, as spoken by go-yamux, rust `yamux` and
@chainsafe/libp2p-yamux. Every frame is a 12-byte header (version, type, flags, stream id,
length); DATA frames carry `length` bytes of payload, the other types use `length` as a window
delta (WINDOW_UPDATE), an opaque value (PING) or an error code (GO_AWAY).

`YamuxSession` is the protocol: no I/O, no clock other than the injectable one used for RTT and
window auto-tuning. `p2prtc.muxer.yamux` runs it over a `ByteStream` (the asyncio adapter).

Interop facts this module is built on (read from the implementations, 2025/2026):
- Receive windows: every stream starts with 256 KiB in each direction (spec). A window update
  carrying SYN or ACK grants credit on top of that. Windows are re-opened once half of the window
  was consumed by the application and auto-tuned (doubled) when that took less than two round
  trips, up to 16 MiB (rust: 2 RTT, js/go: 4 RTT, all cap at 16 MiB by default).
- Data beyond the granted window is a connection error everywhere (GoAway protocol error).
- Frames for unknown (already forgotten) streams are ignored by rust, go and js: a stream we reset
  or closed may still have frames in flight. So they are skipped here too, not answered.
- rust rejects DATA bodies over 1 MiB and splits its own at 16 KiB; go splits at 64 KiB; js sends
  up to the whole send window in one frame. We send at most 64 KiB per frame and accept up to the
  receive window we granted.
- rust and js treat an unsolicited PING ACK as a protocol error: we only ever ACK their SYNs.
- In a WINDOW_UPDATE with RST, go puts an error code in the length field: never a window delta.
- GoAway: rust closes the connection on any GoAway, go and js end the session; none starts new
  streams afterwards. Stream-count caps: rust 512 streams in total (and it kills the connection
  when the remote exceeds it), js and go 1000 inbound. We accept 256 inbound and open at most 256
  outbound, so a rust peer never sees more than 512.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProtocolError, StreamClosed

log = logging.getLogger(__name__)

PROTOCOL_ID = "/yamux/1.0.0"

HEADER = struct.Struct(">BBHII")
HEADER_LEN = HEADER.size  # 12
VERSION = 0

TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3

FLAG_SYN = 0x1
FLAG_ACK = 0x2
FLAG_FIN = 0x4
FLAG_RST = 0x8

GO_AWAY_NORMAL = 0
GO_AWAY_PROTOCOL_ERROR = 1
GO_AWAY_INTERNAL_ERROR = 2
GO_AWAY_NAMES = {0: "normal", 1: "protocol error", 2: "internal error"}

MAX_UINT32 = 0xFFFFFFFF

# Initial window of every stream in both directions; fixed by the spec, not a choice.
DEFAULT_WINDOW = 256 * 1024
# Largest receive window auto-tuning may grant one stream (js and go default, rust's practical max).
MAX_WINDOW = 16 * 1024 * 1024
# All streams of one connection together may grow beyond DEFAULT_WINDOW by at most this much, so a
# peer that first makes us read fast and then stalls us cannot pin more memory than this plus
# DEFAULT_WINDOW per stream (rust has the same budget, 1 GiB by default; we are more frugal).
MAX_CONNECTION_WINDOW_GROWTH = 64 * 1024 * 1024
# Largest DATA payload we send in one frame: go's MaxMessageSize. rust refuses bodies over 1 MiB.
MAX_SEND_FRAME = 64 * 1024
# Concurrent inbound streams; more are refused with RST (go and js do the same at 1000). rust
# allows 512 in total and ends the connection beyond, hence 256 + 256.
MAX_INBOUND_STREAMS = 256
MAX_OUTBOUND_STREAMS = 256
# Pings of ours awaiting a pong; older ones are forgotten (their pong is then just ignored).
MAX_OUTSTANDING_PINGS = 16


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The remote opened a stream (SYN); it was accepted and ACKed."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamAcked:
    """The remote acknowledged a stream we opened."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Payload for a stream; one DATA frame may arrive as several of these."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The remote closed its sending half (FIN) after everything delivered before."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream was reset, by the remote or because it broke the stream's protocol.

    (An event; the exception a reader sees is `p2prtc.errors.StreamReset`.)
    """

    stream_id: int
    reason: str = "reset by remote"


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Our send window on this stream grew."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingReceived:
    opaque: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    opaque: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    code: int


Event = (
    StreamOpened
    | StreamAcked
    | DataReceived
    | StreamEnded
    | StreamReset
    | WindowOpened
    | PingReceived
    | PongReceived
    | GoAwayReceived
)


class TooManyStreams(StreamClosed):
    """Opening another outbound stream would exceed MAX_OUTBOUND_STREAMS."""


# ---------------------------------------------------------------------------------------------
# Sans-I/O session


class _StreamState:
    __slots__ = (
        "stream_id",
        "inbound",
        "acked",
        "send_window",
        "recv_credit",
        "recv_window",
        "unconsumed",
        "local_closed",
        "remote_closed",
        "last_update",
    )

    def __init__(self, stream_id: int, inbound: bool, recv_window: int, now: float) -> None:
        self.stream_id = stream_id
        self.inbound = inbound
        self.acked = inbound
        self.send_window = DEFAULT_WINDOW
        self.recv_credit = recv_window  # bytes the remote may still send
        self.recv_window = recv_window  # target window (auto-tuned)
        self.unconsumed = 0  # received but not yet consumed by the application
        self.local_closed = False
        self.remote_closed = False
        self.last_update = now


class YamuxSession:
    """The yamux protocol state of one connection, without I/O.

    Feed received bytes to `receive_data` and act on the returned events; send what
    `data_to_send` returns. Raises `ProtocolError` when the remote breaks the protocol; the
    connection is then unusable (send `go_away(GO_AWAY_PROTOCOL_ERROR)` and close it).
    """

    def __init__(
        self,
        is_client: bool,
        *,
        initial_window: int = DEFAULT_WINDOW,
        max_window: int = MAX_WINDOW,
        max_streams: int = MAX_INBOUND_STREAMS,
        max_outbound_streams: int = MAX_OUTBOUND_STREAMS,
        max_connection_window_growth: int = MAX_CONNECTION_WINDOW_GROWTH,
        max_send_frame: int = MAX_SEND_FRAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not DEFAULT_WINDOW <= initial_window <= max_window <= MAX_UINT32:
            raise ValueError("need 256 KiB <= initial_window <= max_window < 4 GiB")
        if max_send_frame < 1:
            raise ValueError("max_send_frame must be positive")
        self.is_client = is_client
        self.initial_window = initial_window
        self.max_window = max_window
        self.max_streams = max_streams
        self.max_outbound_streams = max_outbound_streams
        self.max_connection_window_growth = max_connection_window_growth
        self.max_send_frame = max_send_frame
        self._clock = clock

        self._streams: dict[int, _StreamState] = {}
        self._next_id = 1 if is_client else 2
        self._inbound_count = 0
        self._outbound_count = 0
        self._window_growth = 0  # sum over streams of recv_window - initial_window

        self._out: list[bytes] = []
        self._out_len = 0

        # receive parser state
        self._hdr_buf = bytearray()
        self._body_left = 0
        self._body_stream: int | None = None  # deliver body to this stream, None = skip it
        self._body_fin = False

        self._next_ping = 0
        self._pings: dict[int, float] = {}
        self.rtt: float | None = None

        self.local_go_away: int | None = None
        self.remote_go_away: int | None = None
        self._failed: str | None = None

    # -- introspection -------------------------------------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        return self._out_len > 0 or bool(self._out)

    @property
    def pending_bytes(self) -> int:
        return self._out_len

    @property
    def failed(self) -> str | None:
        """Why the session failed (the remote broke the protocol), None while it is usable."""
        return self._failed

    def has_stream(self, stream_id: int) -> bool:
        return stream_id in self._streams

    @property
    def stream_ids(self) -> list[int]:
        return list(self._streams)

    def send_window(self, stream_id: int) -> int:
        st = self._streams.get(stream_id)
        return st.send_window if st is not None and not st.local_closed else 0

    def recv_window(self, stream_id: int) -> int:
        """Current (auto-tuned) receive window size of a stream, 0 if unknown."""
        st = self._streams.get(stream_id)
        return st.recv_window if st is not None else 0

    # -- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_len = 0
        return data

    def _frame(self, type_: int, flags: int, stream_id: int, length: int) -> None:
        self._out.append(HEADER.pack(VERSION, type_, flags, stream_id, length))
        self._out_len += HEADER_LEN

    # -- local actions -------------------------------------------------------------------

    def open_stream(self) -> int:
        if self._failed is not None:
            raise StreamClosed(f"yamux session failed: {self._failed}")
        if self.local_go_away is not None:
            raise StreamClosed("yamux session is going away")
        if self.remote_go_away is not None:
            raise StreamClosed("remote yamux session is going away")
        if self._outbound_count >= self.max_outbound_streams:
            raise TooManyStreams(f"already {self._outbound_count} outbound streams open")
        stream_id = self._next_id
        if stream_id > MAX_UINT32:
            raise StreamClosed("stream ids exhausted")
        self._next_id += 2
        now = self._clock()
        self._streams[stream_id] = _StreamState(stream_id, False, self.initial_window, now)
        self._outbound_count += 1
        # SYN at once (as go and js do): the remote learns of the stream even before data.
        self._frame(TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, self.initial_window - DEFAULT_WINDOW)
        return stream_id

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of data as the send window allows; return the number of bytes taken."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed:
            raise StreamClosed(f"stream {stream_id} is closed for writing")
        total = len(data)
        n = min(total, st.send_window)
        if n <= 0:
            return 0
        st.send_window -= n
        out = self._out
        pack = HEADER.pack
        max_frame = self.max_send_frame
        if n == total and n <= max_frame and type(data) is bytes:
            out.append(pack(VERSION, TYPE_DATA, 0, stream_id, n))
            out.append(data)
        else:
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            pos = 0
            while pos < n:
                size = min(max_frame, n - pos)
                out.append(pack(VERSION, TYPE_DATA, 0, stream_id, size))
                out.append(bytes(view[pos : pos + size]))  # copy: the caller may reuse its buffer
                pos += size
        frames = -(-n // max_frame)
        self._out_len += n + HEADER_LEN * frames
        return n

    def end_stream(self, stream_id: int) -> None:
        """Half-close: send FIN. No-op if already half-closed; StreamClosed if gone."""
        st = self._streams.get(stream_id)
        if st is None:
            raise StreamClosed(f"stream {stream_id} is closed")
        if st.local_closed:
            return
        st.local_closed = True
        self._frame(TYPE_WINDOW_UPDATE, FLAG_FIN, stream_id, 0)
        if st.remote_closed:
            self._forget(st)

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream (RST) and forget it. No-op for unknown streams."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0)
        self._forget(st)

    def consumed(self, stream_id: int, n: int) -> None:
        """The application has read n bytes of the stream: re-open the window when worthwhile."""
        st = self._streams.get(stream_id)
        if st is None or n <= 0:
            return
        st.unconsumed -= min(n, st.unconsumed)
        if st.remote_closed:
            return  # the remote sends nothing more: no window to re-open
        delta = st.recv_window - st.recv_credit - st.unconsumed
        if delta < st.recv_window // 2:
            return
        now = self._clock()
        rtt = self.rtt
        if rtt is not None and st.recv_window < self.max_window and now - st.last_update < 2 * rtt:
            # The remote used half the window in under two round trips: the window, not the
            # link, limits it. Double it (rust's rule; js/go use 4 RTT), within the budget.
            budget = self.max_connection_window_growth - self._window_growth
            grow = min(st.recv_window, self.max_window - st.recv_window, budget)
            if grow > 0:
                st.recv_window += grow
                self._window_growth += grow
                delta += grow
        st.last_update = now
        st.recv_credit += delta
        self._frame(TYPE_WINDOW_UPDATE, 0, stream_id, delta)

    def ping(self) -> int:
        """Send a PING; return its opaque value (matched by PongReceived, also sets `rtt`)."""
        opaque = self._next_ping
        self._next_ping = (opaque + 1) & MAX_UINT32
        if len(self._pings) >= MAX_OUTSTANDING_PINGS:
            del self._pings[next(iter(self._pings))]
        self._pings[opaque] = self._clock()
        self._frame(TYPE_PING, FLAG_SYN, 0, opaque)
        return opaque

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        """Tell the remote we end the session: no new streams either way. Sent once."""
        if self.local_go_away is not None:
            return
        self.local_go_away = code
        self._frame(TYPE_GO_AWAY, 0, 0, code)

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse received bytes (any split); return the events they complete."""
        if self._failed is not None:
            raise ProtocolError(f"yamux session already failed: {self._failed}")
        if type(data) is not bytes:
            data = bytes(data)
        events: list[Event] = []
        try:
            self._parse(data, events)
        except ProtocolError as exc:
            self._failed = str(exc)
            raise
        return events

    def _parse(self, data: bytes, events: list[Event]) -> None:
        pos = 0
        end = len(data)
        hdr_buf = self._hdr_buf
        unpack_from = HEADER.unpack_from
        while pos < end:
            left = self._body_left
            if left:
                take = min(left, end - pos)
                sid = self._body_stream
                if sid is not None and sid in self._streams:
                    chunk = data if take == end else data[pos : pos + take]
                    events.append(DataReceived(sid, chunk))
                pos += take
                left -= take
                self._body_left = left
                if left == 0:
                    self._end_body(events)
                continue
            if hdr_buf:
                need = HEADER_LEN - len(hdr_buf)
                hdr_buf += data[pos : pos + need]
                pos += need
                if len(hdr_buf) < HEADER_LEN:
                    return
                version, type_, flags, stream_id, length = unpack_from(hdr_buf)
                hdr_buf.clear()
            elif end - pos < HEADER_LEN:
                hdr_buf += data[pos:]
                return
            else:
                version, type_, flags, stream_id, length = unpack_from(data, pos)
                pos += HEADER_LEN
            self._on_header(version, type_, flags, stream_id, length, events)

    def _end_body(self, events: list[Event]) -> None:
        sid = self._body_stream
        if self._body_fin and sid is not None:
            st = self._streams.get(sid)
            if st is not None:
                self._remote_fin(st, events)
        self._body_stream = None
        self._body_fin = False

    def _on_header(
        self, version: int, type_: int, flags: int, stream_id: int, length: int, events: list[Event]
    ) -> None:
        if version != VERSION:
            raise ProtocolError(f"unsupported yamux version {version}")
        if type_ == TYPE_DATA or type_ == TYPE_WINDOW_UPDATE:
            if stream_id == 0:
                raise ProtocolError("DATA/WINDOW_UPDATE frame for stream 0")
            if type_ == TYPE_DATA and length > self.max_window:
                raise ProtocolError(
                    f"DATA frame of {length} bytes exceeds the limit of {self.max_window}"
                )
            self._on_stream_frame(type_, flags, stream_id, length, events)
        elif type_ == TYPE_PING:
            if stream_id != 0:
                raise ProtocolError(f"PING on stream {stream_id}")
            if flags & FLAG_SYN:
                self._frame(TYPE_PING, FLAG_ACK, 0, length)
                events.append(PingReceived(length))
            elif flags & FLAG_ACK:
                sent = self._pings.pop(length, None)
                if sent is not None:
                    self.rtt = max(self._clock() - sent, 0.0)
                events.append(PongReceived(length))
            else:
                raise ProtocolError("PING without SYN or ACK")
        elif type_ == TYPE_GO_AWAY:
            if stream_id != 0:
                raise ProtocolError(f"GO_AWAY on stream {stream_id}")
            if self.remote_go_away is None:
                self.remote_go_away = length
                events.append(GoAwayReceived(length))
        else:
            raise ProtocolError(f"unknown yamux frame type {type_}")

    def _on_stream_frame(
        self, type_: int, flags: int, stream_id: int, length: int, events: list[Event]
    ) -> None:
        is_data = type_ == TYPE_DATA
        st = self._streams.get(stream_id)
        if flags & FLAG_SYN:
            if st is not None:
                raise ProtocolError(f"SYN for already open stream {stream_id}")
            if (stream_id & 1) == self.is_client:
                raise ProtocolError(f"remote opened stream {stream_id} with our parity")
            if self.local_go_away is not None or self._inbound_count >= self.max_streams:
                # Refuse just this stream, as go and js do; later frames for it are ignored.
                reason = "going away" if self.local_go_away is not None else "too many streams"
                log.info("yamux: refusing inbound stream %d (%s)", stream_id, reason)
                self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0)
                self._skip_body(length if is_data else 0)
                return
            st = _StreamState(stream_id, True, self.initial_window, self._clock())
            self._streams[stream_id] = st
            self._inbound_count += 1
            events.append(StreamOpened(stream_id))
            # ACK at once so a rust peer's backlog of unacknowledged streams (256) drains.
            self._frame(
                TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id, self.initial_window - DEFAULT_WINDOW
            )
        elif st is None:
            # Forgotten stream (we reset or fully closed it): frames may still be in flight.
            self._skip_body(length if is_data else 0)
            return

        if flags & FLAG_ACK and not st.acked:
            st.acked = True
            events.append(StreamAcked(stream_id))
        if flags & FLAG_RST:
            # go puts an error code in a RST window update's length: not a delta.
            self._forget(st)
            events.append(StreamReset(stream_id))
            self._skip_body(length if is_data else 0)
            return

        if not is_data:
            if length:
                window = st.send_window + length
                if window > MAX_UINT32:
                    raise ProtocolError(f"send window of stream {stream_id} overflows")
                st.send_window = window
                if not st.local_closed:
                    events.append(WindowOpened(stream_id))
            if flags & FLAG_FIN:
                self._remote_fin(st, events)
            return

        if length:
            if st.remote_closed:
                log.info("yamux: DATA after FIN on stream %d, resetting it", stream_id)
                self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0)
                self._forget(st)
                events.append(StreamReset(stream_id, "data after end of stream"))
                self._skip_body(length)
                return
            if length > st.recv_credit:
                raise ProtocolError(
                    f"stream {stream_id}: {length} bytes sent with {st.recv_credit} of window left"
                )
            st.recv_credit -= length
            st.unconsumed += length
            self._body_left = length
            self._body_stream = stream_id
            self._body_fin = bool(flags & FLAG_FIN)
        elif flags & FLAG_FIN:
            self._remote_fin(st, events)

    def _skip_body(self, length: int) -> None:
        if length:
            self._body_left = length
            self._body_stream = None
            self._body_fin = False

    def _remote_fin(self, st: _StreamState, events: list[Event]) -> None:
        if st.remote_closed:
            return
        st.remote_closed = True
        events.append(StreamEnded(st.stream_id))
        if st.local_closed:
            self._forget(st)

    def _forget(self, st: _StreamState) -> None:
        if self._streams.pop(st.stream_id, None) is None:
            return
        if st.inbound:
            self._inbound_count -= 1
        else:
            self._outbound_count -= 1
        self._window_growth -= st.recv_window - self.initial_window
