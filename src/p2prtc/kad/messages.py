"""The /ipfs/kad/1.0.0 Message and its codec (specs: kad-dht/README.md, "RPC messages").

Messages travel uvarint-length-prefixed; `decode` turns the protobuf into `KadMessage`, dropping
peers whose id is no peer id and addresses that do not parse (what go does), and raises
`ProtocolError` for anything else malformed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..identity import PeerId
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb import kad_pb2

PROTOCOL_ID = "/ipfs/kad/1.0.0"

# go-libp2p-kad-dht reads messages with msgio's 4 MiB limit (network.MessageSizeMax = 4 << 20);
# rust-libp2p kad's default max_packet_size is 16 KiB, so we never send more than that in one.
MAX_MESSAGE_SIZE = 4 << 20
# Peers and addresses taken from one message: the spec's k (20) closer peers plus providers;
# go answers GET_PROVIDERS with up to k providers too. More than this is not honest traffic.
MAX_PEERS_PER_MESSAGE = 100
# Addresses kept per peer entry we read (go's peerstore keeps all; ours keeps 32, peerstore.py).
MAX_ADDRS_PER_PEER = 32
# Addresses sent per peer entry: rust-libp2p kad refuses messages over 16 KiB (max_packet_size),
# and k=20 entries of 10 addresses (~50 bytes each) stay well under it.
MAX_ADDRS_SENT_PER_PEER = 10


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


@dataclass(frozen=True)
class KadPeer:
    peer_id: PeerId
    addrs: tuple[Multiaddr, ...] = ()


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes


@dataclass(frozen=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[KadPeer, ...] = field(default=())
    provider_peers: tuple[KadPeer, ...] = field(default=())


def _peer_to_pb(peer: KadPeer, out: kad_pb2.Message.Peer) -> None:
    out.id = peer.peer_id.to_bytes()
    out.addrs.extend(a.to_bytes() for a in peer.addrs[:MAX_ADDRS_SENT_PER_PEER])


def encode(msg: KadMessage) -> bytes:
    pb = kad_pb2.Message()
    pb.type = int(msg.type)
    if msg.key:
        pb.key = msg.key
    if msg.record is not None:
        pb.record.key = msg.record.key
        pb.record.value = msg.record.value
    for p in msg.closer_peers:
        _peer_to_pb(p, pb.closerPeers.add())
    for p in msg.provider_peers:
        _peer_to_pb(p, pb.providerPeers.add())
    return pb.SerializeToString()


def _peers_from_pb(peers: list[kad_pb2.Message.Peer]) -> tuple[KadPeer, ...]:
    if len(peers) > MAX_PEERS_PER_MESSAGE:
        raise ProtocolError(f"kad message lists {len(peers)} peers "
                            f"(more than {MAX_PEERS_PER_MESSAGE})")
    out: list[KadPeer] = []
    for p in peers:
        try:
            pid = PeerId.from_bytes(p.id)
        except (ProtocolError, ValueError):
            continue
        addrs: list[Multiaddr] = []
        for raw in p.addrs[:MAX_ADDRS_PER_PEER]:
            try:
                addrs.append(Multiaddr.from_bytes(raw))
            except (MultiaddrError, ValueError):
                continue
        out.append(KadPeer(pid, tuple(addrs)))
    return tuple(out)


def decode(data: bytes) -> KadMessage:
    pb = kad_pb2.Message()
    try:
        pb.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ProtocolError(f"malformed kad message: {e}") from None
    try:
        mtype = MessageType(pb.type)
    except ValueError:
        raise ProtocolError(f"kad message of unknown type {pb.type}") from None
    record = Record(pb.record.key, pb.record.value) if pb.HasField("record") else None
    return KadMessage(mtype, pb.key, record, _peers_from_pb(list(pb.closerPeers)),
                      _peers_from_pb(list(pb.providerPeers)))
