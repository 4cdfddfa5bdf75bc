"""DataChannelMuxer's bounds on what a remote opens (shared by /webrtc and webrtc-direct):
at most MAX_INBOUND_STREAMS streams at once, of which MAX_EARLY_CHANNELS before the connection
starts; channels past either are closed at once and keep nothing. Our own streams do not count.
And the engines' EarlyMessageBuffer (messages before a stream listens) stays bounded.
Against fake channels; tests/e2e/test_webrtc_stream_limits.py and
tests/interop/test_webrtc_stream_limits.py do it with real peers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from p2prtc.errors import StreamReset
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc.engine import MAX_EARLY_BYTES, MAX_EARLY_MESSAGES, EarlyMessageBuffer
from p2prtc.transports.webrtc.muxer import (
    MAX_EARLY_CHANNELS,
    MAX_INBOUND_STREAMS,
    DataChannelMuxer,
)
from p2prtc.transports.webrtc.stream import DataChannelStream


class FakeChannel:
    """What the muxer and DataChannelStream use of engine_base.DataChannel."""

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.label = ""
        self.ready_state = "open"
        self.buffered_amount = 0
        self.on_close = None
        self.on_message = None
        self.closed_by_us = False

    def send(self, data: bytes) -> None:
        pass

    async def wait_open(self) -> bool:
        return True

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed_by_us = True
        self.ready_state = "closed"


class FakePeerConnection:
    def __init__(self) -> None:
        self.on_datachannel = None
        self.on_state = None
        self.next_id = 1000

    def create_channel(self, label: str = "") -> FakeChannel:
        self.next_id += 2
        return FakeChannel(self.next_id)

    async def close(self) -> None:
        pass


def open_remote(pc: FakePeerConnection, n: int, first_id: int = 0) -> list[FakeChannel]:
    channels = [FakeChannel(first_id + 2 * i) for i in range(n)]
    for ch in channels:
        pc.on_datachannel(ch)
    return channels


def test_caps_are_yamux_s_and_a_few_early_ones():
    assert MAX_INBOUND_STREAMS == 256 and MAX_EARLY_CHANNELS == 16


async def test_inbound_streams_past_the_cap_are_closed_at_once(caplog):
    caplog.set_level(logging.INFO, "p2prtc.transports.webrtc.muxer")
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc)
    accepted: list[DataChannelStream] = []
    muxer.on_stream = accepted.append
    muxer.start()
    channels = open_remote(pc, 5000)
    assert len(accepted) == MAX_INBOUND_STREAMS == muxer.inbound_streams
    assert not any(ch.closed_by_us for ch in channels[:MAX_INBOUND_STREAMS])
    refused = channels[MAX_INBOUND_STREAMS:]
    assert all(ch.closed_by_us for ch in refused)
    assert muxer.refused_channels == 5000 - MAX_INBOUND_STREAMS
    # a refused channel keeps nothing a remote still sends on it
    refused[0].on_message(framing.encode_data(b"x" * 16000))
    lines = [r for r in caplog.records if "closing data channel" in r.getMessage()]
    assert 0 < len(lines) <= 14, len(lines)  # 1, 2, 4, ... 4096: a few lines, not thousands
    assert "256 streams open" in lines[0].getMessage()

    # our own streams do not count against the remote's cap
    ours = await asyncio.wait_for(muxer.open_stream(), 5)
    assert ours in muxer.streams and muxer.inbound_streams == MAX_INBOUND_STREAMS

    # a stream that ends frees its slot for the next channel
    accepted[0].reset()
    assert muxer.inbound_streams == MAX_INBOUND_STREAMS - 1
    (late,) = open_remote(pc, 1, first_id=20000)
    assert not late.closed_by_us and len(accepted) == MAX_INBOUND_STREAMS + 1


async def test_channels_before_the_connection_starts_are_capped_too():
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc)
    channels = open_remote(pc, 100)
    assert [ch.closed_by_us for ch in channels].count(False) == MAX_EARLY_CHANNELS
    assert muxer.inbound_streams == MAX_EARLY_CHANNELS
    accepted: list[DataChannelStream] = []
    muxer.on_stream = accepted.append
    muxer.start()
    assert len(accepted) == MAX_EARLY_CHANNELS
    open_remote(pc, 300, first_id=1000)  # once started, the cap is MAX_INBOUND_STREAMS
    assert len(accepted) == MAX_INBOUND_STREAMS


async def test_connection_end_resets_every_stream_with_its_reason():
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc)
    accepted: list[DataChannelStream] = []
    muxer.on_stream = accepted.append
    muxer.start()
    open_remote(pc, 3)
    await muxer.close()
    assert muxer.streams == set() and muxer.inbound_streams == 0
    for s in accepted:
        with pytest.raises(StreamReset, match="connection closed: closed locally"):
            await s.read()


class BufferedChannel(EarlyMessageBuffer):
    """The smallest engine channel: what both engines' DataChannel inherit for early messages."""

    def __init__(self) -> None:
        self._start_buffering()
        self.closed = False

    @property
    def id(self) -> int | None:
        return 7

    def close(self) -> None:
        self.closed = True

    def deliver(self, data: bytes) -> None:  # what the engine calls for each message
        self._deliver(data)


def test_early_messages_are_kept_in_order_then_handed_over():
    ch = BufferedChannel()
    for i in range(MAX_EARLY_MESSAGES):
        ch.deliver(bytes([i]))
    got: list[bytes] = []
    ch.on_message = got.append
    ch.deliver(b"after")
    assert got == [bytes([i]) for i in range(MAX_EARLY_MESSAGES)] + [b"after"] and not ch.closed


@pytest.mark.parametrize("flood", ["messages", "bytes"])
def test_too_much_early_data_closes_the_channel_and_keeps_nothing(flood):
    ch = BufferedChannel()
    if flood == "messages":
        for _ in range(MAX_EARLY_MESSAGES + 1):
            ch.deliver(b"x")
    else:
        for _ in range(MAX_EARLY_BYTES // 16000 + 1):
            ch.deliver(b"x" * 16000)
    assert ch.closed
    for _ in range(100):
        ch.deliver(b"x" * 16000)  # still arriving while the close takes effect: dropped
    got: list[bytes] = []
    ch.on_message = got.append
    assert got == []
