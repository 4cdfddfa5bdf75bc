"""Record validation (specs: kad-dht/README.md "Value storage and retrieval": a record is
validated by its key's namespace) and signed peer records (specs: RFC/0003-routing-records.md).

Namespaces we know (keys `/<ns>/<rest>`):
- `/pk/<peer id bytes>`: the peer's public key (protobuf); valid when it hashes to the peer id.
  go-libp2p-kad-dht's default validator knows it (and `/ipns/`), so go nodes store it.
- `/p2prtc-peer/<peer id bytes>`: the peer's signed peer record (an RFC 0003 envelope); valid
  when the signature verifies, the signer is the key's peer id and the record names it; the
  higher `seq` wins. go rejects this namespace, which is why listeners also ADD_PROVIDER
  `peer_provider_key(peer)` (service.py).
Any other namespace is refused (as go's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..envelope import Envelope
from ..errors import ProtocolError
from ..identity import Identity, PeerId, PublicKey
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb import peer_record_pb2
from ..wire.varint import VarintIncomplete, decode_uvarint

# specs: RFC/0003-routing-records.md ("libp2p-routing-state", multicodec libp2p-peer-record).
PEER_RECORD_DOMAIN = "libp2p-routing-state"
PEER_RECORD_PAYLOAD_TYPE = b"\x03\x01"
PK_NAMESPACE = "pk"
PEER_NAMESPACE = "p2prtc-peer"
# go-libp2p-record's limit on a record value is the message size; ours: a peer record with 32
# addresses is ~2 KiB, a public key < 1 KiB (RSA 4096 ~550 bytes).
MAX_RECORD_VALUE = 16 * 1024
# Multihash codes (multicodec table): identity and sha2-256.
MH_IDENTITY = 0x00
MH_SHA2_256 = 0x12


class InvalidRecord(ProtocolError):
    pass


@dataclass(frozen=True)
class PeerRecord:
    peer_id: PeerId
    seq: int
    addrs: tuple[Multiaddr, ...]


def pk_key(peer: PeerId) -> bytes:
    return f"/{PK_NAMESPACE}/".encode() + peer.to_bytes()


def peer_record_key(peer: PeerId) -> bytes:
    return f"/{PEER_NAMESPACE}/".encode() + peer.to_bytes()


def sha256_multihash(data: bytes) -> bytes:
    return bytes([MH_SHA2_256, 32]) + hashlib.sha256(data).digest()


def peer_provider_key(peer: PeerId) -> bytes:
    """The provider key under which a listener announces itself (a multihash, as ADD_PROVIDER
    keys must be; go nodes store it though they refuse our record namespace)."""
    return sha256_multihash(b"/p2prtc/peer/" + peer.to_bytes())


RELAY_PROVIDER_KEY = sha256_multihash(b"/p2prtc/relay/1.0.0")
"""Relays provide this key (relay discovery, issue 15.3)."""


def check_multihash(key: bytes) -> None:
    """ADD_PROVIDER/GET_PROVIDERS keys are multihashes (go: `mh.Cast`)."""
    try:
        _code, pos = decode_uvarint(key)
        length, pos = decode_uvarint(key, pos)
    except (ProtocolError, VarintIncomplete, ValueError):
        raise InvalidRecord("provider key is not a multihash") from None
    if len(key) - pos != length:
        raise InvalidRecord("provider key is not a multihash (length mismatch)")


def seal_peer_record(identity: Identity, seq: int, addrs: list[Multiaddr]) -> bytes:
    rec = peer_record_pb2.PeerRecord(peer_id=identity.peer_id.to_bytes(), seq=seq)
    for a in addrs:
        rec.addresses.add().multiaddr = a.to_bytes()
    return Envelope.seal(identity, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE,
                         rec.SerializeToString())


def open_peer_record(data: bytes) -> PeerRecord:
    """Verify an envelope holding a peer record: signature, type, and signer == record's peer."""
    env = Envelope.open(data, PEER_RECORD_DOMAIN)
    if env.payload_type != PEER_RECORD_PAYLOAD_TYPE:
        raise InvalidRecord(f"envelope of payload type {env.payload_type.hex()}, "
                            "not a peer record")
    rec = peer_record_pb2.PeerRecord()
    try:
        rec.ParseFromString(env.payload)
        peer = PeerId.from_bytes(rec.peer_id)
    except Exception as e:  # protobuf DecodeError, a bad peer id
        raise InvalidRecord(f"malformed peer record: {e}") from None
    if PeerId.from_public_key(env.public_key) != peer:
        raise InvalidRecord("peer record signed by another peer than it names")
    addrs: list[Multiaddr] = []
    for a in rec.addresses:
        try:
            addrs.append(Multiaddr.from_bytes(a.multiaddr))
        except (MultiaddrError, ValueError):
            continue
    return PeerRecord(peer, rec.seq, tuple(addrs))


def _split_key(key: bytes) -> tuple[str, bytes]:
    if not key.startswith(b"/"):
        raise InvalidRecord("record key has no namespace")
    ns, sep, rest = key[1:].partition(b"/")
    if not sep:
        raise InvalidRecord("record key has no namespace")
    return ns.decode(errors="replace"), rest


def _key_peer(rest: bytes) -> PeerId:
    try:
        return PeerId.from_bytes(rest)
    except (ProtocolError, ValueError):
        raise InvalidRecord("record key does not end in a peer id") from None


def validate(key: bytes, value: bytes) -> None:
    """Raise InvalidRecord unless `value` is valid under `key`."""
    if len(value) > MAX_RECORD_VALUE:
        raise InvalidRecord(f"record value of {len(value)} bytes (limit {MAX_RECORD_VALUE})")
    ns, rest = _split_key(key)
    if ns == PK_NAMESPACE:
        peer = _key_peer(rest)
        try:
            pub = PublicKey.from_protobuf(value)
        except (ProtocolError, ValueError):
            raise InvalidRecord("/pk/ record is not a public key") from None
        if PeerId.from_public_key(pub) != peer:
            raise InvalidRecord("/pk/ record holds the key of another peer")
        return
    if ns == PEER_NAMESPACE:
        peer = _key_peer(rest)
        try:
            rec = open_peer_record(value)
        except InvalidRecord:
            raise
        except ProtocolError as e:
            raise InvalidRecord(str(e)) from None
        if rec.peer_id != peer:
            raise InvalidRecord("peer record stored under another peer's key")
        return
    raise InvalidRecord(f"unknown record namespace /{ns}/")


def select(key: bytes, values: list[bytes]) -> int:
    """Index of the best of valid `values` for `key` (go's Selector): the highest seq for peer
    records, the first otherwise."""
    ns, _ = _split_key(key)
    if ns != PEER_NAMESPACE:
        return 0
    seqs = [open_peer_record(v).seq for v in values]
    return max(range(len(values)), key=lambda i: seqs[i])

