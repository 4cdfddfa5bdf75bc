"""Our webrtc-direct against js-libp2p's @libp2p/webrtc webRTCDirect in Node 22
(node-datachannel / libdatachannel underneath), both ways, with megabytes of echo."""

from __future__ import annotations

import pytest

from p2prtc.identity import PeerId

from ..netns import lab_ip
from .test_core_js import echo_via

pytestmark = pytest.mark.interop
MB = 1 << 20


def direct_addr(host) -> str:
    addr = next(a for a in host.listen_addrs if a.has("webrtc-direct"))
    return str(addr.with_peer_id(host.peer_id))


async def test_js_node_dials_our_listener(host_factory, node_peer_factory):
    ours = await host_factory(listen=[f"/ip4/{lab_ip()}/udp/0/webrtc-direct"])
    js = await node_peer_factory(listen=[], extra_args=["--webrtc-direct"])
    dialed = await js.dial(direct_addr(ours))
    assert dialed["peer"] == str(ours.peer_id)
    assert "/webrtc-direct/" in dialed["remoteAddr"]
    assert 0 <= (await js.ping(peer=str(ours.peer_id)))["rtt_ms"] < 1000
    r = await js.echo(peer=str(ours.peer_id), bytes=4 * MB)
    assert r["bytes_received"] == 4 * MB and r["sha_received"] == r["sha_sent"]
    ident = await js.identify(str(ours.peer_id))
    assert ident["agentVersion"].startswith("p2prtc")

    conn = ours.connections(PeerId.from_string(js.peer_id))[0]
    assert conn.transport == "webrtc-direct" and conn.direction == "inbound"


async def test_we_dial_js_node_listener(host_factory, node_peer_factory):
    js = await node_peer_factory(listen=[f"/ip4/{lab_ip()}/udp/0/webrtc-direct"])
    target = js.addr("/webrtc-direct/")
    ours = await host_factory(listen=[])
    conn = await ours.dial(target)
    assert str(conn.remote_peer) == js.peer_id and conn.transport == "webrtc-direct"
    rtts = await ours.ping_service.ping(conn, count=3)
    assert max(rtts) < 1.0
    await echo_via(ours, conn, 4 * MB)
    info = await ours.identify.identified(conn)
    assert info is not None
