"""Our core stack and our relay against rust-libp2p 0.57 (a program built from crates.io,
tests/interop/rust): TCP and WebSocket with Noise + yamux, identify, ping, echo, both directions;
a rust peer reserving on `p2prtc relay` and being reached through the circuit."""

from __future__ import annotations

import pytest

from p2prtc import AGENT_VERSION
from p2prtc.identity import PeerId
from p2prtc.protocols.echo import ECHO
from p2prtc.transports.circuit import CircuitListener

from .relays import P2prtcRelay
from .test_core_js import addr_of, echo_via

pytestmark = pytest.mark.interop
MB = 1 << 20


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_we_dial_rust(host_factory, rust_peer_factory, kind):
    rust = await rust_peer_factory(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"])
    ours = await host_factory(listen=[])
    conn = await ours.dial(rust.addr(kind))
    assert str(conn.remote_peer) == rust.peer_id
    assert conn.security == "/noise" and conn.muxer_protocol == "/yamux/1.0.0"
    info = await ours.identify.identified(conn)
    assert info.agent_version.startswith("rust-libp2p/")
    assert {"/ipfs/ping/1.0.0", ECHO} <= set(info.protocols)
    rtt = await ours.ping_service.ping(conn)
    assert rtt[0] < 1
    await echo_via(ours, conn, MB)
    ident = await rust.identify(str(ours.peer_id))
    assert ident["agentVersion"] == AGENT_VERSION
    assert ident["observedAddr"]


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_rust_dials_us(host_factory, rust_peer_factory, kind):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"])
    rust = await rust_peer_factory(listen=[])
    dialed = await rust.dial(addr_of(ours, kind))
    assert dialed["peer"] == str(ours.peer_id)
    assert (await rust.ping(str(ours.peer_id)))["rtt_ms"] < 1000
    ident = await rust.identify(str(ours.peer_id))
    assert ident["agentVersion"] == AGENT_VERSION
    assert ECHO in ident["protocols"] and "/ipfs/id/push/1.0.0" in ident["protocols"]
    r = await rust.echo(str(ours.peer_id), MB)
    assert r["sha_received"] == r["sha_sent"]
    conn = ours.connections(PeerId.from_string(rust.peer_id))[0]
    info = await ours.identify.identified(conn)
    assert info.agent_version.startswith("rust-libp2p/")


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_rust_reserves_on_our_relay_and_is_reached(rust_peer_factory, host_factory, kind):
    relay = await P2prtcRelay().start()
    try:
        listener = await rust_peer_factory(listen=[])
        circuit_addrs = await listener.listen_relay(relay.addr(kind))
        target = next(a for a in circuit_addrs if a.startswith(relay.addr(kind)))
        ours = await host_factory(listen=[])
        conn = await ours.dial(target)
        assert conn.limited and str(conn.remote_peer) == listener.peer_id
        await echo_via(ours, conn, 32 * 1024)
        # and a second rust peer reaches it through our relay too
        dialer = await rust_peer_factory(listen=[])
        r = await dialer.echo(target, 16 * 1024)
        assert r["sha_received"] == r["sha_sent"]
    finally:
        await relay.stop()


async def test_we_reserve_on_upstream_like_rust_relay_without_retrying(rust_peer_factory, host_factory):
    """rust's relay-server only serves hop once identify gave it an external address (and then
    pushes its protocols): our client waits for that push instead of failing and backing off."""
    import time

    relay = await rust_peer_factory(mode="relay", quic=False, extra=["--observed-addrs-only"])
    ours = await host_factory(listen=[])
    t0 = time.perf_counter()
    await ours.listen(relay.addr("tcp") + "/p2p-circuit")
    info = await ours.listeners(CircuitListener)[0].reserved(10)
    assert time.perf_counter() - t0 < 1.0, "reservation needed a retry"
    assert str(info.relay) == relay.peer_id
