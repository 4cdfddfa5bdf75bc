"""The stream state machine over one data channel (specs: webrtc/README.md), against a fake
channel: framing of writes, FIN / FIN_ACK half-close, STOP_SENDING (never answered with a reset),
RESET_STREAM, bad frames, channel close, and write backpressure."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc import stream as stream_mod
from p2prtc.transports.webrtc.stream import DataChannelStream


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_message = None
        self.on_close = None
        self.ready_state = "open"
        self.id = 3
        self.label = ""
        self.buffered_amount = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.closed_by_us = False

    def send(self, data: bytes) -> None:
        assert self.ready_state == "open"
        assert len(data) <= framing.MAX_ENCODED_SIZE
        self.sent.append(data)

    async def wait_open(self) -> bool:
        return self.ready_state == "open"

    async def drain(self) -> None:
        await self.drained.wait()

    def close(self) -> None:
        self.closed_by_us = True
        if self.ready_state != "closed":
            self.ready_state = "closed"

    # test helpers
    def frames(self):
        dec = framing.FrameDecoder()
        out = []
        for m in self.sent:
            out += dec.feed(m)
        return out

    def flags(self):
        return [f for f, _ in self.frames() if f is not None]

    def deliver(self, *wire: bytes) -> None:
        for w in wire:
            self.on_message(w)


def data_of(ch: FakeChannel) -> bytes:
    return b"".join(m for f, m in ch.frames() if m)


async def test_write_is_framed_under_16_kib():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    payload = bytes(range(256)) * 200  # 51,200 bytes
    await s.write(payload)
    assert data_of(ch) == payload
    assert len(ch.sent) == 4  # 16377-byte pieces


async def test_remote_fin_gives_eof_and_fin_ack():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(framing.encode_data(b"hello"), framing.encode_flag(framing.FIN))
    assert await s.read() == b"hello"
    assert await s.read() == b""
    assert ch.flags() == [framing.FIN_ACK]


async def test_close_write_waits_for_fin_ack_then_both_sides_done_closes_channel():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    closing = asyncio.ensure_future(s.close_write())
    await asyncio.sleep(0)
    assert ch.flags() == [framing.FIN] and not closing.done()
    ch.deliver(framing.encode_flag(framing.FIN_ACK))
    await asyncio.wait_for(closing, 1)
    assert not ch.closed_by_us  # the remote may still write
    ch.deliver(framing.encode_data(b"late"), framing.encode_flag(framing.FIN))
    assert await s.read() == b"late"
    assert ch.closed_by_us  # FIN sent + acknowledged, FIN received: nothing more to carry
    with pytest.raises(StreamClosed):
        await s.write(b"x")


async def test_stop_sending_makes_writes_fail_without_a_reset():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(framing.encode_flag(framing.STOP_SENDING))
    with pytest.raises(StreamClosed):
        await s.write(b"x")
    assert framing.RESET_STREAM not in ch.flags()


async def test_remote_reset():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(framing.encode_flag(framing.RESET_STREAM))
    with pytest.raises(StreamReset):
        await s.read()
    with pytest.raises(StreamReset):
        await s.write(b"x")
    assert ch.closed_by_us


async def test_bad_frame_resets_only_this_stream():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(b"\x80\x80\x40")  # a length prefix of 1 MiB: far over the 16 KiB cap
    with pytest.raises(StreamReset, match="bad frame"):
        await s.read()
    assert framing.RESET_STREAM in ch.flags()


async def test_channel_close_is_end_of_stream():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(framing.encode_data(b"last words"))
    ch.ready_state = "closed"
    ch.on_close()
    assert await s.read() == b"last words"
    assert await s.read() == b""


async def test_write_waits_while_the_channel_is_full():
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.buffered_amount = 10 << 20
    ch.drained.clear()
    writing = asyncio.ensure_future(s.write(b"x" * 40000))
    await asyncio.sleep(0)
    assert not writing.done() and len(ch.sent) == 1  # sent one piece, then waits
    ch.buffered_amount = 0
    ch.drained.set()
    await asyncio.wait_for(writing, 1)
    assert data_of(ch) == b"x" * 40000


async def test_close_stops_reading_and_waits_bounded(monkeypatch):
    monkeypatch.setattr(stream_mod, "FIN_ACK_TIMEOUT", 0.05)
    monkeypatch.setattr(stream_mod, "REMOTE_FIN_TIMEOUT", 0.05)
    ch = FakeChannel()
    s = DataChannelStream(ch)
    ch.deliver(framing.encode_data(b"unread"))
    await asyncio.wait_for(s.close(), 2)  # no FIN_ACK, no FIN from the remote: bounded
    assert ch.flags()[:2] == [framing.FIN, framing.STOP_SENDING]
    assert ch.closed_by_us


async def test_unread_data_past_the_limit_resets_only_this_stream(caplog):
    ch, other_ch = FakeChannel(), FakeChannel()
    finished: list[DataChannelStream] = []
    s = DataChannelStream(ch, on_finished=finished.append, receive_limit=3 * 16000)
    other = DataChannelStream(other_ch, receive_limit=3 * 16000)
    s.protocol = "/test/sink/1.0.0"
    for _ in range(3):
        ch.deliver(framing.encode_data(b"x" * 16000))
    assert s.buffered == 3 * 16000 and not ch.closed_by_us  # the limit itself is kept
    ch.deliver(framing.encode_data(b"y"))
    assert ch.flags() == [framing.STOP_SENDING, framing.RESET_STREAM]
    assert ch.closed_by_us and s.buffered == 0 and finished == [s]
    with pytest.raises(StreamReset, match="passed 48000 bytes unread"):
        await s.read()
    with pytest.raises(StreamReset):
        await s.write(b"x")
    assert any("/test/sink/1.0.0" in r.getMessage() and "unread" in r.getMessage()
               for r in caplog.records)
    other_ch.deliver(framing.encode_data(b"fine"), framing.encode_flag(framing.FIN))
    assert await other.read() == b"fine" and await other.read() == b""
