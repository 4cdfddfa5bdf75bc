"""Our relay (`p2prtc relay`, the CLI) serving js-libp2p peers: a js Node peer reserves on it and is
reached through a circuit by a Python peer and by another js peer."""

from __future__ import annotations

import pytest

from p2prtc.connection import RelayLimit
from p2prtc.identity import PeerId
from p2prtc.transports.circuit import CircuitListener

from .relays import P2prtcRelay
from .test_core_js import echo_via

pytestmark = pytest.mark.interop
KB = 1024


@pytest.fixture
async def relay():
    r = await P2prtcRelay().start()
    yield r
    await r.stop()


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_js_reserves_and_is_reached_through_circuit(relay, node_peer_factory, host_factory, kind):
    listener = await node_peer_factory(listen=["/p2p-circuit"], circuit=True, name="js-listener")
    await listener.dial(relay.addr(kind))
    circuit_addr = await listener.wait_for_addr("/p2p-circuit")
    assert circuit_addr.startswith(relay.addr(kind)), circuit_addr

    # a Python peer dials js through our relay
    ours = await host_factory(listen=[])
    conn = await ours.dial(circuit_addr)
    assert conn.limited and conn.transport == "circuit"
    assert conn.remote_peer == PeerId.from_string(listener.peer_id)
    assert conn.details.limit == RelayLimit(duration=120, data=128 * KB)
    await echo_via(ours, conn, 32 * KB)
    await ours.ping_service.ping(conn)

    # and another js peer does too
    dialer = await node_peer_factory(listen=[], circuit=True, name="js-dialer")
    dialed = await dialer.dial(circuit_addr)
    assert dialed["peer"] == listener.peer_id and dialed["limited"]
    r = await dialer.echo(peer=listener.peer_id, bytes=16 * KB)
    assert r["sha_received"] == r["sha_sent"]


async def test_js_dialer_reaches_python_listener_through_our_relay(relay, node_peer_factory, host_factory):
    ours = await host_factory(listen=[])
    await ours.listen(f"{relay.addr('tcp')}/p2p-circuit")
    await ours.listeners(CircuitListener)[0].reserved()
    target = str(ours.listen_addrs[0].with_peer_id(ours.peer_id))
    dialer = await node_peer_factory(listen=[], circuit=True, name="js-dialer")
    dialed = await dialer.dial(target)
    assert dialed["peer"] == str(ours.peer_id) and dialed["limited"]
    r = await dialer.echo(peer=str(ours.peer_id), bytes=16 * KB)
    assert r["sha_received"] == r["sha_sent"]
