"""AutoNAT v2 against rust-libp2p 0.57 (`libp2p::autonat::v2`, tests/interop/rust with
--autonat-server / --autonat-client), both ways, inside scripts/netns-run.

rust's server asks for dial data whenever the address to dial is not the connection's observed
multiaddr (ip and port), so every check of a listen address of ours pays 30-100 kB of it."""

from __future__ import annotations

import pytest

from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.autonat import AutoNATService, ServerConfig
from p2prtc.protocols.autonat_core import Reachability, ServerPolicy

from .test_autonat_go import tcp_addr

pytestmark = pytest.mark.interop


async def test_our_client_against_rust_server(host_factory, rust_peer_factory):
    rust = await rust_peer_factory(extra=["--autonat-server"])
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(rust.addr("tcp"))
    result = await autonat.check(conn.remote_peer, [tcp_addr(ours, "127.0.0.1")])
    assert (result.status, result.dial_status) == ("ok", "ok"), result
    assert result.reachability is Reachability.PUBLIC
    assert 30_000 <= result.dial_data_sent <= 100_000  # rust: not the observed ip:port
    served = await rust.wait_event("autonat-server", timeout=10)
    assert served["ok"] and served["client"] == str(ours.peer_id)
    assert served["data_amount"] >= 30_000


async def test_our_client_unreachable_via_rust(host_factory, rust_peer_factory):
    rust = await rust_peer_factory(extra=["--autonat-server"])
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(rust.addr("tcp"))
    result = await autonat.check(conn.remote_peer, [Multiaddr("/ip4/127.0.0.1/tcp/1")])
    assert (result.status, result.dial_status) == ("ok", "dial-error"), result
    assert result.reachability is Reachability.PRIVATE


async def test_rust_client_against_our_server(host_factory, rust_peer_factory):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    service = AutoNATService(ours, server=ServerConfig(policy=ServerPolicy(allow_private=True)))
    rust = await rust_peer_factory(extra=["--autonat-client"])
    await rust.dial(str(tcp_addr(ours, "127.0.0.1").with_peer_id(ours.peer_id)))
    # rust tests the candidate identify gave it (its listen address) with us, its only server
    probe = await rust.wait_event("autonat-client", timeout=20)
    assert probe["ok"], probe
    assert probe["server"] == str(ours.peer_id) and probe["tested_addr"] == rust.addr("tcp").rsplit("/p2p/", 1)[0]
    assert service.served >= 1


async def test_rust_servers_make_a_direct_node_public(rust_peer_factory):
    """A Node listening on webrtc-direct only (`Node(direct=[...])`) connects to two rust-libp2p
    AutoNAT v2 servers: they dial its webrtc-direct address back (libp2p-webrtc) after our dial
    data, and the Node's confidence rules (net 2 answers) make it public."""
    from p2prtc import Node

    from ..helpers import public_verdict

    # libp2p-webrtc dials from the UDP socket of a webrtc-direct listener: give it one
    listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/198.51.100.7/udp/0/webrtc-direct"]
    servers = [await rust_peer_factory(listen=listen, extra=["--autonat-server"])
               for _ in range(2)]
    async with Node(stun=[], nat=False,
                    direct=["/ip4/198.51.100.7/udp/0/webrtc-direct"]) as node:
        events = node.events()
        for s in servers:
            await node.dial(s.addr("tcp"))  # a TCP address: a TCP connection
        await public_verdict(events)
        assert any("/webrtc-direct/certhash/" in a for a in node.addrs()), node.addrs()
    for s in servers:
        served = await s.wait_event("autonat-server", timeout=10)
        assert served["ok"] and "/webrtc-direct/" in served["tested_addr"], served
