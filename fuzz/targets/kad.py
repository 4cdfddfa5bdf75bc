"""kad/messages.py and kad/server.py: the /ipfs/kad/1.0.0 codec and the DHT server's request
handler, fed a sequence of requests against one store and routing table (state carries over,
as on a long-running node).

Input: records `op, len_hi, len_lo, bytes`; op's low bits pick the sender, bit 2 whether the
body is the fuzzer's protobuf or one built from it with our encoders (a valid /pk/ or
/p2prtc-peer/ PUT_VALUE, an ADD_PROVIDER from the sender), bit 3 whether the peers a message
names go into the routing table (as a lookup does).
Contract: decode raises only ProtocolError; what decodes re-encodes to a message that decodes
to the same; handle_request raises only ProtocolError (InvalidRecord); its answer encodes and
decodes; the store never holds an invalid record nor more than its limits; GET_VALUE gives back
what PUT_VALUE stored; answers name at most k closer peers and k providers, never the sender.
"""

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.kad import messages as m
from p2prtc.kad import records, server, table
from p2prtc.multiaddr import Multiaddr

LOCAL = Identity.from_seed(20)
SENDERS = [Identity.from_seed(21 + i) for i in range(4)]
NOW = 1_800_000_000.0
ADDR = Multiaddr("/ip4/198.51.100.7/tcp/4001")


def _built(kind: int, sender: Identity, body: bytes) -> bytes:
    """A request made with our encoders, with the fuzzer's bytes in the free fields."""
    if kind == 0:  # /pk/: the sender's key (valid) or the fuzzer's bytes
        key = records.pk_key(sender.peer_id)
        value = sender.public_key.to_protobuf() if not body else body
        return m.encode(m.KadMessage(m.MessageType.PUT_VALUE, key, m.Record(key, value)))
    if kind == 1:  # a signed peer record with a fuzzed seq and addresses
        seq = int.from_bytes(body[:4], "big")
        addrs = []
        for i in range(4, len(body), 8):
            try:
                addrs.append(Multiaddr.from_bytes(body[i:i + 8]))
            except Exception:
                addrs.append(ADDR)
        key = records.peer_record_key(sender.peer_id)
        value = records.seal_peer_record(sender, seq, addrs[:4])
        return m.encode(m.KadMessage(m.MessageType.PUT_VALUE, key, m.Record(key, value)))
    if kind == 2:  # ADD_PROVIDER of a fuzzed key by the sender
        key = records.sha256_multihash(body) if len(body) & 1 else body
        return m.encode(m.KadMessage(m.MessageType.ADD_PROVIDER, key,
                                     provider_peers=(m.KadPeer(sender.peer_id, (ADDR,)),)))
    key = records.sha256_multihash(body) if len(body) & 1 else body
    t = (m.MessageType.GET_PROVIDERS, m.MessageType.GET_VALUE, m.MessageType.FIND_NODE)[kind % 3]
    return m.encode(m.KadMessage(t, key))


def test_one(data: bytes) -> None:
    store = server.Store()
    rt = table.RoutingTable(LOCAL.peer_id)
    now = NOW
    pos = 0
    while pos + 3 <= len(data):
        op = data[pos]
        n = int.from_bytes(data[pos + 1:pos + 3], "big") & 0x0FFF
        body = data[pos + 3:pos + 3 + n]
        pos += 3 + n
        sender = SENDERS[op & 3]
        raw = _built((op >> 4) & 7, sender, body) if op & 4 else body
        now += (op >> 4) ** 3 * 60.0  # up to 56 h: records (36 h) and providers (48 h) expire
        try:
            msg = m.decode(raw)
        except ProtocolError:
            continue
        _round_trip(msg)
        if op & 8:
            for p in msg.closer_peers + msg.provider_peers:
                rt.add(p.peer_id, p.addrs)
        try:
            answer = server.handle_request(store, rt, msg, sender.peer_id, now)
        except ProtocolError:
            continue
        if answer is None:
            assert msg.type is m.MessageType.ADD_PROVIDER
        else:
            _round_trip(answer)
            assert len(answer.closer_peers) <= table.K
            assert len(answer.provider_peers) <= table.K
            assert all(p.peer_id != sender.peer_id for p in answer.closer_peers)
            if answer.record is not None:
                records.validate(answer.record.key, answer.record.value)
        if msg.type is m.MessageType.PUT_VALUE:
            assert msg.record is not None
            stored = store.get_record(msg.record.key, now)
            assert stored is not None
            records.validate(msg.record.key, stored)
        assert store.record_count() <= server.MAX_RECORDS


def _round_trip(msg: m.KadMessage) -> None:
    again = m.decode(m.encode(msg))
    assert again.type == msg.type and again.key == msg.key and again.record == msg.record
    assert [p.peer_id for p in again.closer_peers] == [p.peer_id for p in msg.closer_peers]
    assert [p.peer_id for p in again.provider_peers] == [p.peer_id for p in msg.provider_peers]
    for a, b in zip(again.closer_peers + again.provider_peers,
                    msg.closer_peers + msg.provider_peers):
        assert a.addrs == b.addrs[:m.MAX_ADDRS_SENT_PER_PEER]


def seeds() -> list[bytes]:
    def rec(op, b=b""):
        return bytes([op]) + len(b).to_bytes(2, "big") + b
    T = m.MessageType
    peers = tuple(m.KadPeer(Identity.from_seed(40 + i).peer_id, (ADDR,)) for i in range(3))
    pkey = records.peer_record_key(SENDERS[1].peer_id)
    prov = records.peer_provider_key(SENDERS[2].peer_id)
    return [
        rec(0x08, m.encode(m.KadMessage(T.FIND_NODE, b"k", closer_peers=peers)))
        + rec(0x01, m.encode(m.KadMessage(T.FIND_NODE, SENDERS[0].peer_id.to_bytes())))
        + rec(0x02, m.encode(m.KadMessage(T.PING))),
        rec(0x04) + rec(0x01, m.encode(m.KadMessage(T.GET_VALUE, records.pk_key(
            SENDERS[0].peer_id)))),
        rec(0x15, b"\x00\x00\x00\x07" + ADDR.to_bytes())
        + rec(0x35, b"\x00\x00\x00\x03") + rec(0x01, m.encode(m.KadMessage(T.GET_VALUE, pkey))),
        rec(0x26, b"x") + rec(0x06, m.encode(m.KadMessage(T.GET_PROVIDERS, prov))),
        rec(0x22, m.encode(m.KadMessage(T.ADD_PROVIDER, prov, provider_peers=(
            m.KadPeer(SENDERS[2].peer_id, (ADDR,)),) + peers)))
        + rec(0x03, m.encode(m.KadMessage(T.GET_PROVIDERS, prov))),
        rec(0x00, m.encode(m.KadMessage(T.PUT_VALUE, b"/ipns/x", m.Record(b"/ipns/x", b"v")))),
        # more peers in one message than MAX_PEERS_PER_MESSAGE (empty entries: 2 bytes each)
        rec(0x00, m.encode(m.KadMessage(T.FIND_NODE, b"k")) + b"\x42\x00" * 101),
    ]
