"""StreamCore (transports/webrtc/stream_core.py) driven with plain calls: frames in, events and
frames out, no channel, no event loop. Half-close (FIN / FIN_ACK), STOP_SENDING both ways,
RESET_STREAM, bad frames, the channel's end, and the bounded read buffer (STOP_SENDING, then
RESET_STREAM, buffer freed)."""

from __future__ import annotations

import pytest

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc.stream_core import (
    RECEIVE_BUFFER_LIMIT,
    DataReceived,
    FinAcknowledged,
    RemoteFinished,
    RemoteStoppedReading,
    StreamCore,
    StreamFinished,
    StreamWasReset,
)

FIN = framing.encode_flag(framing.FIN)
FIN_ACK = framing.encode_flag(framing.FIN_ACK)
STOP = framing.encode_flag(framing.STOP_SENDING)
RESET = framing.encode_flag(framing.RESET_STREAM)


def data(b: bytes) -> bytes:
    return framing.encode_data(b)


def flags(frames: list[bytes]) -> list[int | None]:
    dec = framing.FrameDecoder()
    return [f for m in frames for f, _ in dec.feed(m)]


def read_all(core: StreamCore) -> bytes:
    out = b""
    while (chunk := core.read(1 << 20)):
        out += chunk
    return out


def test_js_limit_is_4_mib():
    assert RECEIVE_BUFFER_LIMIT == 4 * 1024 * 1024


def test_data_then_fin_gives_data_eof_and_fin_ack():
    core = StreamCore()
    assert core.read(10) is None  # nothing yet: the adapter waits
    assert core.receive(data(b"hello")) == [DataReceived(5)]
    assert core.receive(FIN) == [RemoteFinished()]
    assert flags(core.frames_to_send()) == [framing.FIN_ACK]
    assert core.read(3) == b"hel" and core.read(10) == b"lo"
    assert core.read(10) == b""
    assert not core.finished  # we have not closed our side


def test_several_frames_in_one_message_and_a_frame_split_across_two():
    core = StreamCore()
    wire = data(b"a" * 100) + data(b"b" * 50) + FIN
    assert core.receive(wire[:60]) == []
    assert core.receive(wire[60:]) == [DataReceived(100), DataReceived(50), RemoteFinished()]
    assert read_all(core) == b"a" * 100 + b"b" * 50


def test_half_close_both_ways_finishes_once():
    core = StreamCore()
    assert core.close_write() == []
    assert flags(core.frames_to_send()) == [framing.FIN]
    with pytest.raises(StreamClosed):
        core.send_data(b"x")
    assert core.receive(FIN_ACK) == [FinAcknowledged()]
    assert core.receive(data(b"late") + FIN) == [DataReceived(4), RemoteFinished(),
                                                  StreamFinished()]
    assert core.read(100) == b"late"  # still readable once finished
    assert core.close_write() == [] and core.finish() == []  # StreamFinished exactly once
    assert core.receive(data(b"more")) == []


def test_remote_stop_sending_fails_writes_without_a_reset():
    core = StreamCore()
    assert core.receive(STOP) == [RemoteStoppedReading()]
    with pytest.raises(StreamClosed, match="stopped reading"):
        core.check_writable()
    assert core.frames_to_send() == []  # never answered with RESET_STREAM
    assert core.receive(data(b"still readable")) == [DataReceived(14)]


def test_remote_reset_keeps_what_came_before_readable():
    core = StreamCore()
    core.receive(data(b"before"))
    events = core.receive(RESET)
    assert events[0] == StreamWasReset("stream reset by remote", by_remote=True)
    assert events[-1] == StreamFinished()
    assert core.frames_to_send() == []  # no reset answers a reset
    assert core.read(100) == b"before"
    with pytest.raises(StreamReset, match="by remote"):
        core.read(100)
    with pytest.raises(StreamReset):
        core.send_data(b"x")


def test_bad_frame_resets_the_stream_with_the_reason():
    core = StreamCore()
    core.receive(data(b"x"))
    events = core.receive(b"\x80\x80\x40")  # a 1 MiB length prefix: over the 16 KiB cap
    assert isinstance(events[0], StreamWasReset) and not events[0].by_remote
    assert "bad frame" in events[0].reason
    assert flags(core.frames_to_send()) == [framing.RESET_STREAM]
    assert core.buffered == 0
    with pytest.raises(StreamReset, match="bad frame"):
        core.read(1)


def test_channel_end_is_end_of_stream_and_finishes():
    core = StreamCore()
    core.receive(data(b"last words"))
    assert core.channel_closed() == [RemoteFinished(), FinAcknowledged(), StreamFinished()]
    assert read_all(core) == b"last words"
    assert core.read(1) == b""


def test_connection_end_is_a_reset_by_remote_without_frames():
    core = StreamCore()
    events = core.connection_closed("ICE failed")
    assert events[0] == StreamWasReset("connection closed: ICE failed", by_remote=True)
    assert core.frames_to_send() == []


def test_local_reset_once():
    core = StreamCore()
    core.receive(data(b"unread"))
    events = core.reset()
    assert events[0] == StreamWasReset("stream reset locally", by_remote=False)
    assert StreamFinished() in events
    assert core.buffered == 0
    assert flags(core.frames_to_send()) == [framing.RESET_STREAM]
    assert core.reset() == [] and core.frames_to_send() == []


def test_close_read_drops_the_buffer_and_later_data():
    core = StreamCore()
    core.receive(data(b"unread"))
    assert core.close_read() == []
    assert flags(core.frames_to_send()) == [framing.STOP_SENDING]
    assert core.buffered == 0
    assert core.receive(data(b"ignored")) == []
    assert core.receive(FIN) == [RemoteFinished()]
    assert core.read(10) == b""


def test_close_read_after_remote_fin_sends_nothing():
    core = StreamCore()
    core.receive(FIN)
    core.frames_to_send()
    core.close_read()
    assert core.frames_to_send() == []


def test_past_the_limit_stop_sending_then_reset_and_the_buffer_is_freed():
    limit = 4 * 16000
    core = StreamCore(receive_limit=limit)
    for _ in range(4):
        assert core.receive(data(b"x" * 16000)) == [DataReceived(16000)]
    assert core.buffered == limit and core.frames_to_send() == []  # the limit itself is kept
    events = core.receive(data(b"y"))  # one byte too many
    reset = events[0]
    assert isinstance(reset, StreamWasReset) and not reset.by_remote
    assert f"passed {limit} bytes unread" in reset.reason
    assert events[-1] == StreamFinished()
    assert flags(core.frames_to_send()) == [framing.STOP_SENDING, framing.RESET_STREAM]
    assert core.buffered == 0
    with pytest.raises(StreamReset, match="unread"):
        core.read(1)
    with pytest.raises(StreamReset):
        core.send_data(b"x")
    # whatever the remote still had in flight is dropped, and nothing more is said
    assert core.receive(data(b"z" * 16000)) == [] and core.buffered == 0
    assert core.frames_to_send() == []


def test_reading_keeps_a_fast_stream_under_the_limit():
    core = StreamCore(receive_limit=50_000)
    for _ in range(100):  # 1.6 MB through a 50 KB buffer, read as it comes
        core.receive(data(b"q" * 16000))
        assert core.read(1 << 20) == b"q" * 16000
    assert core.reset_reason is None and core.buffered == 0
