"""Signed envelopes (specs: RFC/0002-signed-envelopes.md): a payload, its type, and a signature
over `uvarint-prefixed(domain) || uvarint-prefixed(type) || uvarint-prefixed(payload)`."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError
from .identity import Identity, PublicKey
from .pb import envelope_pb2
from .wire.varint import encode_length_prefixed


def _signing_bytes(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    return (encode_length_prefixed(domain.encode()) + encode_length_prefixed(payload_type)
            + encode_length_prefixed(payload))


@dataclass(frozen=True)
class Envelope:
    public_key: PublicKey
    payload_type: bytes
    payload: bytes

    @staticmethod
    def seal(identity: Identity, domain: str, payload_type: bytes, payload: bytes) -> bytes:
        sig = identity.sign(_signing_bytes(domain, payload_type, payload))
        return envelope_pb2.Envelope(
            public_key=identity.public_key.to_protobuf(), payload_type=payload_type,
            payload=payload, signature=sig,
        ).SerializeToString()

    @classmethod
    def open(cls, data: bytes, domain: str) -> Envelope:
        msg = envelope_pb2.Envelope()
        try:
            msg.ParseFromString(data)
        except Exception as e:
            raise ProtocolError(f"malformed signed envelope: {e}") from None
        key = PublicKey.from_protobuf(msg.public_key)
        if not key.verify(_signing_bytes(domain, msg.payload_type, msg.payload), msg.signature):
            raise ProtocolError("signed envelope has an invalid signature")
        return cls(key, msg.payload_type, msg.payload)
