"""DataChannelMuxer: a peer connection whose ICE failed (the peer vanished) is closed, which
releases its ICE sockets. bench/soak.py found one UDP socket left per dialer that had left;
tests/e2e/test_soak.py checks the fd count with real aiortc peers."""

from __future__ import annotations

import asyncio

from p2prtc.transports.webrtc.muxer import DataChannelMuxer


class FakePeerConnection:
    """What DataChannelMuxer uses of engine.PeerConnection."""

    def __init__(self) -> None:
        self.on_datachannel = None
        self.on_state = None
        self.closed = asyncio.Event()
        self.close_calls = 0

    async def close(self) -> None:
        self.close_calls += 1
        self.closed.set()


async def test_failed_ice_closes_the_peer_connection():
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc)
    muxer.start()
    pc.on_state("connected")
    assert pc.close_calls == 0 and muxer.close_reason is None
    pc.on_state("failed")
    assert muxer.close_reason == "ICE connection failed (peer unreachable)"
    await asyncio.wait_for(pc.closed.wait(), 5)
    await asyncio.wait_for(muxer.wait_closed(), 5)
    pc.on_state("closed")  # what closing it reports: nothing more to do
    await muxer.close()  # the owner closing it later is harmless
    assert muxer.close_reason == "ICE connection failed (peer unreachable)"


async def test_local_close_is_not_doubled():
    pc = FakePeerConnection()
    muxer = DataChannelMuxer(pc)
    muxer.start()
    await muxer.close()
    pc.on_state("closed")
    await asyncio.sleep(0)
    assert pc.close_calls == 1 and muxer.close_reason == "closed locally"
