"""WebRTC connections and streams in the budgets (p2prtc.resources), against fake channels: a
DataChannelMuxer given its connection's scope reserves each stream in the peer's scope and
keeps each stream's unread bytes reserved there (given back as they are read, or when the stream
or the connection ends); over the peer's memory budget only that stream is reset, with the
reason; a refused inbound stream is closed at once. tests/e2e/test_webrtc_budgets.py does it with
real peers."""

from __future__ import annotations

import logging

import pytest

from p2prtc.errors import StreamReset
from p2prtc.identity import Identity
from p2prtc.resources import (
    ConnectionScope,
    Refusal,
    ResourceLimitExceeded,
    ResourceLimits,
    ResourceManager,
    ScopeLimits,
)
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc.muxer import DataChannelMuxer
from p2prtc.transports.webrtc.stream import DataChannelStream

from .test_webrtc_muxer_limits import FakeChannel, FakePeerConnection, open_remote

KiB = 1024


def push(ch: FakeChannel, data: bytes) -> None:
    """`data` as the remote sends it: messages of at most framing.MAX_DATA_SIZE."""
    for i in range(0, len(data), framing.MAX_DATA_SIZE):
        ch.on_message(framing.encode_data(data[i:i + framing.MAX_DATA_SIZE]))


async def read_n(stream: DataChannelStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += await stream.read(n - len(out))
    return out


def peer_scope(rm: ResourceManager) -> tuple[ConnectionScope, object]:
    peer = Identity.generate().peer_id
    scope = rm.open_peer_connection("inbound", peer)
    assert isinstance(scope, ConnectionScope)
    return scope, peer


def muxer_with(rm: ResourceManager) -> tuple[DataChannelMuxer, FakePeerConnection, object,
                                             list[DataChannelStream]]:
    scope, peer = peer_scope(rm)
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc, resources=scope)
    accepted: list[DataChannelStream] = []
    muxer.on_stream = accepted.append
    muxer.start()
    return muxer, pc, peer, accepted


async def test_unread_bytes_count_in_the_peer_memory_until_read() -> None:
    rm = ResourceManager()
    muxer, pc, peer, accepted = muxer_with(rm)
    (ch,) = open_remote(pc, 1)
    assert rm.peer_usage(peer)["streams_inbound"] == 1
    ch.on_message(framing.encode_data(b"x" * 10 * KiB))
    ch.on_message(framing.encode_data(b"y" * 6 * KiB))
    assert rm.peer_usage(peer)["memory"] == 16 * KiB == accepted[0].buffered
    assert await accepted[0].read(4 * KiB) == b"x" * 4 * KiB
    assert rm.peer_usage(peer)["memory"] == 12 * KiB
    accepted[0].close_read()  # dropped unread: given back
    assert rm.peer_usage(peer)["memory"] == 0
    accepted[0].reset()  # the stream ends: its slot too
    assert rm.peer_usage(peer)["streams_inbound"] == 0
    await muxer.close()
    assert rm.peers == 0  # nothing left of the connection


async def test_over_the_peer_memory_budget_only_that_stream_is_reset(caplog) -> None:
    caplog.set_level(logging.INFO, "p2prtc.transports.webrtc")
    rm = ResourceManager(ResourceLimits(peer=ScopeLimits(memory=100 * KiB)))
    muxer, pc, peer, accepted = muxer_with(rm)
    a, b, c = open_remote(pc, 3)
    sent_b: list[bytes] = []
    b.send = sent_b.append  # type: ignore[method-assign]
    push(a, b"a" * 60 * KiB)
    push(b, b"b" * 30 * KiB)
    push(b, b"b" * 30 * KiB)  # 120 KiB: over the peer's 100
    sa, sb, sc = accepted
    assert sb.reset_reason is not None and "peer: cannot reserve memory" in sb.reset_reason
    assert framing.RESET_STREAM in [f for m in sent_b for f, _ in framing.FrameDecoder().feed(m)]
    with pytest.raises(StreamReset, match="cannot reserve memory"):
        await sb.read()
    assert rm.peer_usage(peer)["memory"] == 60 * KiB  # b's bytes given back, a's kept
    assert rm.refusals[("peer", "memory")] == 1
    assert any("cannot reserve memory" in r.getMessage() for r in caplog.records)
    # the other streams go on: a's bytes are intact, c takes new ones within the budget
    assert sa.reset_reason is None and await read_n(sa, 60 * KiB) == b"a" * 60 * KiB
    push(c, b"c" * 30 * KiB)
    assert sc.reset_reason is None and await read_n(sc, 30 * KiB) == b"c" * 30 * KiB
    assert rm.peer_usage(peer)["memory"] == 0
    await muxer.close()
    assert rm.peers == 0


async def test_streams_over_the_peer_budget_are_refused_both_ways() -> None:
    limits = ScopeLimits(streams_inbound=2, streams_outbound=1, streams=8)
    rm = ResourceManager(ResourceLimits(peer=limits))
    muxer, pc, peer, accepted = muxer_with(rm)
    channels = open_remote(pc, 3)
    assert len(accepted) == 2 and channels[2].closed_by_us and muxer.refused_channels == 1
    ours = await muxer.open_stream()
    with pytest.raises(ResourceLimitExceeded, match="streams outbound"):
        await muxer.open_stream()
    ours.reset()
    await muxer.open_stream()  # the slot came back
    await muxer.close()
    assert rm.peers == 0


def test_webrtc_connections_count_in_the_peer_connection_budget() -> None:
    rm = ResourceManager(ResourceLimits(peer=ScopeLimits(conns=2)))
    peer = Identity.generate().peer_id
    first = rm.open_peer_connection("outbound", peer)
    second = rm.open_peer_connection("inbound", peer)
    third = rm.open_peer_connection("inbound", peer)
    assert isinstance(first, ConnectionScope) and isinstance(second, ConnectionScope)
    assert isinstance(third, Refusal) and third.scope == "peer"
    assert "connections" in third.reason and "limit 2" in third.reason
    assert rm.usage()[2][2] == 2  # nothing of the refused one is held (system: conns)
    first.close()
    assert isinstance(rm.open_peer_connection("inbound", peer), ConnectionScope)

