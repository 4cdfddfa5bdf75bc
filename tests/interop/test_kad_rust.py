"""Our Kademlia DHT against rust-libp2p's kad (libp2p 0.57; tests/interop/rust/src/kad.rs),
both ways: our client against rust servers (FIND_NODE, PUT/GET, providers; a forged record
a rust node serves is dropped: rust validates nothing) and rust clients against our server
(PUT/GET, providers, closest peers; a forged PUT refused)."""

from __future__ import annotations

import pytest

from p2prtc.identity import Identity, PeerId
from p2prtc.kad.records import pk_key, sha256_multihash
from p2prtc.kad.service import KadService

from .rustkad import RustKad

pytestmark = pytest.mark.interop


@pytest.fixture
async def rust_nodes(rust_built):
    nodes: list[RustKad] = []

    async def make(mode: str = "server") -> RustKad:
        node = await RustKad(rust_built).start(mode)
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        await n.close()


async def test_our_client_against_rust_servers(host_factory, rust_nodes):
    r1, r2 = await rust_nodes(), await rust_nodes()
    assert (await r2.cmd("connect", addr=r1.addr))["kad"]
    host = await host_factory()
    kad = KadService(host, server=False).start()
    assert [str(p) for p in await kad.bootstrap([r1.addr])] == [r1.peer]
    # FIND_NODE of our own key went through r1 to r2
    assert {r1.peer, r2.peer} <= {str(p) for p in kad.table.peers()}
    assert await kad.find_peer(PeerId.from_string(r2.peer))

    key, value = pk_key(host.peer_id), host.identity.public_key.to_protobuf()
    assert await kad.put_value(key, value) == 2
    assert (await r2.cmd("stored", key=key.hex()))["value"] == value.hex()
    got = await r1.cmd("get", key=key.hex())
    assert got["ok"] and got["value"] == value.hex()

    # rust stores and serves a forged /pk/ record; our GET_VALUE drops it
    forged_key = pk_key(PeerId.from_public_key(Identity.generate().public_key))
    assert (await r1.cmd("put", key=forged_key.hex(), value=value.hex()))["ok"]
    assert (await r1.cmd("stored", key=forged_key.hex()))["value"] == value.hex()
    assert await kad.get_value(forged_key) is None

    ours = sha256_multihash(b"provided by p2prtc")
    assert await kad.provide(ours) == 2
    found = await r2.cmd("providers", key=ours.hex())
    assert found["ok"] and found["providers"] == [str(host.peer_id)]
    theirs = sha256_multihash(b"provided by rust")
    assert (await r2.cmd("provide", key=theirs.hex()))["ok"]
    provs = await kad.find_providers(theirs)
    assert [str(p.peer_id) for p in provs] == [r2.peer] and provs[0].addrs


async def test_rust_clients_against_our_server(host_factory, rust_nodes):
    host = await host_factory()
    kad = KadService(host, server=True).start()
    addr = str(host.listen_addrs[0].with_peer_id(host.peer_id))
    c1, c2 = await rust_nodes("client"), await rust_nodes("client")
    assert (await c1.cmd("connect", addr=addr))["kad"]
    assert (await c2.cmd("connect", addr=addr))["kad"]

    c1_pub = PeerId.from_string(c1.peer).extract_public_key()
    assert c1_pub is not None
    key, value = pk_key(PeerId.from_string(c1.peer)), c1_pub.to_protobuf()
    put = await c1.cmd("put", key=key.hex(), value=value.hex())
    assert put["ok"], put
    assert kad.store.get_record(key, now=0) == value
    got = await c2.cmd("get", key=key.hex())
    assert got["ok"] and got["value"] == value.hex()

    # a forged record: our server resets the stream, rust's quorum of one fails
    forged_key = pk_key(PeerId.from_string(c2.peer))
    put = await c1.cmd("put", key=forged_key.hex(), value=value.hex())
    assert not put["ok"]
    assert kad.store.get_record(forged_key, now=0) is None

    mh = sha256_multihash(b"rust provides")
    assert (await c1.cmd("provide", key=mh.hex()))["ok"]
    # rust reports the ADD_PROVIDER done once sent: wait until we took it
    await kad.wait_for_provider(mh, PeerId.from_string(c1.peer), 10)
    found = await c2.cmd("providers", key=mh.hex())
    assert found["providers"] == [c1.peer]
    closest = await c2.cmd("closest", key=b"anything".hex())
    assert closest["ok"] and closest["peers"] == [str(host.peer_id)]
