"""Our core stack (TCP/WebSocket, multistream, Noise, yamux, identify, ping) against js-libp2p 3.x
in Node 22 and in headless Chromium, both directions."""

from __future__ import annotations

import hashlib
import os

import pytest

from p2prtc import AGENT_VERSION
from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.echo import ECHO

pytestmark = pytest.mark.interop
MB = 1 << 20


def addr_of(host, kind: str) -> str:
    for a in host.listen_addrs:
        if (kind == "ws") == a.has("ws"):
            return str(a.with_peer_id(host.peer_id))
    raise AssertionError(f"no {kind} address in {host.listen_addrs}")


async def echo_via(host, target, n: int) -> bytes:
    payload = os.urandom(n)
    stream = await host.new_stream(target, [ECHO], allow_limited=True)

    async def send():
        view = memoryview(payload)
        for i in range(0, n, 64 * 1024):
            await stream.write(view[i:i + 64 * 1024])
        await stream.close_write()

    import asyncio

    async def receive():
        parts = []
        while chunk := await stream.read(1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    _, got = await asyncio.gather(send(), receive())
    await stream.close()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    return got


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_js_node_dials_us(host_factory, node_peer_factory, kind):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"])
    js = await node_peer_factory(listen=[])
    dialed = await js.dial(addr_of(ours, kind))
    assert dialed["peer"] == str(ours.peer_id)

    rtt = (await js.ping(peer=str(ours.peer_id)))["rtt_ms"]
    assert 0 <= rtt < 1000

    ident = await js.identify(str(ours.peer_id))
    assert ident["agentVersion"] == AGENT_VERSION
    assert {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", ECHO} <= set(ident["protocols"])
    assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in ident["listenAddrs"])
    assert ident["observedAddr"], "we must tell js the address we see it at"

    r = await js.echo(peer=str(ours.peer_id), bytes=MB)
    assert r["bytes_received"] == MB and r["sha_received"] == r["sha_sent"]

    # and what we learnt about js through its identify
    conn = ours.connections()[0]
    info = await ours.identify.identified(conn)
    assert info.agent_version.startswith("js-libp2p/")
    assert ECHO in info.protocols


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_we_dial_js_node(host_factory, node_peer_factory, kind):
    js = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"])
    ours = await host_factory(listen=[])
    conn = await ours.dial(js.addr(kind))
    assert str(conn.remote_peer) == js.peer_id
    assert conn.remote_addr.has("ws") == (kind == "ws")

    rtts = await ours.ping_service.ping(conn, count=3)
    assert all(0 <= r < 1 for r in rtts)

    info = await ours.identify.identified(conn)
    assert info.agent_version.startswith("js-libp2p/")
    assert {"/ipfs/ping/1.0.0", ECHO} <= set(info.protocols)
    assert info.observed_addr is not None and info.observed_addr.has("tcp")

    await echo_via(ours, conn, MB)

    # js sees our identify too
    ident = await js.identify(str(ours.peer_id))
    assert ident["agentVersion"] == AGENT_VERSION


async def test_identify_push_reaches_js(host_factory, node_peer_factory):
    js = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    ours = await host_factory(listen=[])
    conn = await ours.dial(js.addr("tcp"))
    await ours.identify.identified(conn)
    ours.handle("/p2prtc/test-push/1.0.0", lambda s: s.close())
    ev = await js.wait_event("identify", peer=str(ours.peer_id), timeout=10,
                             **{})
    for _ in range(5):  # the first identify event may predate the push
        if "/p2prtc/test-push/1.0.0" in ev["protocols"]:
            break
        ev = await js.wait_event("identify", peer=str(ours.peer_id), timeout=10)
    assert "/p2prtc/test-push/1.0.0" in ev["protocols"]


async def test_browser_dials_us_over_websocket(host_factory, browser_factory):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0/ws"])
    page = await browser_factory()
    dialed = await page.dial(addr_of(ours, "ws"))
    assert dialed["peer"] == str(ours.peer_id)
    assert (await page.ping(peer=str(ours.peer_id)))["rtt_ms"] < 1000
    ident = await page.identify(str(ours.peer_id))
    assert ident["agentVersion"] == AGENT_VERSION
    assert ECHO in ident["protocols"]
    r = await page.echo(peer=str(ours.peer_id), bytes=MB)
    assert r["bytes_received"] == MB and r["sha_received"] == r["sha_sent"]
    # our side authenticated the browser's peer id over Noise
    assert str(ours.connections()[0].remote_peer) == page.peer_id
    assert Multiaddr(ours.connections()[0].remote_addr).has("ws")
