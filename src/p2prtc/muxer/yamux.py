"""Yamux (`/yamux/1.0.0`) over asyncio: `YamuxMuxer` runs a sans-I/O `YamuxSession`
(`p2prtc.muxer.yamux_session`, the protocol and its limits) over a `ByteStream` with one reader
and one writer task, and hands out `YamuxStream`s.

The session's names (constants, events, `YamuxSession`) are re-exported here, so
`from p2prtc.muxer.yamux import ...` keeps giving the whole protocol.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from ..errors import ProtocolError, StreamClosed
from ..errors import StreamReset as StreamResetError
from ..resources import ConnectionScope, Refusal, ResourceLimitExceeded, StreamScope
from ..streams import ByteStream, Stream
from .yamux_session import (
    DEFAULT_WINDOW,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_INTERNAL_ERROR,
    GO_AWAY_NAMES,
    GO_AWAY_NORMAL,
    GO_AWAY_PROTOCOL_ERROR,
    HEADER,
    HEADER_LEN,
    MAX_CONNECTION_WINDOW_GROWTH,
    MAX_INBOUND_STREAMS,
    MAX_OUTBOUND_STREAMS,
    MAX_OUTSTANDING_PINGS,
    MAX_SEND_FRAME,
    MAX_UINT32,
    MAX_WINDOW,
    PROTOCOL_ID,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    VERSION,
    DataReceived,
    Event,
    GoAwayReceived,
    PingReceived,
    PongReceived,
    StreamAcked,
    StreamEnded,
    StreamOpened,
    StreamReset,
    TooManyStreams,
    WindowOpened,
    YamuxSession,
)

__all__ = [
    "CONN_CLOSE_TIMEOUT",
    "DEFAULT_WINDOW",
    "FLAG_ACK",
    "FLAG_FIN",
    "FLAG_RST",
    "FLAG_SYN",
    "GO_AWAY_INTERNAL_ERROR",
    "GO_AWAY_NAMES",
    "GO_AWAY_NORMAL",
    "GO_AWAY_PROTOCOL_ERROR",
    "HEADER",
    "HEADER_LEN",
    "MAX_CONNECTION_WINDOW_GROWTH",
    "MAX_CONTROL_BACKLOG",
    "MAX_INBOUND_STREAMS",
    "MAX_OUTBOUND_STREAMS",
    "MAX_OUTSTANDING_PINGS",
    "MAX_SEND_FRAME",
    "MAX_UINT32",
    "MAX_WINDOW",
    "OUTBOUND_HIGH_WATER",
    "PING_TIMEOUT",
    "PROTOCOL_ID",
    "READ_SIZE",
    "STREAM_CLOSE_TIMEOUT",
    "TYPE_DATA",
    "TYPE_GO_AWAY",
    "TYPE_PING",
    "TYPE_WINDOW_UPDATE",
    "VERSION",
    "WRITE_STEP",
    "DataReceived",
    "Event",
    "GoAwayReceived",
    "PingReceived",
    "PongReceived",
    "StreamAcked",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "TooManyStreams",
    "WindowOpened",
    "YamuxMuxer",
    "YamuxSession",
    "YamuxStream",
]

log = logging.getLogger(__name__)

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
# Default wait for a pong in YamuxMuxer.ping(): our choice, generous so that a loaded relay
# connection (window updates queued behind bulk data) is not taken for a dead one.
PING_TIMEOUT = 20.0


class YamuxStream(Stream):
    """One yamux stream as a `streams.Stream` (see p2prtc.streams for the contract)."""

    def __init__(self, muxer: YamuxMuxer, stream_id: int, inbound: bool) -> None:
        self._muxer = muxer
        self._session = muxer.session
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
        # its share of the connection's budget (p2prtc.resources), when the muxer has one
        self.budget: StreamScope | None = None

    def __repr__(self) -> str:
        return f"<YamuxStream {self.stream_id} {'in' if self.inbound else 'out'} {self.protocol}>"

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (at most the receive window)."""
        return self._buffered

    @property
    def at_eof(self) -> bool:
        """The remote has ended its side (FIN received)."""
        return self._eof

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
        if self.budget is not None:
            self.budget.release_memory(size)
        self._muxer.consumed(self.stream_id, size)
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
                await muxer.wait_drained()
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
            muxer.kick_writer()

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
        self._muxer.kick_writer()
        self._muxer.forget_if_done(self)

    async def close(self) -> None:
        """Send FIN and discard unread input; return without waiting for the remote's FIN (as
        js and rust do). The stream lingers in the background until that FIN arrives, and is
        reset if it has not come within STREAM_CLOSE_TIMEOUT."""
        self._discard_input()
        if self._read_error is not None or self._write_error is not None:
            self._muxer.forget_if_done(self)
            return
        if not self._write_closed:
            await self.close_write()
        if not self._eof and self._read_error is None:
            self._muxer.linger(self)
        self._muxer.forget_if_done(self)

    async def wait_closed(self) -> None:
        """Wait until the remote has ended its side too (FIN or reset)."""
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
        if self.budget is not None:
            self.budget.release_memory(self.budget.memory)
        self._session.reset_stream(self.stream_id)
        self._muxer.kick_writer()
        self._readable.set()
        self._writable.set()
        self._muxer.forget_if_done(self)

    def _discard_input(self) -> None:
        self._read_closed = True
        if self._buffered:
            self._muxer.consumed(self.stream_id, self._buffered)
            if self.budget is not None:
                self.budget.release_memory(self._buffered)
        self._chunks.clear()
        self._offset = 0
        self._buffered = 0

    # -- called by YamuxMuxer only (the adapter's internals, not for applications) -------

    def on_data(self, data: bytes) -> None:
        """Payload the session delivered for this stream."""
        if self._read_closed:
            self._muxer.consumed(self.stream_id, len(data))
            return
        if self.budget is not None:
            refusal = self.budget.reserve_memory(len(data))
            if refusal is not None:  # over the memory budget: this stream ends, others go on
                line = self._muxer.budget_log_line(f"yamux: stream {self.stream_id} reset", refusal)
                if line is not None:
                    log.info("%s", line)
                self.reset()
                return
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()

    def on_window_opened(self) -> None:
        """The send window grew: wake a writer waiting for it."""
        self._writable.set()

    def on_remote_fin(self) -> None:
        """The remote ended its side; reads return b"" once the buffer is drained."""
        self._eof = True
        self._readable.set()

    def on_reset(self, reason: str) -> None:
        """The stream was reset (by the remote or for breaking the protocol)."""
        err = StreamResetError(f"stream {self.stream_id} {reason}")
        self._read_error = self._read_error or err
        self._write_error = self._write_error or err
        self._readable.set()
        self._writable.set()

    def on_connection_lost(self, reason: str) -> None:
        """The connection ended: whatever is not finished fails with StreamReset."""
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
        resources: ConnectionScope | None = None,
    ) -> None:
        """`resources`: the connection's budget (p2prtc.resources): each stream and the bytes
        buffered in it are reserved there, and all is given back when the connection ends."""
        self._conn = conn
        self._budget = resources
        self.is_client = is_client
        self.on_stream = on_stream
        self._session = YamuxSession(
            is_client,
            initial_window=initial_window,
            max_window=max_window,
            max_streams=max_inbound_streams,
        )
        self._streams: dict[int, YamuxStream] = {}
        self._lingering: set[asyncio.Task[None]] = set()  # closed streams waiting for the remote FIN
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

    @property
    def going_away(self) -> bool:
        """No new streams: closed or closing, or a GoAway sent or received."""
        session = self._session
        return (self._teardown_task is not None or self.closed.is_set()
                or session.local_go_away is not None or session.remote_go_away is not None)

    def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = asyncio.create_task(self._read_loop(), name="yamux-reader")
        self._writer = asyncio.create_task(self._write_loop(), name="yamux-writer")
        # Measure the RTT once up front (js does the same): window auto-tuning needs it.
        self._session.ping()
        self.kick_writer()

    def _check_open(self) -> None:
        if self._teardown_task is not None or self.closed.is_set():
            raise StreamClosed(f"yamux connection closed ({self.close_reason})")

    async def open_stream(self) -> YamuxStream:
        self._check_open()
        budget = None
        if self._budget is not None:
            reserved = self._budget.open_stream("outbound")
            if isinstance(reserved, Refusal):
                raise ResourceLimitExceeded(reserved)
            budget = reserved
        try:
            sid = self._session.open_stream()
        except BaseException:
            if budget is not None:
                budget.close()
            raise
        stream = YamuxStream(self, sid, inbound=False)
        stream.budget = budget
        self._streams[sid] = stream
        self.kick_writer()
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
        self.kick_writer()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(opaque, None)

    async def close(self) -> None:
        """GoAway(normal), flush, close the connection; open streams are reset."""
        if self._teardown_task is None and not self.closed.is_set():
            if self._session.failed is None:
                self._session.go_away(GO_AWAY_NORMAL)
            self._start_teardown("closed locally")
        await self.closed.wait()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    @property
    def lingering(self) -> frozenset[asyncio.Task[None]]:
        """Tasks of closed streams still waiting for the remote's FIN."""
        return frozenset(self._lingering)

    # -- called by YamuxStream only (the adapter's internals, not for applications) --------

    def budget_log_line(self, what: str, refusal: Refusal) -> str | None:
        """What to log for a refusal by the connection's budget (rate-limited), or None."""
        return self._budget.log_line(what, refusal) if self._budget is not None else None

    def kick_writer(self) -> None:
        """Frames were queued in the session: let the writer task send them."""
        self._wakeup.set()

    async def wait_drained(self) -> None:
        """Wait until the writer has taken the queued frames (connection backpressure)."""
        if self._teardown_task is not None:
            # the writer may be gone; let the stream see its error instead of waiting forever
            await asyncio.sleep(0)
            return
        self._drained.clear()
        await self._drained.wait()

    def consumed(self, stream_id: int, n: int) -> None:
        """The application read n bytes of the stream: the session may re-open its window."""
        session = self._session
        session.consumed(stream_id, n)
        if session.has_data_to_send:
            self._wakeup.set()

    def linger(self, stream: YamuxStream) -> None:
        """Keep a closed stream until the remote's FIN; reset it after STREAM_CLOSE_TIMEOUT."""

        async def wait_for_fin() -> None:
            try:
                await asyncio.wait_for(stream.wait_closed(), STREAM_CLOSE_TIMEOUT)
            except TimeoutError:
                log.info("yamux: stream %d: no FIN from remote within %.0f s of close, resetting",
                         stream.stream_id, STREAM_CLOSE_TIMEOUT)
                stream.reset()
            self.forget_if_done(stream)

        task = asyncio.ensure_future(wait_for_fin())
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)

    def forget_if_done(self, stream: YamuxStream) -> None:
        """Drop the stream object once the session has forgotten the stream."""
        if not self._session.has_stream(stream.stream_id):
            self._streams.pop(stream.stream_id, None)
            if stream.budget is not None:
                stream.budget.close()

    # -- tasks ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        conn = self._conn
        session = self._session
        dispatch = self._dispatch
        reason: str
        try:
            while True:
                if session.pending_bytes > OUTBOUND_HIGH_WATER + MAX_CONTROL_BACKLOG:
                    await self.wait_drained()
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
        if isinstance(event, DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:  # stream object gone: discard, keep the window open
                self._session.consumed(event.stream_id, len(event.data))
            else:
                stream.on_data(event.data)
        elif isinstance(event, WindowOpened):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.on_window_opened()
        elif isinstance(event, StreamOpened):
            self._accept(event.stream_id)
        elif isinstance(event, StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.on_remote_fin()
                self.forget_if_done(stream)
        elif isinstance(event, StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream.on_reset(event.reason)
                if stream.budget is not None:
                    stream.budget.close()
        elif isinstance(event, PongReceived):
            entry = self._pings.pop(event.opaque, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(asyncio.get_running_loop().time() - entry[1])
        elif isinstance(event, GoAwayReceived):
            name = GO_AWAY_NAMES.get(event.code, f"code {event.code}")
            if event.code == GO_AWAY_NORMAL:
                # No new streams either way; existing ones run until the remote closes.
                log.debug("yamux: remote sent GoAway (normal)")
            else:
                log.info("yamux: remote sent GoAway (%s)", name)
                self._start_teardown(f"remote sent GoAway ({name})")

    def _accept(self, stream_id: int) -> None:
        budget = None
        if self._budget is not None:
            reserved = self._budget.open_stream("inbound")
            if isinstance(reserved, Refusal):  # over a budget: refuse this stream only
                line = self._budget.log_line(f"yamux: inbound stream {stream_id} refused",
                                             reserved)
                if line is not None:
                    log.info("%s", line)
                self._session.reset_stream(stream_id)
                self.kick_writer()
                return
            budget = reserved
        stream = YamuxStream(self, stream_id, inbound=True)
        stream.budget = budget
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
            stream.on_connection_lost(reason)
        self._streams.clear()
        if self._budget is not None:
            self._budget.close()  # the connection's reservations, its streams' too
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
