"""Self-tests of the js-libp2p harness, js <-> js only: they prove the peers and fixtures work
before the same peers are pointed at our Python node."""

from __future__ import annotations

import pytest

from .jspeer import BrowserPeerError, PeerProcessError

pytestmark = pytest.mark.interop

MB = 1 << 20


def assert_echo_intact(result: dict, n: int) -> None:
    assert result["bytes_sent"] == n
    assert result["bytes_received"] == n
    assert result["sha_received"] == result["sha_sent"]


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_node_to_node(node_peer_factory, kind):
    server = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"])
    client = await node_peer_factory(listen=[])

    dialed = await client.dial(server.addr(kind))
    assert dialed["peer"] == server.peer_id
    assert dialed["direction"] == "outbound"
    assert ("/ws" in dialed["remoteAddr"]) == (kind == "ws")
    assert not dialed["limited"]
    inbound = await server.wait_event("connection", peer=client.peer_id)
    assert inbound["direction"] == "inbound"

    rtt = (await client.ping(peer=server.peer_id))["rtt_ms"]
    assert 0 <= rtt < 5000

    ident = await client.identify(server.peer_id)
    assert ident["agentVersion"].startswith("js-libp2p/")
    assert "/echo/1.0.0" in ident["protocols"]
    assert "/ipfs/ping/1.0.0" in ident["protocols"]
    assert ident["observedAddr"]  # the server saw our ephemeral address
    assert any(a.startswith("/ip4/127.0.0.1/") for a in ident["listenAddrs"])

    assert_echo_intact(await client.echo(peer=server.peer_id, bytes=MB), MB)

    conns = await client.connections()
    assert [c["peer"] for c in conns] == [server.peer_id]

    await client.hangup(server.peer_id)
    await server.wait_event("disconnection", peer=client.peer_id)
    assert await client.connections() == []


async def test_node_echo_edge_cases_and_perf(node_peer_factory):
    server = await node_peer_factory(seed=0)
    # seed 0 gives rust relay-server's well-known peer id (shared/REFERENCE.md)
    assert server.peer_id == "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    client = await node_peer_factory(listen=[])
    addr = server.addr("tcp")

    assert_echo_intact(await client.echo(addr=addr, bytes=0), 0)
    assert_echo_intact(await client.echo(addr=addr, bytes=1), 1)
    # odd chunk sizes, more than yamux's initial 256 KiB window
    assert_echo_intact(await client.echo(addr=addr, bytes=3 * MB + 7, chunk=1000_003), 3 * MB + 7)

    perf = await client.perf(addr=addr, upload_bytes=4 * MB, download_bytes=4 * MB)
    assert perf["upload_bytes"] == perf["download_bytes"] == 4 * MB
    assert perf["download_ms"] > 0


async def test_node_bad_commands_do_not_crash(node_peer_factory):
    peer = await node_peer_factory()
    with pytest.raises(PeerProcessError, match="unknown command"):
        await peer.call("no-such-command")
    with pytest.raises(PeerProcessError, match="bad multiaddr"):
        await peer.call("dial", addr="/not/a/multiaddr")
    with pytest.raises(PeerProcessError, match="bad peer id"):
        await peer.call("ping", peer="nope")
    with pytest.raises(PeerProcessError, match="need"):
        await peer.call("echo", bytes=10)
    with pytest.raises(PeerProcessError):  # nothing listens there
        await peer.call("dial", addr="/ip4/127.0.0.1/tcp/1", timeout_ms=5000)
    assert (await peer.call("info"))["peerId"] == peer.peer_id


@pytest.mark.browser
async def test_browser_to_node_ws(node_peer_factory, browser_factory):
    server = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0/ws"])
    page = await browser_factory()

    dialed = await page.dial(server.addr("ws"))
    assert dialed["peer"] == server.peer_id
    assert "/ws" in dialed["remoteAddr"]
    await server.wait_event("connection", peer=page.peer_id)

    rtt = (await page.ping(peer=server.peer_id))["rtt_ms"]
    assert 0 <= rtt < 5000

    ident = await page.identify(server.peer_id)
    assert ident["agentVersion"].startswith("js-libp2p/")
    assert "/echo/1.0.0" in ident["protocols"]
    # and the other way: Node learned the browser's agent
    back = await server.identify(page.peer_id)
    assert back["agentVersion"].startswith("js-libp2p/") and "browser/" in back["agentVersion"]

    assert_echo_intact(await page.echo(peer=server.peer_id, bytes=MB), MB)
    # Node -> browser stream over the browser's outbound connection
    assert_echo_intact(await server.echo(peer=page.peer_id, bytes=MB), MB)


@pytest.mark.browser
async def test_browser_errors_are_reported(browser_factory):
    page = await browser_factory()
    with pytest.raises(BrowserPeerError, match="bad multiaddr"):
        await page.dial("/not/a/multiaddr")
    with pytest.raises(BrowserPeerError, match="unknown command"):
        await page.call("no-such-command")


@pytest.mark.browser
async def test_browser_to_node_webrtc_via_node_relay(node_peer_factory, browser_factory):
    """Exercises --relay, --circuit/--webrtc and the browser's /webrtc dial (private-to-private)."""
    relay = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0/ws"], relay=True, name="js-relay")
    # node-datachannel on loopback: bind ICE to 127.0.0.1 (shared/TESTING.md)
    listener = await node_peer_factory(listen=["/p2p-circuit"], webrtc=True,
                                       rtc_config={"bindAddress": "127.0.0.1"}, name="js-listener")
    await listener.dial(relay.addr("ws"))
    webrtc_addr = await listener.wait_for_addr("/p2p-circuit/webrtc/")
    assert webrtc_addr.startswith(relay.addr("ws") + "/p2p-circuit/webrtc/p2p/")

    page = await browser_factory()
    dialed = await page.dial(webrtc_addr)
    assert dialed["peer"] == listener.peer_id
    # a direct WebRTC connection, not the relayed one
    assert "/webrtc" in dialed["remoteAddr"] and dialed["multiplexer"] == "/webrtc"
    assert not dialed["limited"]

    assert_echo_intact(await page.echo(peer=listener.peer_id, bytes=MB), MB)
    assert_echo_intact(await listener.echo(peer=page.peer_id, bytes=MB), MB)
