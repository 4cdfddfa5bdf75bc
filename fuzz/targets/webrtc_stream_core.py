"""transports/webrtc/stream_core.py: StreamCore, one libp2p stream's state on a data channel,
fed arbitrary sequences of data-channel messages, channel/connection ends and application calls.

Input: a byte choosing the receive limit, then records `op, len, bytes`. Contract: the channel
and connection inputs never raise; application calls raise only StreamClosed/StreamReset (the
documented errors); the unread buffer never passes the limit and matches what was received
minus what was read or dropped; reads return bytes in order, no more than asked; each of
RemoteFinished, FinAcknowledged, StreamWasReset and StreamFinished comes at most once, and
after StreamFinished only the channel's end still says RemoteFinished/FinAcknowledged (the
adapter wakes its readers with them); once the channel or connection ended, a read never waits
(None); what the core sends is valid framing, a RESET_STREAM at most once and nothing after it.
"""

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc import stream_core as sc

LIMITS = [64, 1000, 5000, sc.RECEIVE_BUFFER_LIMIT]
ONCE = (sc.RemoteFinished, sc.FinAcknowledged, sc.StreamWasReset, sc.StreamFinished)


class Model:
    def __init__(self, limit: int) -> None:
        self.core = sc.StreamCore(receive_limit=limit)
        self.seen: dict[type, int] = {}
        self.received = bytearray()  # payload bytes the core took (DataReceived)
        self.read = bytearray()
        self.dropped = 0
        self.reset_sent = False
        self.ended = False  # channel_closed / connection_closed came
        self.ref = framing.FrameDecoder()  # the same messages through a second decoder

    def events(self, evs: list) -> None:
        for ev in evs:
            if self.seen.get(sc.StreamFinished):
                assert isinstance(ev, (sc.RemoteFinished, sc.FinAcknowledged)), \
                    f"{ev} after StreamFinished"
            if isinstance(ev, ONCE):
                self.seen[type(ev)] = self.seen.get(type(ev), 0) + 1
                assert self.seen[type(ev)] == 1, f"{type(ev).__name__} twice"
            if isinstance(ev, sc.StreamWasReset) and not ev.by_remote:
                self.dropped = len(self.received) - len(self.read)
        core = self.core
        assert 0 <= core.buffered <= core.receive_limit
        assert core.buffered == len(self.received) - len(self.read) - self.dropped
        for frame in core.frames_to_send():
            assert not self.reset_sent, "a frame after our RESET_STREAM"
            frames = framing.FrameDecoder().feed(frame)
            assert len(frames) == 1
            if frames[0][0] == framing.RESET_STREAM:
                self.reset_sent = True


def test_one(data: bytes) -> None:
    if not data:
        return
    m = Model(LIMITS[data[0] & 3])
    core = m.core
    pos = 1
    while pos + 2 <= len(data):
        op, n = data[pos], data[pos + 1]
        body = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        kind = op % 10
        if kind <= 2:  # one message: raw, or framed by us (data / a flag / several)
            if kind == 1:
                body = framing.encode_data(body)
            elif kind == 2:
                body = framing.encode_flag(1 + (body[0] % 4 if body else 0)) \
                    + framing.encode_data(body[1:]) * (op >> 4)
            before = len(m.received)
            try:
                ref = [p for _f, p in m.ref.feed(body) if p]
            except Exception:
                ref = None
            evs = core.receive(body)
            for ev in evs:
                if isinstance(ev, sc.DataReceived):
                    assert ref, "DataReceived for no payload"
                    m.received += ref.pop(0)[:ev.size]
            assert len(m.received) - before == sum(e.size for e in evs
                                                   if isinstance(e, sc.DataReceived))
            m.events(evs)
        elif kind == 3:
            m.ended = True
            m.events(core.channel_closed())
        elif kind == 4:
            m.ended = m.ended or not core.finished  # (after finish() nobody reads)
            m.events(core.connection_closed("gone"))
        elif kind == 5:
            want = 1 + (body[0] if body else 0) * 17
            try:
                got = core.read(want)
            except StreamReset:
                assert core.reset_reason is not None and core.buffered == 0
                continue
            if got is None:
                assert core.buffered == 0 and not core.read_finished
                assert not m.ended, "a read would wait on a stream whose channel ended"
            elif got == b"":
                assert core.buffered == 0 and core.read_finished
            else:
                assert len(got) <= want
                start = len(m.read) + m.dropped
                assert bytes(m.received[start:start + len(got)]) == got, "read other bytes"
                m.read += got
            m.events([])
        elif kind == 6:
            try:
                frame = core.send_data(body)
            except (StreamClosed, StreamReset):
                assert core.reset_reason or core.write_closed or core.remote_stopped
            else:
                assert framing.FrameDecoder().feed(frame) == [(None, body or None)] or not body
        elif kind == 7:
            m.events(core.close_write())
        elif kind == 8:
            before = core.buffered
            evs = core.close_read()
            m.dropped += before - core.buffered
            m.events(evs)
        else:
            m.events(core.reset() if op & 16 else core.finish())
    if core.finished:
        assert core.receive(framing.encode_data(b"late")) == []


def seeds() -> list[bytes]:
    def rec(op, b=b""):
        return bytes([op, len(b)]) + b
    e, f = framing.encode_data, framing.encode_flag
    return [
        b"\x01" + rec(1, b"hello") + rec(5, b"\x00") + rec(5, b"\x05") + rec(6, b"out")
        + rec(7) + rec(0, f(framing.FIN_ACK)) + rec(0, f(framing.FIN)) + rec(5),
        b"\x00" + rec(1, b"x" * 50) + rec(1, b"y" * 50) + rec(5, b"\x01"),
        b"\x02" + rec(0, e(b"ab") + f(framing.STOP_SENDING)) + rec(6, b"w") + rec(8)
        + rec(1, b"dropped") + rec(3),
        b"\x03" + rec(0, e(b"c") + f(framing.RESET_STREAM)) + rec(5, b"\x01") + rec(5),
        b"\x01" + rec(0, b"\x05\x12\x03abc") + rec(0, b"\xff\xff\xff\x0f") + rec(4),
        b"\x01" + rec(1, b"z") + rec(0x19) + rec(6, b"after") + rec(9),
        b"\x00" + rec(0x32, b"\x00data") + rec(0x22, b"\x01") + rec(7),
    ]
