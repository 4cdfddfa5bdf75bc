"""Yamux (`/yamux/1.0.0`): a sans-I/O session plus a thin asyncio adapter.

Wire format: hashicorp/yamux spec.md, as spoken by go-yamux, rust `yamux` and
@chainsafe/libp2p-yamux. Every frame is a 12-byte header (version, type, flags, stream id,
length); DATA frames carry `length` bytes of payload, the other types use `length` as a window
delta (WINDOW_UPDATE), an opaque value (PING) or an error code (GO_AWAY).

`YamuxSession` is the protocol: bytes in -> events, calls -> bytes out, no I/O, no clock other
than the injectable one used for RTT and window auto-tuning. `YamuxMuxer` runs it over a
`ByteStream` with one reader and one writer task and hands out `YamuxStream`s.

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

import asyncio
import collections
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProtocolError, StreamClosed
from ..errors import StreamReset as StreamResetError
from ..streams import ByteStream

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
                header = unpack_from(hdr_buf)
                hdr_buf.clear()
            elif end - pos < HEADER_LEN:
                hdr_buf += data[pos:]
                return
            else:
                header = unpack_from(data, pos)
                pos += HEADER_LEN
            self._on_header(*header, events)

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


# ---------------------------------------------------------------------------------------------
# asyncio adapter

# How much one conn.read may return; a Noise session returns at most one message anyway.
READ_SIZE = 256 * 1024
# How much of one write() is handed to the session per step, so one big write cannot fill the
# outbound buffer alone and other streams get their turn.
WRITE_STEP = 256 * 1024
# Frames queued for the connection beyond this make stream writers wait for the writer task:
# backpressure from the connection to every stream. Bounds our outbound buffer to ~2x this.
OUTBOUND_HIGH_WATER = 1024 * 1024
# If control frames (pongs, window updates, RSTs) pile up this far beyond the high-water mark,
# the remote is not reading what it asks for (e.g. a ping flood): stop reading until it does.
MAX_CONTROL_BACKLOG = 1024 * 1024
# YamuxStream.close() waits this long for the remote's FIN before resetting the stream. js and
# rust do not wait at all (close = send FIN); js resets idle streams after 120 s; we pick the
# 10 s js uses for WebRTC stream FIN_ACKs.
STREAM_CLOSE_TIMEOUT = 10.0
# Time allowed to flush a final GoAway and close the connection before resetting it.
CONN_CLOSE_TIMEOUT = 5.0
PING_TIMEOUT = 20.0


class YamuxStream(ByteStream):
    """One yamux stream as a `ByteStream` (see p2prtc.streams for the contract)."""

    def __init__(self, muxer: YamuxMuxer, stream_id: int, inbound: bool) -> None:
        self._muxer = muxer
        self._session = muxer._session
        self.stream_id = stream_id
        self.inbound = inbound
        self.protocol: str | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0  # read position in _chunks[0]
        self._buffered = 0
        self._eof = False  # remote FIN received
        self._read_closed = False  # close() called: discard what still arrives
        self._write_closed = False
        self._read_error: StreamResetError | None = None
        self._write_error: StreamResetError | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    def __repr__(self) -> str:
        return f"<YamuxStream {self.stream_id} {'in' if self.inbound else 'out'} {self.protocol}>"

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (at most the receive window)."""
        return self._buffered

    # -- reading -------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        if n <= 0:
            raise ValueError("read size must be positive")
        chunks = self._chunks
        while not chunks:
            if self._read_error is not None:
                raise StreamResetError(*self._read_error.args)  # fresh: no traceback pile-up
            if self._eof or self._read_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        first = chunks[0]
        off = self._offset
        avail = len(first) - off
        if avail > n:
            out = first[off : off + n]
            self._offset = off + n
        else:
            out = first if off == 0 else first[off:]
            chunks.popleft()
            self._offset = 0
            if avail < n and chunks:
                parts = [out]
                got = avail
                while chunks and got < n:
                    c = chunks[0]
                    need = n - got
                    if len(c) <= need:
                        chunks.popleft()
                        parts.append(c)
                        got += len(c)
                    else:
                        parts.append(c[:need])
                        self._offset = need
                        got = n
                out = b"".join(parts)
        size = len(out)
        self._buffered -= size
        self._muxer._consumed(self.stream_id, size)
        return out

    # -- writing -------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise StreamResetError(*self._write_error.args)
        if self._write_closed:
            raise StreamClosed(f"stream {self.stream_id} is closed for writing")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is bytes:
            view: bytes | memoryview = data
        else:
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
        total = len(view)
        self._check_writable()
        session = self._session
        muxer = self._muxer
        sid = self.stream_id
        pos = 0
        while pos < total:
            self._check_writable()
            step = min(total - pos, WRITE_STEP)
            pending = session.pending_bytes
            if pending and pending + step > OUTBOUND_HIGH_WATER:
                await muxer._wait_drained()
                continue
            if session.send_window(sid) <= 0:
                self._writable.clear()
                await self._writable.wait()
                continue
            if pos == 0 and step == total:
                chunk = view
            else:
                if type(view) is bytes:
                    view = memoryview(view)
                chunk = view[pos : pos + step]
            pos += session.send_data(sid, chunk)
            muxer._kick_writer()

    async def close_write(self) -> None:
        if self._write_error is not None:
            raise StreamResetError(*self._write_error.args)
        if self._write_closed:
            return
        self._write_closed = True
        self._writable.set()  # concurrent writers now raise StreamClosed
        try:
            self._session.end_stream(self.stream_id)
        except StreamClosed:
            pass
        self._muxer._kick_writer()
        self._muxer._maybe_forget(self)

    async def close(self) -> None:
        """Send FIN and discard unread input; return without waiting for the remote's FIN (as
        js and rust do). The stream lingers in the background until that FIN arrives, and is
        reset if it has not come within STREAM_CLOSE_TIMEOUT."""
        self._discard_input()
        if self._read_error is not None or self._write_error is not None:
            self._muxer._maybe_forget(self)
            return
        if not self._write_closed:
            await self.close_write()
        if not self._eof and self._read_error is None:
            self._muxer._linger(self)
        self._muxer._maybe_forget(self)

    async def wait_closed(self) -> None:
        """Wait until the remote has ended its side too (FIN or reset)."""
        await self._wait_eof()

    async def _wait_eof(self) -> None:
        while not self._eof and self._read_error is None:
            self._readable.clear()
            await self._readable.wait()

    def reset(self) -> None:
        if self._read_error is None or self._write_error is None:
            err = StreamResetError(f"stream {self.stream_id} reset locally")
            self._read_error = self._read_error or err
            self._write_error = self._write_error or err
        self._chunks.clear()
        self._buffered = 0
        self._session.reset_stream(self.stream_id)
        self._muxer._kick_writer()
        self._readable.set()
        self._writable.set()
        self._muxer._maybe_forget(self)

    def _discard_input(self) -> None:
        self._read_closed = True
        if self._buffered:
            self._muxer._consumed(self.stream_id, self._buffered)
        self._chunks.clear()
        self._offset = 0
        self._buffered = 0

    # -- called by the muxer -------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self._read_closed:
            self._muxer._consumed(self.stream_id, len(data))
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_reset(self, reason: str) -> None:
        err = StreamResetError(f"stream {self.stream_id} {reason}")
        self._read_error = self._read_error or err
        self._write_error = self._write_error or err
        self._readable.set()
        self._writable.set()

    def _on_conn_lost(self, reason: str) -> None:
        err = StreamResetError(f"stream {self.stream_id}: connection closed ({reason})")
        if not self._eof:
            self._read_error = self._read_error or err
        if not self._write_closed:
            self._write_error = self._write_error or err
        self._readable.set()
        self._writable.set()


