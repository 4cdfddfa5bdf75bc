"""Keys and peer ids (specs: peer-ids/peer-ids.md).

We sign with Ed25519 only; we verify Ed25519, ECDSA, secp256k1 and RSA keys because rust and go
peers may use any of them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from . import multibase
from .errors import ProtocolError
from .pb import crypto_pb2
from .wire.varint import VarintIncomplete, decode_uvarint, encode_uvarint

KEY_TYPE_RSA = crypto_pb2.RSA
KEY_TYPE_ED25519 = crypto_pb2.Ed25519
KEY_TYPE_SECP256K1 = crypto_pb2.Secp256k1
KEY_TYPE_ECDSA = crypto_pb2.ECDSA

# What each key type decodes to (cryptography's classes).
_PublicKeyImpl = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MULTIHASH_IDENTITY = 0x00
MULTIHASH_SHA2_256 = 0x12
CID_CODEC_LIBP2P_KEY = 0x72
# Keys whose protobuf encoding is at most this long are inlined into the peer id.
MAX_INLINE_KEY_LENGTH = 42
# RSA keys below this are refused, as go and rust do.
MIN_RSA_BITS = 2048
MAX_PUBLIC_KEY_BYTES = 8 * 1024


class InvalidKey(ProtocolError):
    """A public key or peer id that cannot be decoded or is not acceptable."""


class PublicKey:
    """A remote or local public key of any supported type."""

    def __init__(self, key_type: crypto_pb2.KeyType, data: bytes, impl: _PublicKeyImpl) -> None:
        self.key_type = key_type
        self.data = data
        self._impl = impl

    @classmethod
    def from_protobuf(cls, encoded: bytes) -> PublicKey:
        if len(encoded) > MAX_PUBLIC_KEY_BYTES:
            raise InvalidKey("public key protobuf too large")
        msg = crypto_pb2.PublicKey()
        try:
            msg.ParseFromString(encoded)
        except Exception as e:  # DecodeError, or missing required fields
            raise InvalidKey(f"malformed public key protobuf: {e}") from None
        if not msg.IsInitialized():
            raise InvalidKey("public key protobuf lacks its type or data")
        return cls.from_raw(msg.Type, msg.Data)

    @classmethod
    def from_raw(cls, key_type: int, data: bytes) -> PublicKey:
        impl: _PublicKeyImpl
        kind: crypto_pb2.KeyType
        try:
            if key_type == KEY_TYPE_ED25519:
                if len(data) != 32:
                    raise InvalidKey("Ed25519 public key must be 32 bytes")
                kind, impl = KEY_TYPE_ED25519, ed25519.Ed25519PublicKey.from_public_bytes(data)
            elif key_type == KEY_TYPE_SECP256K1:
                kind = KEY_TYPE_SECP256K1
                impl = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
            elif key_type == KEY_TYPE_ECDSA:
                loaded = serialization.load_der_public_key(data)
                if not isinstance(loaded, ec.EllipticCurvePublicKey):
                    raise InvalidKey("ECDSA key is not an elliptic-curve key")
                kind, impl = KEY_TYPE_ECDSA, loaded
            elif key_type == KEY_TYPE_RSA:
                loaded = serialization.load_der_public_key(data)
                if not isinstance(loaded, rsa.RSAPublicKey):
                    raise InvalidKey("RSA key is not an RSA key")
                if loaded.key_size < MIN_RSA_BITS:
                    raise InvalidKey(f"RSA key of {loaded.key_size} bits is too small")
                kind, impl = KEY_TYPE_RSA, loaded
            else:
                raise InvalidKey(f"unknown key type {key_type}")
        except InvalidKey:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InvalidKey(f"invalid public key: {e}") from None
        return cls(kind, bytes(data), impl)

    def to_protobuf(self) -> bytes:
        return crypto_pb2.PublicKey(Type=self.key_type, Data=self.data).SerializeToString()

    def verify(self, message: bytes, signature: bytes) -> bool:
        impl = self._impl
        try:
            if isinstance(impl, ed25519.Ed25519PublicKey):
                impl.verify(signature, message)
            elif isinstance(impl, ec.EllipticCurvePublicKey):  # secp256k1 or ECDSA (P-256...)
                impl.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                impl.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PublicKey)
            and other.key_type == self.key_type
            and other.data == self.data
        )

    def __hash__(self) -> int:
        return hash((self.key_type, self.data))


class PeerId:
    """A peer id: the multihash of a protobuf-encoded public key."""

    __slots__ = ("_bytes", "_b58")

    def __init__(self, multihash: bytes) -> None:
        _check_multihash(multihash)
        self._bytes = bytes(multihash)
        self._b58 = multibase.b58encode(self._bytes)

    @classmethod
    def from_public_key(cls, key: PublicKey) -> PeerId:
        encoded = key.to_protobuf()
        if len(encoded) <= MAX_INLINE_KEY_LENGTH:
            return cls(bytes((MULTIHASH_IDENTITY, len(encoded))) + encoded)
        return cls(bytes((MULTIHASH_SHA2_256, 32)) + hashlib.sha256(encoded).digest())

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        return cls(data)

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse a base58btc peer id (`12D3KooW…`, `Qm…`) or a CIDv1 (`bafz…`, any multibase)."""
        try:
            if text.startswith(("1", "Qm")):
                return cls(multibase.b58decode(text))
            raw = multibase.decode(text)
        except multibase.MultibaseError as e:
            raise InvalidKey(f"invalid peer id {text!r}: {e}") from None
        try:
            version, pos = decode_uvarint(raw)
            codec, pos = decode_uvarint(raw, pos)
        except (VarintIncomplete, ProtocolError):
            raise InvalidKey(f"invalid peer id {text!r}: bad CID header") from None
        if version != 1 or codec != CID_CODEC_LIBP2P_KEY:
            raise InvalidKey(f"invalid peer id {text!r}: not a CIDv1 with the libp2p-key codec")
        return cls(raw[pos:])

    def to_bytes(self) -> bytes:
        return self._bytes

    def to_base58(self) -> str:
        return self._b58

    def to_cid(self) -> str:
        return multibase.encode(
            encode_uvarint(1) + encode_uvarint(CID_CODEC_LIBP2P_KEY) + self._bytes, "base32"
        )

    def extract_public_key(self) -> PublicKey | None:
        """The public key inlined in an identity-multihash peer id, if any."""
        if self._bytes[0] != MULTIHASH_IDENTITY:
            return None
        _length, pos = decode_uvarint(self._bytes, 1)  # may take more than one byte
        return PublicKey.from_protobuf(self._bytes[pos:])

    def matches(self, key: PublicKey) -> bool:
        return PeerId.from_public_key(key) == self

    def short(self) -> str:
        return self._b58[-6:]

    def __str__(self) -> str:
        return self._b58

    def __repr__(self) -> str:
        return f"PeerId({self._b58})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerId) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)


