"""Fixed keys and a complete handshake for the Noise targets (deterministic, so corpus entries
keep their meaning from run to run)."""

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2prtc.identity import Identity
from p2prtc.security import noise

ALICE = Identity.from_seed(1)
BOB = Identity.from_seed(2)


def x25519(n: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([n]) * 32)


class InjectedPayload(noise.NoiseHandshakeState):
    """A handshake state that sends the fuzzer's bytes as its libp2p handshake payload (in place
    of the protobuf it would build), so the remote's payload checks see arbitrary protobufs."""

    def __init__(self, payload: bytes, *args, **kwargs) -> None:
        self.fuzz_payload = payload
        super().__init__(*args, **kwargs)

    def _encode_payload(self, identity, extensions) -> bytes:  # overrides the builder
        return self.fuzz_payload


def states(initiator_payload: bytes | None = None, responder_payload: bytes | None = None):
    def make(payload, identity, initiator, s, e):
        if payload is None:
            return noise.NoiseHandshakeState(identity, initiator, static_key=x25519(s),
                                             ephemeral_key=x25519(e),
                                             extensions={"stream_muxers": ["/yamux/1.0.0"]})
        return InjectedPayload(payload, identity, initiator, static_key=x25519(s),
                               ephemeral_key=x25519(e))
    return (make(initiator_payload, ALICE, True, 11, 12),
            make(responder_payload, BOB, False, 21, 22))


def handshake():
    a, b = states()
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    return a, b


def transport_pair():
    a, b = handshake()
    return noise.NoiseTransport.from_handshake(a), noise.NoiseTransport.from_handshake(b)
