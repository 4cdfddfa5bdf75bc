"""The Kademlia core (p2prtc.kad): codec, k-buckets, the lookup state machine, record
validation, the request handler; and two of our own nodes over TCP (forged records refused)."""

from __future__ import annotations

import pytest

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity, PeerId
from p2prtc.kad.lookup import Lookup
from p2prtc.kad.messages import KadMessage, KadPeer, MessageType, Record, decode, encode
from p2prtc.kad.records import (InvalidRecord, open_peer_record, peer_provider_key,
                                peer_record_key, pk_key, seal_peer_record, select,
                                sha256_multihash, validate)
from p2prtc.kad.server import Store, handle_request
from p2prtc.kad.service import KadService
from p2prtc.kad.table import K, RoutingTable, kad_key, peer_key
from p2prtc.multiaddr import Multiaddr


def pid() -> PeerId:
    return Identity.generate().peer_id


def test_codec_round_trip_and_bad_input():
    a = KadPeer(pid(), (Multiaddr("/ip4/127.0.0.1/tcp/1"),))
    msg = KadMessage(MessageType.GET_VALUE, b"/pk/x", Record(b"/pk/x", b"v"), (a,), (a,))
    assert decode(encode(msg)) == msg
    with pytest.raises(ProtocolError):
        decode(b"\xff\xff")
    with pytest.raises(ProtocolError):  # type 9 does not exist
        decode(b"\x08\x09")
    # a peer with a bad id or address is dropped, not fatal (as go)
    from p2prtc.pb import kad_pb2
    pb = kad_pb2.Message(type=4)
    pb.closerPeers.add(id=b"junk")
    pb.closerPeers.add(id=a.peer_id.to_bytes(), addrs=[b"\xff\xff", a.addrs[0].to_bytes()])
    assert decode(pb.SerializeToString()).closer_peers == (a,)


def test_routing_table_buckets_and_closest():
    me = pid()
    table = RoutingTable(me, k=2)
    peers = [pid() for _ in range(60)]
    added = [p for p in peers if table.add(p)]
    assert not table.add(me)
    # bucket 0 (half the key space) holds at most k=2
    assert len(table) == len(added) < len(peers)
    target = kad_key(b"x")
    best = table.closest(target, 3)
    assert best == sorted(table.peers(), key=lambda p: peer_key(p) ^ target)[:3]
    table.remove(best[0])
    assert best[0] not in table


def test_lookup_converges_on_the_k_closest():
    target = kad_key(b"target")
    network = [pid() for _ in range(40)]
    ranked = sorted(network, key=lambda p: peer_key(p) ^ target)
    # each peer knows the 5 peers next closer than itself in the ranking
    knows = {p: ranked[max(0, i - 5):i] for i, p in enumerate(ranked)}
    lookup = Lookup(target, [KadPeer(ranked[-1])], k=4, alpha=3)
    queried = 0
    while not lookup.done:
        batch = lookup.next_queries()
        assert 0 < len(batch) <= 3 and lookup.in_flight() <= 3
        for p in batch:
            queried += 1
            if p.peer_id == ranked[10]:
                lookup.on_failure(p.peer_id)
            else:
                lookup.on_response(p.peer_id, [KadPeer(q) for q in knows[p.peer_id]])
    got = [p.peer_id for p in lookup.closest()]
    assert got == [p for p in ranked if p != ranked[10]][:4]
    assert queried < len(network)