class YamuxMuxer:
    """Runs a YamuxSession over a ByteStream (usually a Noise session).

    One reader task feeds received bytes to the session and never waits for applications: a
    stream whose reader is slow just stops re-opening its window. One writer task sends whatever
    frames the streams queued since its last write in a single conn.write.

    Inbound streams go to `on_stream` (called synchronously; start a task there; settable until
    start()) or, while it is None, to `accept_stream()`. `closed` is set once the connection has
    ended, with `close_reason` saying why.
    """

    def __init__(
        self,
        conn: ByteStream,
        is_client: bool,
        on_stream: Callable[[YamuxStream], None] | None = None,
        *,
        initial_window: int = DEFAULT_WINDOW,
        max_window: int = MAX_WINDOW,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
    ) -> None:
        self._conn = conn
        self.is_client = is_client
        self.on_stream = on_stream
        self._session = YamuxSession(
            is_client,
            initial_window=initial_window,
            max_window=max_window,
            max_streams=max_inbound_streams,
        )
        self._streams: dict[int, YamuxStream] = {}
        self._lingering: set[asyncio.Task] = set()  # closed streams waiting for the remote FIN
        self._accept_queue: asyncio.Queue[YamuxStream | None] = asyncio.Queue()
        self._pings: dict[int, tuple[asyncio.Future[float], float]] = {}
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._teardown_task: asyncio.Task[None] | None = None

    # -- public API ----------------------------------------------------------------------

    @property
    def session(self) -> YamuxSession:
        return self._session

    @property
    def rtt(self) -> float | None:
        return self._session.rtt

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = asyncio.create_task(self._read_loop(), name="yamux-reader")
        self._writer = asyncio.create_task(self._write_loop(), name="yamux-writer")
        # Measure the RTT once up front (js does the same): window auto-tuning needs it.
        self._session.ping()
        self._kick_writer()

    def _check_open(self) -> None:
        if self._teardown_task is not None or self.closed.is_set():
            raise StreamClosed(f"yamux connection closed ({self.close_reason})")

    async def open_stream(self) -> YamuxStream:
        self._check_open()
        sid = self._session.open_stream()
        stream = YamuxStream(self, sid, inbound=False)
        self._streams[sid] = stream
        self._kick_writer()
        return stream

    async def accept_stream(self) -> YamuxStream:
        """Next inbound stream (only when constructed without on_stream)."""
        if self.on_stream is not None:
            raise RuntimeError("inbound streams go to on_stream")
        stream = await self._accept_queue.get()
        if stream is None:
            self._accept_queue.put_nowait(None)
            raise StreamClosed(f"yamux connection closed ({self.close_reason})")
        return stream

    async def ping(self, timeout: float = PING_TIMEOUT) -> float:
        """Round-trip time in seconds of one yamux PING."""
        self._check_open()
        loop = asyncio.get_running_loop()
        opaque = self._session.ping()
        fut: asyncio.Future[float] = loop.create_future()
        self._pings[opaque] = (fut, loop.time())
        self._kick_writer()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(opaque, None)

    async def close(self) -> None:
        """GoAway(normal), flush, close the connection; open streams are reset."""
        if self._teardown_task is None and not self.closed.is_set():
            if self._session._failed is None:
                self._session.go_away(GO_AWAY_NORMAL)
            self._start_teardown("closed locally")
        await self.closed.wait()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    # -- internals used by streams -------------------------------------------------------

    def _kick_writer(self) -> None:
        self._wakeup.set()

    async def _wait_drained(self) -> None:
        if self._teardown_task is not None:
            # the writer may be gone; let the stream see its error instead of waiting forever
            await asyncio.sleep(0)
            return
        self._drained.clear()
        await self._drained.wait()

    def _consumed(self, stream_id: int, n: int) -> None:
        session = self._session
        session.consumed(stream_id, n)
        if session.has_data_to_send:
            self._wakeup.set()

    def _linger(self, stream: YamuxStream) -> None:
        async def wait_for_fin() -> None:
            try:
                await asyncio.wait_for(stream._wait_eof(), STREAM_CLOSE_TIMEOUT)
            except TimeoutError:
                log.info("yamux: stream %d: no FIN from remote within %.0f s of close, resetting",
                         stream.stream_id, STREAM_CLOSE_TIMEOUT)
                stream.reset()
            self._maybe_forget(stream)

        task = asyncio.ensure_future(wait_for_fin())
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)

    def _maybe_forget(self, stream: YamuxStream) -> None:
        if not self._session.has_stream(stream.stream_id):
            self._streams.pop(stream.stream_id, None)

    # -- tasks ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        conn = self._conn
        session = self._session
        dispatch = self._dispatch
        reason: str
        try:
            while True:
                if session.pending_bytes > OUTBOUND_HIGH_WATER + MAX_CONTROL_BACKLOG:
                    await self._wait_drained()
                    if self._teardown_task is not None:
                        return
                    continue
                data = await conn.read(READ_SIZE)
                if not data:
                    reason = "connection closed by remote"
                    break
                try:
                    events = session.receive_data(data)
                except ProtocolError as exc:
                    reason = f"protocol error: {exc}"
                    log.warning("yamux: %s; sending GoAway and closing the connection", exc)
                    session.go_away(GO_AWAY_PROTOCOL_ERROR)
                    break
                for event in events:
                    dispatch(event)
                if session.has_data_to_send:
                    self._wakeup.set()
                if self._teardown_task is not None:
                    return
        except asyncio.CancelledError:
            raise
        except (StreamClosed, ProtocolError) as exc:  # reset, relay gone, bad lower layer
            reason = f"connection lost: {exc}"
        except Exception as exc:  # an I/O error or a bug below us
            reason = f"connection error: {exc!r}"
        if self._teardown_task is None:
            log.info("yamux: %s", reason)
        self._start_teardown(reason)

    async def _write_loop(self) -> None:
        conn = self._conn
        session = self._session
        wakeup = self._wakeup
        try:
            while True:
                if not session.has_data_to_send:
                    self._idle.set()
                    self._drained.set()
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                self._idle.clear()
                data = session.data_to_send()
                self._drained.set()
                await conn.write(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"write failed: {exc!r}"
            if self._teardown_task is None:
                log.info("yamux: %s", reason)
            self._start_teardown(reason, flush=False)
        finally:
            self._idle.set()
            self._drained.set()

    def _dispatch(self, event: Event) -> None:
        kind = type(event)
        if kind is DataReceived:
            stream = self._streams.get(event.stream_id)
            if stream is None:  # stream object gone: discard, keep the window open
                self._session.consumed(event.stream_id, len(event.data))
            else:
                stream._on_data(event.data)
        elif kind is WindowOpened:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._writable.set()
        elif kind is StreamOpened:
            self._accept(event.stream_id)
        elif kind is StreamEnded:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._on_eof()
                self._maybe_forget(stream)
        elif kind is StreamReset:
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._on_reset(event.reason)
        elif kind is PongReceived:
            entry = self._pings.pop(event.opaque, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(asyncio.get_running_loop().time() - entry[1])
        elif kind is GoAwayReceived:
            name = GO_AWAY_NAMES.get(event.code, f"code {event.code}")
            if event.code == GO_AWAY_NORMAL:
                # No new streams either way; existing ones run until the remote closes.
                log.debug("yamux: remote sent GoAway (normal)")
            else:
                log.info("yamux: remote sent GoAway (%s)", name)
                self._start_teardown(f"remote sent GoAway ({name})")

    def _accept(self, stream_id: int) -> None:
        stream = YamuxStream(self, stream_id, inbound=True)
        self._streams[stream_id] = stream
        on_stream = self.on_stream
        if on_stream is None:
            self._accept_queue.put_nowait(stream)
            return
        try:
            on_stream(stream)
        except Exception:
            log.exception("yamux: on_stream failed for stream %d; resetting it", stream_id)
            stream.reset()

    # -- teardown ------------------------------------------------------------------------

    def _start_teardown(self, reason: str, *, flush: bool = True) -> None:
        if self._teardown_task is not None or self.closed.is_set():
            return
        self.close_reason = reason
        for stream in list(self._streams.values()):
            stream._on_conn_lost(reason)
        self._streams.clear()
        for fut, _ in self._pings.values():
            if not fut.done():
                fut.set_exception(StreamClosed(f"yamux connection closed ({reason})"))
        self._pings.clear()
        self._accept_queue.put_nowait(None)
        self._drained.set()
        for task in list(self._lingering):
            task.cancel()
        self._teardown_task = asyncio.create_task(self._teardown(flush), name="yamux-teardown")

    async def _teardown(self, flush: bool) -> None:
        try:
            if flush and self._writer is not None and not self._writer.done():
                try:
                    await asyncio.wait_for(self._flush(), CONN_CLOSE_TIMEOUT)
                except TimeoutError:
                    pass
            current = asyncio.current_task()
            for task in (self._reader, self._writer):
                if task is not None and task is not current and not task.done():
                    task.cancel()
            try:
                await asyncio.wait_for(self._conn.close(), CONN_CLOSE_TIMEOUT)
            except Exception:  # timeout or an already broken connection
                self._conn.reset()
        finally:
            self.closed.set()

    async def _flush(self) -> None:
        while self._session.has_data_to_send or not self._idle.is_set():
            if self._writer is None or self._writer.done():
                return
            if self._session.has_data_to_send:
                self._idle.clear()
            self._wakeup.set()
            await self._idle.wait()
