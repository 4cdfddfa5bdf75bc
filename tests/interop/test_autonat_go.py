"""AutoNAT v2 against go-libp2p 0.52's p2p/protocol/autonatv2 (tests/interop/go/autonat), both
ways, inside scripts/netns-run: loopback and the veth's 198.51.100.7 are the only addresses.

Our client against go's server (AllowPrivateAddrs): a listening address -> OK/public; a port
nobody listens on -> E_DIAL_ERROR/private; our veth address asked over a loopback connection ->
go asks for dial data (amplification protection) and we pay it. go's client against our server:
its own address -> OK; an address on another IP -> our dial-data request, then OK; a private
address of another host -> E_DIAL_REFUSED."""

from __future__ import annotations

import pytest

from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.autonat import AutoNATService, ServerConfig
from p2prtc.protocols.autonat_core import MIN_DIAL_DATA, Reachability, ServerPolicy

from .autonatpeer import GoAutoNATServer, autonatpeer_binary, go_check

pytestmark = pytest.mark.interop

VETH = "198.51.100.7"  # scripts/netns-run


@pytest.fixture(scope="module")
def autonatpeer_built() -> str:
    try:
        return autonatpeer_binary()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
async def go_server(autonatpeer_built):
    server = await GoAutoNATServer().start("127.0.0.1")
    yield server
    await server.close()


def tcp_addr(host, ip: str) -> Multiaddr:
    return next(a for a in host.listen_addrs if a.value_for("ip4") == ip and a.has("tcp")
                and not a.has("ws"))


async def test_our_client_reachable_via_go(host_factory, go_server):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(go_server.addr)
    mine = tcp_addr(ours, "127.0.0.1")
    result = await autonat.check(conn.remote_peer, [mine])
    assert (result.status, result.dial_status, result.index) == ("ok", "ok", 0), result
    assert result.reachability is Reachability.PUBLIC and result.dial_data_sent == 0
    # probe() finds go as a server through identify and reaches the same verdict
    await ours.identified(conn)
    assert autonat.servers() == [conn.remote_peer]
    assert await autonat.probe([mine]) is Reachability.PUBLIC


async def test_our_client_unreachable_via_go(host_factory, go_server):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(go_server.addr)
    nobody = Multiaddr("/ip4/127.0.0.1/tcp/1")  # nothing listens on port 1 in the netns
    result = await autonat.check(conn.remote_peer, [nobody])
    assert (result.status, result.dial_status) == ("ok", "dial-error"), result
    assert result.reachability is Reachability.PRIVATE
    # probe() asks the servers identify named: wait for it (a CI run probed before: "unknown")
    await ours.identified(conn)
    assert await autonat.probe([nobody]) is Reachability.PRIVATE


async def test_our_client_pays_go_dial_data(host_factory, go_server):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0", f"/ip4/{VETH}/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(go_server.addr)  # from 127.0.0.1: the veth address is another IP
    result = await autonat.check(conn.remote_peer, [tcp_addr(ours, VETH)])
    assert (result.status, result.dial_status) == ("ok", "ok"), result
    assert 30_000 <= result.dial_data_sent <= 100_000


async def test_our_client_declines_dial_data(host_factory, go_server):
    from p2prtc.errors import ProtocolError

    ours = await host_factory(listen=[f"/ip4/{VETH}/tcp/0"])
    autonat = AutoNATService(ours)
    conn = await ours.dial(go_server.addr)
    with pytest.raises(ProtocolError, match="dial data"):
        await autonat.check(conn.remote_peer, [tcp_addr(ours, VETH)], send_dial_data=False)


def netns_public(ip: str) -> bool:
    """The veth's range plays the internet; loopback and everything else stay private."""
    return ip.startswith("198.51.100.")


async def our_server(host_factory, policy: ServerPolicy):
    ours = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    service = AutoNATService(ours, server=ServerConfig(policy=policy))
    return ours, service, str(tcp_addr(ours, "127.0.0.1").with_peer_id(ours.peer_id))


async def test_go_client_against_our_server(host_factory, autonatpeer_built):
    _, service, addr = await our_server(host_factory, ServerPolicy(allow_private=True))
    result = await go_check(addr, ip="127.0.0.1")
    assert result.get("reachability") == "public" and result["idx"] == 0, result
    assert service.served == 1


async def test_go_client_pays_our_dial_data(host_factory, autonatpeer_built):
    policy = ServerPolicy(allow_private=True, is_public=netns_public)
    _, service, addr = await our_server(host_factory, policy)
    # go listens on the veth address and reaches us over loopback: another IP -> dial data
    result = await go_check(addr, ip=VETH)
    assert result.get("reachability") == "public", result
    assert service.served == 1 and MIN_DIAL_DATA <= service.dial_data_received


async def test_our_server_refuses_a_third_partys_private_address(host_factory, autonatpeer_built):
    _, service, addr = await our_server(host_factory, ServerPolicy(allow_private=True))
    victim = f"/ip4/{VETH}/tcp/22"  # private, and not the IP go connects from
    result = await go_check(addr, ip="127.0.0.1", check=[victim])
    assert result.get("all_refused") is True, result
    assert service.served == 1 and service.dial_data_received == 0


async def test_go_servers_make_a_direct_node_public(autonatpeer_built):
    """A Node listening on webrtc-direct only (`Node(direct=[...])`) connects to two go-libp2p
    AutoNAT v2 servers: they dial its webrtc-direct address back (go's webrtc-direct dialer), the
    Node's confidence rules (net 2 answers) make it public and it advertises the address."""
    from p2prtc import Node

    from ..helpers import public_verdict

    servers = [await GoAutoNATServer().start(VETH) for _ in range(2)]
    try:
        async with Node(stun=[], nat=False,
                        direct=[f"/ip4/{VETH}/udp/0/webrtc-direct"]) as node:
            events = node.events()
            assert node.addrs() == []
            for s in servers:
                await node.dial(s.addr)  # a TCP address: a TCP connection
            verdict = await public_verdict(events)
            assert verdict.servers == 2
            assert any("/webrtc-direct/certhash/" in a for a in node.addrs()), node.addrs()
    finally:
        for s in servers:
            await s.close()
