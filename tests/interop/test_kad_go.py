"""Our Kademlia DHT against go-libp2p-kad-dht v0.42.2 (tests/interop/go/kad), both ways:
our client against go servers (FIND_NODE, PUT/GET of /pk/ records, providers, a forged record
refused) and go clients against our server (routing table admission, GET_VALUE, providers,
closest peers)."""

from __future__ import annotations

import pytest

from p2prtc.identity import Identity, PeerId
from p2prtc.kad.messages import KadMessage, KadPeer, MessageType, Record
from p2prtc.kad.records import pk_key, sha256_multihash
from p2prtc.kad.service import KadService
from p2prtc.multiaddr import Multiaddr
from p2prtc.multibase import b32encode_lower

from .gokad import GoKad, GoKadMissing, gokad_binary

pytestmark = pytest.mark.interop


def cid_of(multihash: bytes) -> str:
    """A CIDv1 (raw) of a multihash: go's Provide/FindProviders take CIDs, keyed by the hash."""
    return "b" + b32encode_lower(b"\x01\x55" + multihash)


@pytest.fixture(scope="module")
def gokad_built() -> str:
    try:
        return gokad_binary()
    except GoKadMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
async def go_nodes(gokad_built):
    nodes: list[GoKad] = []

    async def make(mode: str = "server") -> GoKad:
        node = await GoKad().start(mode)
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        await n.close()


async def test_our_client_against_go_servers(host_factory, go_nodes):
    g1, g2 = await go_nodes(), await go_nodes()
    assert (await g2.cmd("connect", addr=g1.addr))["in_rt"]
    host = await host_factory()
    kad = KadService(host, server=False).start()
    joined = await kad.bootstrap([g1.addr])
    assert [str(p) for p in joined] == [g1.peer]
    # FIND_NODE: the lookup of our own key went through g1 to g2
    assert {g1.peer, g2.peer} <= {str(p) for p in kad.table.peers()}
    addrs = await kad.find_peer(PeerId.from_string(g2.peer))
    assert Multiaddr(g2.addr).without_peer_id() in addrs

    # PUT_VALUE of our /pk/ record: go validates and stores it; go reads it back
    key, value = pk_key(host.peer_id), host.identity.public_key.to_protobuf()
    assert await kad.put_value(key, value) == 2
    got = await g2.cmd("get", key=key.hex())
    assert got["ok"] and bytes.fromhex(got["value"]) == value
    assert await kad.get_value(key) == value

    # a forged /pk/ record (another key under our peer id): go resets the stream, stores nothing
    forged_key = pk_key(PeerId.from_public_key(Identity.generate().public_key))
    forged = KadMessage(MessageType.PUT_VALUE, forged_key, Record(forged_key, value))
    with pytest.raises(Exception):  # noqa: B017 - a reset stream: the error type is the muxer's
        await kad.request(KadPeer(PeerId.from_string(g1.peer)), forged)
    got = await g1.cmd("get", key=forged_key.hex())
    assert not got["ok"]

    # providers both ways
    ours = sha256_multihash(b"provided by p2prtc")
    assert await kad.provide(ours) == 2
    found = await g2.cmd("find_providers", cid=cid_of(ours))
    assert found["ok"], found
    [prov] = found["providers"]
    assert prov["peer"] == str(host.peer_id) and prov["addrs"]
    theirs = sha256_multihash(b"provided by go")
    assert (await g2.cmd("provide", cid=cid_of(theirs)))["ok"]
    provs = await kad.find_providers(theirs)
    assert [str(p.peer_id) for p in provs] == [g2.peer]
    assert provs[0].addrs


async def test_go_clients_against_our_server(host_factory, go_nodes):
    host = await host_factory()
    kad = KadService(host, server=True).start()
    addr = str(host.listen_addrs[0].with_peer_id(host.peer_id))
    c1, c2 = await go_nodes("client"), await go_nodes("client")
    # go adds us to its routing table only because identify lists the protocol and we
    # answered its lookup check (a FIND_NODE)
    assert (await c1.cmd("connect", addr=addr))["in_rt"]
    assert (await c2.cmd("connect", addr=addr))["in_rt"]
    # go clients are not servers: they stay out of our table
    assert kad.table.peers() == []

    # go PUTs its /pk/ record on us; the other go client GETs it from us
    c1_id = PeerId.from_string(c1.peer)
    c1_pub = c1_id.extract_public_key()
    assert c1_pub is not None
    key, value = pk_key(c1_id), c1_pub.to_protobuf()
    put = await c1.cmd("put", key=key.hex(), value=value.hex())
    assert put["ok"], put
    assert kad.store.get_record(key, now=0) == value
    got = await c2.cmd("get", key=key.hex())
    assert got["ok"] and bytes.fromhex(got["value"]) == value

    # providers: go provides on us, the other go client finds it through us; ours too
    mh = sha256_multihash(b"go provides")
    assert (await c1.cmd("provide", cid=cid_of(mh)))["ok"]
    # ADD_PROVIDER has no answer: go's Provide returns once it is sent; wait until we took it
    await kad.wait_for_provider(mh, PeerId.from_string(c1.peer), 10)
    found = await c2.cmd("find_providers", cid=cid_of(mh))
    assert [p["peer"] for p in found["providers"]] == [c1.peer]
    assert found["providers"][0]["addrs"]
    mine = sha256_multihash(b"we provide")
    await kad.provide(mine)
    found = await c2.cmd("find_providers", cid=cid_of(mine))
    assert [p["peer"] for p in found["providers"]] == [str(host.peer_id)]

    # closest peers to any key: we are the only server they know
    closest = await c2.cmd("closest", key=b"anything".hex())
    assert closest["ok"] and closest["peers"] == [str(host.peer_id)]



async def test_a_go_dht_still_finds_our_listener(host_factory, go_nodes):
    """go refuses our peer-record namespace but keeps the provider record, with its circuit
    addresses: a dialer finds a listener published into a go-only DHT ("provider")."""
    g = await go_nodes()
    lis_host, dialer_host = await host_factory(), await host_factory()
    lis = KadService(lis_host, server=False).start()
    dialer = KadService(dialer_host, server=False).start()
    assert await lis.bootstrap([g.addr]) and await dialer.bootstrap([g.addr])
    circuit = Multiaddr(f"/ip4/127.0.0.1/tcp/4001/p2p/{g.peer}/p2p-circuit/webrtc")
    put, provided = await lis.publish_self([circuit])
    assert (put, provided) == (0, 1)
    addrs, source = await dialer.find_peer_addrs(lis_host.peer_id)
    # go answers with every address its peerstore has for the provider (identify's too)
    assert source == "provider" and circuit in addrs