def _check_multihash(data: bytes) -> None:
    try:
        code, pos = decode_uvarint(data)
        length, pos = decode_uvarint(data, pos)
    except (VarintIncomplete, ProtocolError):
        raise InvalidKey("peer id is not a multihash") from None
    if code not in (MULTIHASH_IDENTITY, MULTIHASH_SHA2_256):
        raise InvalidKey(f"peer id uses unsupported multihash 0x{code:x}")
    if len(data) - pos != length:
        raise InvalidKey("peer id multihash length does not match its digest")
    if code == MULTIHASH_SHA2_256 and length != 32:
        raise InvalidKey("sha2-256 peer id must have a 32-byte digest")
    if code == MULTIHASH_IDENTITY and length > MAX_PUBLIC_KEY_BYTES:
        raise InvalidKey("identity peer id too large")


@dataclass(frozen=True)
class Identity:
    """Our own Ed25519 key pair and the peer id derived from it."""

    private_key: ed25519.Ed25519PrivateKey
    public_key: PublicKey
    peer_id: PeerId

    @classmethod
    def from_private_key(cls, key: ed25519.Ed25519PrivateKey) -> Identity:
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        pub = PublicKey.from_raw(KEY_TYPE_ED25519, raw)
        return cls(key, pub, PeerId.from_public_key(pub))

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: int) -> Identity:
        """The key rust-libp2p's relay-server derives from `--secret-key-seed`: a 32-byte Ed25519
        secret whose first byte is the seed and the rest zero."""
        if not 0 <= seed <= 255:
            raise ValueError("secret key seed must be between 0 and 255 (one byte, as in rust)")
        secret = bytes([seed]) + bytes(31)
        return cls.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(secret))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def to_protobuf(self) -> bytes:
        """libp2p's marshalled private key (go/js key files): Ed25519 data is secret || public."""
        return crypto_pb2.PrivateKey(
            Type=KEY_TYPE_ED25519, Data=self.private_bytes() + self.public_key.data
        ).SerializeToString()

    @classmethod
    def from_protobuf(cls, encoded: bytes) -> Identity:
        msg = crypto_pb2.PrivateKey()
        try:
            msg.ParseFromString(encoded)
        except Exception as e:
            raise InvalidKey(f"malformed private key: {e}") from None
        if msg.Type != KEY_TYPE_ED25519 or len(msg.Data) not in (32, 64):
            raise InvalidKey("only Ed25519 private keys are supported")
        ident = cls.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(msg.Data[:32]))
        if len(msg.Data) == 64 and msg.Data[32:] != ident.public_key.data:
            raise InvalidKey("private key file is inconsistent: public half does not match")
        return ident

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load a key file, or create one (mode 0600) on first use."""
        p = Path(path)
        if p.exists():
            return cls.from_protobuf(p.read_bytes())
        ident = cls.generate()
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "wb") as f:
            f.write(ident.to_protobuf())
        return ident
