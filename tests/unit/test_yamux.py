"""yamux: the sans-I/O session (frames, windows, state machine) and the asyncio muxer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2prtc.errors import ProtocolError, StreamClosed
from p2prtc.errors import StreamReset as StreamResetError
from p2prtc.muxer import yamux
from p2prtc.muxer.yamux import (
    DEFAULT_WINDOW,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_PROTOCOL_ERROR,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    DataReceived,
    GoAwayReceived,
    PingReceived,
    PongReceived,
    StreamAcked,
    StreamEnded,
    StreamOpened,
    StreamReset,
    TooManyStreams,
    WindowOpened,
    YamuxMuxer,
    YamuxSession,
)
from tests.helpers import memory_pipe


def frame(type_: int, flags: int, sid: int, length: int, body: bytes = b"", version: int = 0):
    return struct.pack(">BBHII", version, type_, flags, sid, length) + body


def data(sid: int, body: bytes, flags: int = 0) -> bytes:
    return frame(TYPE_DATA, flags, sid, len(body), body)


def parse_frames(buf: bytes) -> list[tuple[int, int, int, int, bytes]]:
    out = []
    pos = 0
    while pos < len(buf):
        ver, type_, flags, sid, length = struct.unpack_from(">BBHII", buf, pos)
        assert ver == 0
        pos += 12
        body = b""
        if type_ == TYPE_DATA:
            body = buf[pos : pos + length]
            pos += length
        out.append((type_, flags, sid, length, body))
    return out


def merge(events: list) -> list:
    """Join consecutive DataReceived of one stream (a frame may arrive in pieces)."""
    out: list = []
    for ev in events:
        if (
            isinstance(ev, DataReceived)
            and out
            and isinstance(out[-1], DataReceived)
            and out[-1].stream_id == ev.stream_id
        ):
            out[-1] = DataReceived(ev.stream_id, out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pair(**kw) -> tuple[YamuxSession, YamuxSession]:
    return YamuxSession(True, **kw), YamuxSession(False, **kw)


def pump(src: YamuxSession, dst: YamuxSession) -> list:
    return dst.receive_data(src.data_to_send())


# ------------------------------------------------------------------------------------------
# sans-I/O: frames and flags


def test_client_opens_odd_server_even_with_syn():
    client, server = pair()
    assert [client.open_stream(), client.open_stream()] == [1, 3]
    assert [server.open_stream(), server.open_stream()] == [2, 4]
    frames = parse_frames(client.data_to_send())
    assert frames == [
        (TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0, b""),
        (TYPE_WINDOW_UPDATE, FLAG_SYN, 3, 0, b""),
    ]
    assert not client.has_data_to_send


def test_open_ack_data_fin_roundtrip():
    client, server = pair()
    sid = client.open_stream()
    assert client.send_data(sid, b"hello") == 5
    assert pump(client, server) == [StreamOpened(sid), DataReceived(sid, b"hello")]
    # the server ACKs at once
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0, b"")]
    server.receive_data(b"")  # nothing
    server.send_data(sid, b"world")
    server.end_stream(sid)
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0))
    assert pump(server, client) == [DataReceived(sid, b"world"), StreamEnded(sid)]
    assert client.has_stream(sid) and server.has_stream(sid)
    client.end_stream(sid)
    assert not client.has_stream(sid)  # both halves closed: forgotten
    assert pump(client, server) == [StreamEnded(sid)]
    assert not server.has_stream(sid)


def test_ack_event_and_syn_with_data_and_fin():
    client, server = pair()
    sid = client.open_stream()
    client.data_to_send()
    assert client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0)) == [StreamAcked(sid)]
    # a remote stream opened, filled and half-closed by one frame
    events = client.receive_data(data(2, b"abc", FLAG_SYN | FLAG_FIN))
    assert events == [StreamOpened(2), DataReceived(2, b"abc"), StreamEnded(2)]


def test_ping_is_answered_and_pong_sets_rtt():
    clock = FakeClock()
    s = YamuxSession(True, clock=clock)
    assert s.receive_data(frame(TYPE_PING, FLAG_SYN, 0, 0xDEADBEEF)) == [PingReceived(0xDEADBEEF)]
    assert s.data_to_send() == frame(TYPE_PING, FLAG_ACK, 0, 0xDEADBEEF)
    opaque = s.ping()
    assert s.data_to_send() == frame(TYPE_PING, FLAG_SYN, 0, opaque)
    clock.now += 0.25
    assert s.receive_data(frame(TYPE_PING, FLAG_ACK, 0, opaque)) == [PongReceived(opaque)]
    assert s.rtt == pytest.approx(0.25)
    # an unsolicited pong is reported but harmless; we never send unsolicited ACKs ourselves
    assert s.receive_data(frame(TYPE_PING, FLAG_ACK, 0, 999)) == [PongReceived(999)]
    assert not s.has_data_to_send


def test_go_away_both_ways():
    client, server = pair()
    client.go_away(GO_AWAY_PROTOCOL_ERROR)
    client.go_away(0)  # sent once
    assert client.data_to_send() == frame(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR)
    with pytest.raises(StreamClosed):
        client.open_stream()
    # a stream opened by the remote after our GoAway is refused with RST
    assert client.receive_data(data(2, b"x", FLAG_SYN)) == []
    assert parse_frames(client.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_RST, 2, 0, b"")]
    assert server.receive_data(frame(TYPE_GO_AWAY, 0, 0, 2)) == [GoAwayReceived(2)]
    with pytest.raises(StreamClosed):
        server.open_stream()


def test_reset_both_ways_and_go_error_code_in_rst():
    client, server = pair()
    sid = client.open_stream()
    pump(client, server)
    server.data_to_send()
    client.reset_stream(sid)
    assert not client.has_stream(sid)
    assert pump(client, server) == [StreamReset(sid)]
    assert not server.has_stream(sid)
    client.reset_stream(sid)  # no-op once gone
    assert not client.has_data_to_send
    # go puts an error code in the length of a RST window update: not a window delta
    sid = client.open_stream()
    client.data_to_send()
    assert client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 42)) == [StreamReset(sid)]
    with pytest.raises(StreamClosed):
        client.send_data(sid, b"x")


def test_frames_for_unknown_streams_are_skipped():
    s = YamuxSession(True)
    sid = s.open_stream()
    s.data_to_send()
    stream = (
        data(7, b"late data for a stream we forgot")
        + frame(TYPE_WINDOW_UPDATE, 0, 9, 1000)
        + frame(TYPE_WINDOW_UPDATE, FLAG_FIN, 11, 0)
        + data(sid, b"ok")
    )
    assert s.receive_data(stream) == [DataReceived(sid, b"ok")]
    assert not s.has_data_to_send  # not answered with RST (rust/go/js do not either)


def test_data_after_fin_resets_only_that_stream():
    client, server = pair()
    sid = client.open_stream()
    pump(client, server)
    server.data_to_send()
    events = server.receive_data(data(sid, b"a", FLAG_FIN) + data(sid, b"more") + data(sid, b""))
    assert events[:2] == [DataReceived(sid, b"a"), StreamEnded(sid)]
    assert isinstance(events[2], StreamReset) and events[2].stream_id == sid
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0, b"")]
    assert not server.has_stream(sid)


def test_send_data_is_split_into_frames():
    client, server = pair(max_send_frame=1000)
    sid = client.open_stream()
    client.data_to_send()
    payload = bytes(range(256)) * 10
    assert client.send_data(sid, bytearray(payload)) == len(payload)
    frames = parse_frames(client.data_to_send())
    assert [len(f[4]) for f in frames] == [1000, 1000, 560]
    assert all(f[:3] == (TYPE_DATA, 0, sid) for f in frames)
    assert b"".join(f[4] for f in frames) == payload


def test_pending_bytes_tracks_output():
    s = YamuxSession(True, max_send_frame=100)
    sid = s.open_stream()
    s.send_data(sid, memoryview(b"x" * 250))
    out = s.data_to_send()
    assert len(out) == 12 + 3 * 12 + 250
    assert s.pending_bytes == 0 and not s.has_data_to_send


# ------------------------------------------------------------------------------------------
# sans-I/O: flow control


def test_send_window_limits_and_window_update_reopens():
    client, server = pair()
    sid = client.open_stream()
    pump(client, server)
    assert client.send_window(sid) == DEFAULT_WINDOW
    assert client.send_data(sid, b"x" * (DEFAULT_WINDOW + 10)) == DEFAULT_WINDOW
    assert client.send_data(sid, b"y") == 0
    assert client.send_window(sid) == 0
    events = merge(pump(client, server))
    assert events == [DataReceived(sid, b"x" * DEFAULT_WINDOW)]
    server.data_to_send()  # the ACK
    server.consumed(sid, DEFAULT_WINDOW // 2 - 1)
    assert not server.has_data_to_send  # less than half the window: no update yet
    server.consumed(sid, 1)
    assert parse_frames(server.data_to_send()) == [
        (TYPE_WINDOW_UPDATE, 0, sid, DEFAULT_WINDOW // 2, b"")
    ]
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0))
    assert client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, DEFAULT_WINDOW // 2)) == [
        WindowOpened(sid)
    ]
    assert client.send_window(sid) == DEFAULT_WINDOW // 2


def test_data_beyond_window_is_a_protocol_error():
    client, server = pair()
    sid = client.open_stream()
    pump(client, server)
    server.receive_data(data(sid, b"x" * (DEFAULT_WINDOW - 1)))
    with pytest.raises(ProtocolError, match="window"):
        server.receive_data(data(sid, b"yy"))


def test_larger_initial_window_is_announced_with_syn_and_ack():
    client = YamuxSession(True, initial_window=1024 * 1024)
    server = YamuxSession(False)
    sid = client.open_stream()
    assert parse_frames(client.data_to_send()) == [
        (TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 1024 * 1024 - DEFAULT_WINDOW, b"")
    ]
    big_server = YamuxSession(False, initial_window=512 * 1024)
    events = big_server.receive_data(
        frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 1024 * 1024 - DEFAULT_WINDOW)
    )
    assert events == [StreamOpened(sid), WindowOpened(sid)]
    assert big_server.send_window(sid) == 1024 * 1024
    assert parse_frames(big_server.data_to_send()) == [
        (TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 256 * 1024, b"")
    ]
    # the client may receive 1 MiB at once
    server.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0))
    client.receive_data(data(2, b"z" * 10, FLAG_SYN))
    client.receive_data(data(sid, b"z" * (1024 * 1024)))


def test_window_auto_tunes_up_to_max_when_reader_is_fast():
    clock = FakeClock()
    max_window = 4 * DEFAULT_WINDOW
    server = YamuxSession(False, clock=clock, max_window=max_window)
    server.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
    server.data_to_send()
    # no RTT measured yet: never grows
    server.receive_data(data(1, b"x" * DEFAULT_WINDOW))
    clock.now += 0.001
    server.consumed(1, DEFAULT_WINDOW)
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, 0, 1, DEFAULT_WINDOW, b"")]
    # RTT 100 ms; half the window used in 10 ms -> double, twice, then capped at max_window
    opaque = server.ping()
    clock.now += 0.1
    server.receive_data(frame(TYPE_PING, FLAG_ACK, 0, opaque))
    server.data_to_send()
    sizes = []
    granted = DEFAULT_WINDOW
    for _ in range(4):
        server.receive_data(data(1, b"x" * granted))
        clock.now += 0.01
        server.consumed(1, granted)
        (update,) = parse_frames(server.data_to_send())
        granted = update[3]
        sizes.append(server.recv_window(1))
    assert sizes == [2 * DEFAULT_WINDOW, 4 * DEFAULT_WINDOW, max_window, max_window]
    # a slow reader (half the window in more than 2 RTT) does not grow the window
    slow = YamuxSession(False, clock=clock)
    slow.rtt = 0.1
    slow.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
    slow.receive_data(data(1, b"x" * DEFAULT_WINDOW))
    clock.now += 1
    slow.consumed(1, DEFAULT_WINDOW)
    assert slow.recv_window(1) == DEFAULT_WINDOW


def test_window_growth_is_capped_per_connection():
    clock = FakeClock()
    s = YamuxSession(False, clock=clock, max_connection_window_growth=DEFAULT_WINDOW)
    s.rtt = 1.0
    for sid in (1, 3):
        s.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0))
        s.receive_data(data(sid, b"x" * DEFAULT_WINDOW))
        s.consumed(sid, DEFAULT_WINDOW)
    assert s.recv_window(1) == 2 * DEFAULT_WINDOW
    assert s.recv_window(3) == DEFAULT_WINDOW  # budget used up by stream 1
    s.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0))
    s.receive_data(data(3, b"x" * DEFAULT_WINDOW))
    s.consumed(3, DEFAULT_WINDOW)
    assert s.recv_window(3) == 2 * DEFAULT_WINDOW  # released when stream 1 went away


def test_no_window_update_after_remote_fin():
    client, server = pair()
    sid = client.open_stream()
    pump(client, server)
    server.data_to_send()
    server.receive_data(data(sid, b"x" * DEFAULT_WINDOW, FLAG_FIN))
    server.consumed(sid, DEFAULT_WINDOW)
    assert not server.has_data_to_send


# ------------------------------------------------------------------------------------------
# sans-I/O: stream limits


def test_inbound_stream_cap_refuses_with_rst_and_skips_body():
    s = YamuxSession(False, max_streams=2)
    events = s.receive_data(
        data(1, b"a", FLAG_SYN) + data(3, b"b", FLAG_SYN) + data(5, b"refused", FLAG_SYN)
        + data(5, b"more") + data(1, b"still fine")
    )
    assert merge(events) == [
        StreamOpened(1), DataReceived(1, b"a"), StreamOpened(3), DataReceived(3, b"b"),
        DataReceived(1, b"still fine"),
    ]
    frames = parse_frames(s.data_to_send())
    assert (TYPE_WINDOW_UPDATE, FLAG_RST, 5, 0, b"") in frames
    # once one closes there is room again
    s.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_RST, 3, 0))
    assert s.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 7, 0)) == [StreamOpened(7)]


def test_outbound_stream_cap():
    s = YamuxSession(True, max_outbound_streams=2)
    a = s.open_stream()
    s.open_stream()
    with pytest.raises(TooManyStreams):
        s.open_stream()
    s.reset_stream(a)
    s.open_stream()


# ------------------------------------------------------------------------------------------
# sans-I/O: protocol violations end the session with ProtocolError


@pytest.mark.parametrize(
    "raw, match",
    [
        (frame(TYPE_DATA, FLAG_SYN, 1, 0, version=1), "version"),
        (frame(7, 0, 0, 0), "unknown"),
        (frame(TYPE_DATA, 0, 0, 1, b"x"), "stream 0"),
        (frame(TYPE_WINDOW_UPDATE, 0, 0, 5), "stream 0"),
        (frame(TYPE_PING, FLAG_SYN, 3, 0), "PING on stream"),
        (frame(TYPE_PING, 0, 0, 0), "PING without"),
        (frame(TYPE_GO_AWAY, 0, 5, 0), "GO_AWAY on stream"),
        (frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0), "parity"),  # server-side id from the client
        (frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) * 2, "already open"),
        (frame(TYPE_DATA, FLAG_SYN, 1, 17 * 1024 * 1024), "exceeds the limit"),
        (frame(TYPE_DATA, 0, 99, 0xFFFFFFFF), "exceeds the limit"),  # even for unknown streams
        (frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) + frame(TYPE_WINDOW_UPDATE, 0, 1, 0xFFFFFFFF),
         "overflows"),
    ],
)
def test_protocol_errors(raw, match):
    server = YamuxSession(False)
    with pytest.raises(ProtocolError, match=match):
        server.receive_data(raw)
    with pytest.raises(ProtocolError):  # the session stays failed
        server.receive_data(b"")


def test_truncated_input_is_just_incomplete():
    s = YamuxSession(False)
    raw = data(1, b"hello world", FLAG_SYN)
    assert merge(s.receive_data(raw[:5]) + s.receive_data(raw[5:15])) == [
        StreamOpened(1), DataReceived(1, b"hel")
    ]
    assert s.receive_data(raw[15:]) == [DataReceived(1, b"lo world")]


# Frames a well-behaved client may send to a server, to feed with arbitrary split points.
_client_frames = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, 3), st.binary(max_size=300), st.booleans()),
        st.tuples(st.just("window"), st.integers(0, 3), st.integers(0, 1000), st.booleans()),
        st.tuples(st.just("ping"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("rst"), st.integers(0, 3)),
    ),
    max_size=25,
)


def _encode(ops) -> bytes:
    opened: set[int] = set()
    out = []
    for op in ops:
        if op[0] == "ping":
            out.append(frame(TYPE_PING, FLAG_SYN, 0, op[1]))
            continue
        sid = 2 * op[1] + 1
        flags = 0
        if sid not in opened:
            opened.add(sid)
            flags |= FLAG_SYN
        if op[0] == "data":
            out.append(data(sid, op[2], flags | (FLAG_FIN if op[3] else 0)))
        elif op[0] == "window":
            out.append(frame(TYPE_WINDOW_UPDATE, flags | (FLAG_FIN if op[3] else 0), sid, op[2]))
        else:
            out.append(frame(TYPE_WINDOW_UPDATE, flags | FLAG_RST, sid, 0))
    return b"".join(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_client_frames, cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_split_feeding_gives_the_same_events(ops, cuts):
    raw = _encode(ops)
    whole = YamuxSession(False)
    try:
        expected = merge(whole.receive_data(raw))
        expected_out = whole.data_to_send()
    except ProtocolError:
        return  # e.g. data after FIN handled, or generated sequences that break the protocol
    pieces = sorted({c % (len(raw) + 1) for c in cuts})
    split = YamuxSession(False)
    events = []
    prev = 0
    for cut in pieces + [len(raw)]:
        events += split.receive_data(raw[prev:cut])
        prev = cut
    assert merge(events) == expected
    assert split.data_to_send() == expected_out


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), is_client=st.booleans())
def test_garbage_raises_only_protocol_error(garbage, is_client):
    s = YamuxSession(is_client)
    try:
        s.receive_data(garbage)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.integers(0, 4), st.integers(0, 0xFFFF), st.integers(0, 6), st.integers(0, 2**32 - 1)
        ),
        max_size=20,
    )
)
def test_random_headers_raise_only_protocol_error(headers):
    s = YamuxSession(False)
    raw = b"".join(frame(t, f, sid, n) for t, f, sid, n in headers)
    try:
        s.receive_data(raw)
    except ProtocolError:
        pass


# ------------------------------------------------------------------------------------------
# asyncio muxer over an in-memory pipe


async def muxer_pair(on_stream=None, **kw) -> tuple[YamuxMuxer, YamuxMuxer]:
    a, b = memory_pipe()
    client = YamuxMuxer(a, True, **kw)
    server = YamuxMuxer(b, False, on_stream, **kw)
    client.start()
    server.start()
    return client, server


async def echo(stream) -> None:
    try:
        while chunk := await stream.read(65536):
            await stream.write(chunk)
        await stream.close()
    except StreamClosed:
        pass


async def read_all(stream) -> bytes:
    parts = []
    while chunk := await stream.read(65536):
        parts.append(chunk)
    return b"".join(parts)


async def wait_until(cond, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


def spawn_echo(stream) -> None:
    asyncio.get_running_loop().create_task(echo(stream))


async def test_echo_one_megabyte():
    client, server = await muxer_pair(spawn_echo)
    payload = os.urandom(1024 * 1024 + 7)
    stream = await client.open_stream()

    async def send():
        for i in range(0, len(payload), 65536):
            await stream.write(payload[i : i + 65536])
        await stream.close_write()

    sender = asyncio.create_task(send())
    got = await asyncio.wait_for(read_all(stream), 10)
    await sender
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    await stream.close()
    await client.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert server.close_reason == "connection closed by remote"


async def test_many_concurrent_streams_both_directions():
    client, server = await muxer_pair(spawn_echo)
    client.on_stream = spawn_echo  # settable before traffic, like the host does

    async def one(muxer, n):
        stream = await muxer.open_stream()
        payload = os.urandom(20_000 + n * 1000)
        writer = asyncio.create_task(_write_and_fin(stream, payload))
        got = await read_all(stream)
        await writer
        await stream.close()
        return got == payload

    results = await asyncio.wait_for(
        asyncio.gather(*(one(m, i) for i in range(40) for m in (client, server))), 20
    )
    assert all(results) and len(results) == 80
    await wait_until(lambda: client.num_streams == 0 and server.num_streams == 0)
    assert client.session.stream_ids == [] and server.session.stream_ids == []
    await client.close()


async def _write_and_fin(stream, payload: bytes, step: int = 8192) -> None:
    for i in range(0, len(payload), step):
        await stream.write(payload[i : i + step])
    await stream.close_write()


async def test_paused_reader_blocks_writer_and_loses_nothing():
    client, server = await muxer_pair()
    stream = await client.open_stream()
    payload = os.urandom(3 * 1024 * 1024)
    writer = asyncio.create_task(_write_and_fin(stream, payload, 65536))
    inbound = await asyncio.wait_for(server.accept_stream(), 5)
    # nobody reads: the writer runs out of window and stays blocked
    await wait_until(lambda: client.session.send_window(stream.stream_id) == 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert not writer.done()
    assert inbound.buffered == DEFAULT_WINDOW  # exactly the window, nothing more buffered

    # meanwhile another stream on the same connection still works
    other = await client.open_stream()
    await other.write(b"ping")
    await other.close_write()
    other_in = await asyncio.wait_for(server.accept_stream(), 5)
    assert await asyncio.wait_for(read_all(other_in), 5) == b"ping"

    got = await asyncio.wait_for(read_all(inbound), 10)
    await writer
    assert got == payload
    await client.close()


async def test_half_close():
    client, server = await muxer_pair()
    stream = await client.open_stream()
    await stream.write(b"request")
    await stream.close_write()
    with pytest.raises(StreamClosed):
        await stream.write(b"too late")
    inbound = await server.accept_stream()
    assert await read_all(inbound) == b"request"
    assert await inbound.read() == b""  # EOF stays EOF
    await inbound.write(b"response after the remote's FIN")
    await inbound.close()
    assert await read_all(stream) == b"response after the remote's FIN"
    await stream.close()
    assert client.num_streams == 0
    await wait_until(lambda: server.num_streams == 0)
    await client.close()


async def test_reset_reaches_the_other_side():
    client, server = await muxer_pair()
    stream = await client.open_stream()
    await stream.write(b"partial")
    inbound = await server.accept_stream()
    assert await inbound.read() == b"partial"
    reader = asyncio.create_task(inbound.read())
    await asyncio.sleep(0)
    stream.reset()
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(reader, 5)
    with pytest.raises(StreamResetError):
        await inbound.write(b"x")
    with pytest.raises(StreamResetError):
        await stream.read()
    await inbound.close()  # closing a reset stream is quiet
    assert client.num_streams == 0 and server.num_streams == 0
    await client.close()


async def test_writer_blocked_on_window_sees_reset():
    client, server = await muxer_pair()
    stream = await client.open_stream()
    writer = asyncio.create_task(stream.write(b"x" * (DEFAULT_WINDOW * 2)))
    inbound = await server.accept_stream()
    await wait_until(lambda: client.session.send_window(stream.stream_id) == 0)
    inbound.reset()
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(writer, 5)
    await client.close()


async def test_close_returns_at_once_and_lingers_until_remote_fin(monkeypatch):
    monkeypatch.setattr(yamux, "STREAM_CLOSE_TIMEOUT", 0.05)
    client, server = await muxer_pair()
    stream = await client.open_stream()
    await stream.write(b"hi")
    inbound = await server.accept_stream()
    await asyncio.wait_for(stream.close(), 1)  # does not wait for the remote (as js and rust)
    assert await read_all(inbound) == b"hi"
    assert client.num_streams == 1  # lingering until the remote's FIN
    await inbound.write(b"ignored: the closer no longer reads")
    await inbound.close_write()
    await asyncio.wait_for(stream.wait_closed(), 5)
    await asyncio.wait_for(asyncio.gather(*client.lingering), 5)
    assert client.num_streams == 0
    # a remote that never sends FIN: the lingering stream is reset after the timeout
    stream = await client.open_stream()
    inbound = await server.accept_stream()
    await asyncio.wait_for(stream.close(), 1)
    await asyncio.wait_for(asyncio.gather(*client.lingering), 5)
    await client.ping()  # the RST went out before this ping's reply came back
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(inbound.write(b"x"), 5)
    await client.close()


async def test_go_away_closes_connection_and_resets_streams():
    client, server = await muxer_pair()
    stream = await client.open_stream()
    await stream.write(b"x")
    inbound = await server.accept_stream()
    await server.close()
    assert server.close_reason == "closed locally"
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.close_reason == "connection closed by remote"
    assert client.session.remote_go_away == 0
    with pytest.raises(StreamResetError):
        await stream.read()
    assert await inbound.read() == b"x"  # what arrived before is still delivered
    with pytest.raises(StreamResetError):
        await inbound.read()
    with pytest.raises(StreamClosed):
        await client.open_stream()
    with pytest.raises(StreamClosed):
        await server.accept_stream()


async def test_connection_loss_resets_streams_but_keeps_finished_ones():
    a, b = memory_pipe()
    client = YamuxMuxer(a, True)
    server = YamuxMuxer(b, False)
    client.start()
    server.start()
    open_stream = await client.open_stream()
    finished = await client.open_stream()
    await open_stream.write(b"a")
    await finished.write(b"b")
    s1 = await server.accept_stream()
    s2 = await server.accept_stream()
    await s2.write(b"last words")
    await s2.close_write()
    await wait_until(lambda: finished.at_eof)
    pending_read = asyncio.create_task(open_stream.read())
    a.reset()  # the transport dies
    await asyncio.wait_for(client.wait_closed(), 5)
    await asyncio.wait_for(server.wait_closed(), 5)
    assert "connection lost" in client.close_reason
    with pytest.raises(StreamResetError):
        await pending_read
    assert await read_all(finished) == b"last words"  # finished before the loss: intact
    with pytest.raises(StreamResetError):
        await finished.write(b"x")
    assert await s1.read() == b"a"  # data received before the loss is still delivered
    with pytest.raises(StreamResetError):
        await s1.read()


async def test_ping_rtt():
    client, server = await muxer_pair()
    rtt = await asyncio.wait_for(client.ping(), 5)
    assert 0 <= rtt < 1
    assert await asyncio.wait_for(server.ping(), 5) >= 0
    await client.close()


async def test_inbound_cap_resets_extra_streams():
    client, server = await muxer_pair(max_inbound_streams=2)
    s1 = await client.open_stream()
    s2 = await client.open_stream()
    s3 = await client.open_stream()
    for s in (s1, s2, s3):
        await s.write(b"x")
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(s3.read(), 5)
    assert (await server.accept_stream()).stream_id == s1.stream_id
    assert (await server.accept_stream()).stream_id == s2.stream_id
    assert server.num_streams == 2 and not server.closed.is_set()
    await client.close()


async def test_protocol_error_sends_go_away_and_closes():
    a, b = memory_pipe()
    muxer = YamuxMuxer(b, False, spawn_echo)
    muxer.start()
    await a.write(data(1, b"fine", FLAG_SYN))
    await a.write(frame(9, 0, 0, 0))  # unknown frame type
    await asyncio.wait_for(muxer.wait_closed(), 5)
    assert muxer.close_reason.startswith("protocol error")
    received = await asyncio.wait_for(read_all(a), 5)
    frames = parse_frames(received)
    assert (TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR, b"") in frames


async def test_remote_error_go_away_ends_connection():
    a, b = memory_pipe()
    muxer = YamuxMuxer(b, False)
    muxer.start()
    await a.write(frame(TYPE_GO_AWAY, 0, 0, 2))
    await asyncio.wait_for(muxer.wait_closed(), 5)
    assert muxer.close_reason == "remote sent GoAway (internal error)"


async def test_small_conn_reads_and_many_small_writes():
    """Transport chunks of 7 bytes: frames split everywhere still reassemble."""
    a, b = memory_pipe(max_read=7)
    client = YamuxMuxer(a, True)
    server = YamuxMuxer(b, False, spawn_echo)
    client.start()
    server.start()
    stream = await client.open_stream()
    payload = os.urandom(5000)
    writer = asyncio.create_task(_write_and_fin(stream, payload, 97))
    assert await asyncio.wait_for(read_all(stream), 10) == payload
    await writer
    await client.close()
