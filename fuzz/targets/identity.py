"""identity.py and envelope.py: public keys (pb/crypto.proto, every key type), private key
files, peer ids (bytes and text: base58 and CIDv1 in any multibase) and signed envelopes.

Contract: InvalidKey (a ProtocolError) or, for envelopes, ProtocolError; what decodes
round-trips (key -> protobuf -> key, peer id -> text/bytes -> peer id).
"""

from p2prtc.envelope import Envelope
from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity, InvalidKey, PeerId, PublicKey
from p2prtc.pb import crypto_pb2


def test_one(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 5, data[1:]
    if mode == 0:
        try:
            key = PublicKey.from_protobuf(body)
        except InvalidKey:
            return
        assert PublicKey.from_protobuf(key.to_protobuf()) == key
        peer = PeerId.from_public_key(key)
        assert PeerId.from_string(str(peer)) == peer
        assert key.verify(b"message", b"\x00" * 64) in (True, False)
        extracted = peer.extract_public_key()
        assert extracted is None or extracted == key
    elif mode == 1:
        try:
            peer = PeerId.from_bytes(body)
        except InvalidKey:
            return
        assert PeerId.from_string(peer.to_base58()) == peer
        assert PeerId.from_string(peer.to_cid()) == peer
        try:
            key = peer.extract_public_key()
        except InvalidKey:
            return
        if key is not None:
            assert peer.matches(key)
    elif mode == 2:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return
        try:
            peer = PeerId.from_string(text)
        except InvalidKey:
            return
        assert PeerId.from_bytes(peer.to_bytes()) == peer
    elif mode == 3:
        try:
            ident = Identity.from_protobuf(body)
        except InvalidKey:
            return
        assert ident.public_key.verify(b"m", ident.sign(b"m"))
    else:
        try:
            env = Envelope.open(body, "libp2p-relay-rsvp")
        except ProtocolError:
            return
        assert isinstance(env.payload, bytes) and isinstance(env.payload_type, bytes)


def seeds() -> list[bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ident = Identity.from_seed(5)
    ec_key = ec.derive_private_key(12345, ec.SECP256R1()).public_key()
    k1 = ec.derive_private_key(12345, ec.SECP256K1()).public_key()
    der = ec_key.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    point = k1.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.CompressedPoint)
    ecdsa = crypto_pb2.PublicKey(Type=crypto_pb2.ECDSA, Data=der).SerializeToString()
    secp = crypto_pb2.PublicKey(Type=crypto_pb2.Secp256k1, Data=point).SerializeToString()
    return [
        b"\x00" + ident.public_key.to_protobuf(), b"\x00" + ecdsa, b"\x00" + secp,
        b"\x01" + ident.peer_id.to_bytes(),
        b"\x01" + PeerId.from_public_key(PublicKey.from_protobuf(ecdsa)).to_bytes(),
        b"\x02" + str(ident.peer_id).encode(), b"\x02" + ident.peer_id.to_cid().encode(),
        b"\x03" + ident.to_protobuf(),
        b"\x04" + Envelope.seal(ident, "libp2p-relay-rsvp", b"\x03\x02", b"payload"),
    ] + _js_keys()


def _js_keys() -> list[bytes]:
    """Keys and peer ids made by js-libp2p (tests/unit/vectors/keys_js.json): every key type."""
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "tests" / "unit" / "vectors" / "keys_js.json"
    out = []
    for k in json.loads(path.read_text())["keys"]:
        out += [b"\x00" + bytes.fromhex(k["public_key_protobuf"]), b"\x02" + k["peer_id"].encode()]
    return out