def test_records_pk_and_peer_records():
    ident, other = Identity.generate(), Identity.generate()
    validate(pk_key(ident.peer_id), ident.public_key.to_protobuf())
    with pytest.raises(InvalidRecord):
        validate(pk_key(ident.peer_id), other.public_key.to_protobuf())
    with pytest.raises(InvalidRecord):
        validate(b"/unknown/x", b"v")
    addrs = [Multiaddr("/ip4/127.0.0.1/tcp/1/p2p-circuit")]
    env1 = seal_peer_record(ident, 1, addrs)
    env2 = seal_peer_record(ident, 2, addrs)
    validate(peer_record_key(ident.peer_id), env1)
    assert open_peer_record(env2).addrs == tuple(addrs)
    assert select(peer_record_key(ident.peer_id), [env1, env2]) == 1
    # a record signed by someone else under our key, or a tampered envelope: refused
    with pytest.raises(InvalidRecord):
        validate(peer_record_key(ident.peer_id), seal_peer_record(other, 3, addrs))
    tampered = env1.replace(b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x02")
    with pytest.raises(ProtocolError):
        validate(peer_record_key(ident.peer_id), tampered)


def test_handle_request():
    me, sender = pid(), pid()
    table, store = RoutingTable(me), Store()
    others = [pid() for _ in range(30)]
    for p in others:
        table.add(p, (Multiaddr("/ip4/127.0.0.1/tcp/9"),))
    table.add(sender)
    resp = handle_request(store, table, KadMessage(MessageType.FIND_NODE, b"k"), sender, 0)
    assert resp is not None and len(resp.closer_peers) == min(K, len(table) - 1)
    assert sender not in [p.peer_id for p in resp.closer_peers]
    ident = Identity.generate()
    key, value = pk_key(ident.peer_id), ident.public_key.to_protobuf()
    put = KadMessage(MessageType.PUT_VALUE, key, Record(key, value))
    assert handle_request(store, table, put, sender, 0) == put
    got = handle_request(store, table, KadMessage(MessageType.GET_VALUE, key), sender, 1)
    assert got is not None and got.record == Record(key, value)
    forged = KadMessage(MessageType.PUT_VALUE, pk_key(sender), Record(pk_key(sender), value))
    with pytest.raises(InvalidRecord):
        handle_request(store, table, forged, sender, 0)
    # providers: only the sender itself; keys must be multihashes
    mh = peer_provider_key(ident.peer_id)
    add = KadMessage(MessageType.ADD_PROVIDER, mh,
                     provider_peers=(KadPeer(sender, (Multiaddr("/ip4/1.2.3.4/tcp/1"),)),
                                     KadPeer(others[0])))
    assert handle_request(store, table, add, sender, 0) is None
    got = handle_request(store, table, KadMessage(MessageType.GET_PROVIDERS, mh), sender, 1)
    assert got is not None and [p.peer_id for p in got.provider_peers] == [sender]
    with pytest.raises(InvalidRecord):
        handle_request(store, table, KadMessage(MessageType.GET_PROVIDERS, b"nomh"), sender, 0)
    assert sha256_multihash(b"x")[:2] == b"\x12\x20"


async def test_our_server_refuses_forged_records(host_factory):
    server = await host_factory()
    KadService(server, server=True).start()
    client = await host_factory()
    kad = KadService(client, server=False).start()
    addr = server.listen_addrs[0].with_peer_id(server.peer_id)
    assert await kad.bootstrap([addr]) == [server.peer_id]
    target = KadPeer(server.peer_id, (Multiaddr(str(addr)).without_peer_id(),))
    value = client.identity.public_key.to_protobuf()
    forged_key = pk_key(server.peer_id)  # our key filed under the server's peer id
    with pytest.raises(Exception):  # noqa: B017 - the server resets the stream
        await kad.request(target, KadMessage(MessageType.PUT_VALUE, forged_key,
                                             Record(forged_key, value)))
    assert await kad.get_value(forged_key) is None
    good = pk_key(client.peer_id)
    assert await kad.put_value(good, value) == 1
    assert await kad.get_value(good) == value


async def test_bad_input_ends_only_that_stream(host_factory):
    """Garbage, an oversized length or an unknown type ends the stream it came on; the server
    goes on answering other streams of the same peer."""
    from p2prtc.kad.messages import PROTOCOL_ID
    from p2prtc.streams import read_length_prefixed, write_length_prefixed
    from p2prtc.wire.varint import encode_uvarint

    server = await host_factory()
    KadService(server, server=True).start()
    client = await host_factory()
    addr = server.listen_addrs[0].with_peer_id(server.peer_id)
    await client.dial(addr)
    for bad in (b"\x03\xff\xff\xff", encode_uvarint(5 << 20), b"\x02\x08\x09"):
        stream = await client.new_stream(server.peer_id, PROTOCOL_ID)
        await stream.write(bad)
        with pytest.raises(Exception):  # noqa: B017 - reset: the muxer's error type
            await read_length_prefixed(stream, 1 << 20)
    stream = await client.new_stream(server.peer_id, PROTOCOL_ID)
    await write_length_prefixed(stream, encode(KadMessage(MessageType.FIND_NODE, b"k")))
    answer = decode(await read_length_prefixed(stream, 1 << 20))
    assert answer.type is MessageType.FIND_NODE
    await stream.close()
