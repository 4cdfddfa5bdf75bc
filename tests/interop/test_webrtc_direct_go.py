"""webrtc-direct v1 and v2 (libp2p/specs#715) against go-libp2p 0.52 (its v2 landed in 0.49,
go-libp2p#3520), both ways: go dials our listener, we dial go's listener, in each version."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.events import ConnectionOpened
from p2prtc.identity import PeerId
from p2prtc.multiaddr import Multiaddr
from p2prtc.transports.webrtc_direct.dialer import dial

from .gopeer import GoListener, GoPeerMissing, go_dial, gopeer_binary

pytestmark = pytest.mark.interop

LISTEN = "/ip4/127.0.0.1/udp/0/webrtc-direct"


@pytest.fixture(scope="module")
def gopeer_built() -> str:
    try:
        return gopeer_binary()
    except GoPeerMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.mark.parametrize("version", [1, 2])
async def test_go_dials_our_listener(gopeer_built, host_factory, version):
    ours = await host_factory(listen=[LISTEN])
    inbound = asyncio.get_running_loop().create_future()
    ours.events.on(ConnectionOpened,
                   lambda e: inbound.done() or inbound.set_result(e.connection))
    addr = next(a for a in ours.listen_addrs if a.has("webrtc-direct")).with_peer_id(ours.peer_id)
    result = await go_dial(str(addr), version)
    assert 0 < result["rtt_ms"] < 1000 and result["remote"].endswith("/webrtc-direct")
    conn = await asyncio.wait_for(inbound, 5)
    assert conn.transport == "webrtc-direct" and conn.direction == "inbound"
    assert conn.details.webrtc_direct_version == version
    assert conn.details.ufrag.startswith(f"libp2p+webrtc+v{version}/")


@pytest.mark.parametrize("version", [1, 2])
async def test_we_dial_go_listener(gopeer_built, host_factory, version):
    go = await GoListener().start()
    ours = await host_factory(listen=[])
    try:
        conn = await dial(Multiaddr(go.addr), ours.identity, version)
        assert str(conn.remote_peer) == go.addr.rsplit("/p2p/", 1)[1]
        assert conn.details.webrtc_direct_version == version
        stream = await conn.new_stream(["/ipfs/ping/1.0.0"])
        payload = bytes(range(32))
        await stream.write(payload)
        got = b""
        while len(got) < 32:
            chunk = await asyncio.wait_for(stream.read(), 5)
            assert chunk
            got += chunk
        assert got == payload
        await stream.close()
        await conn.close()
        assert PeerId.from_string(go.addr.rsplit("/p2p/", 1)[1]) == conn.remote_peer
    finally:
        await go.close()
