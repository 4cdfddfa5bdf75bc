"""security/noise.py handshake, sans I/O: garbage in each message slot, and arbitrary libp2p
handshake payloads (protobuf) inside correctly encrypted messages 2 and 3.

Contract: read_message raises only HandshakeError (a ProtocolError); a handshake that completes
authenticated the peer whose key it names, and its transport works both ways.
"""

from p2prtc.errors import HandshakeError, ProtocolError
from p2prtc.identity import PeerId
from p2prtc.security import noise

from . import _noise_common as common


def _check_complete(a, b) -> None:
    assert a.complete and b.complete
    for st in (a, b):
        key = st.remote_public_key
        assert key is not None and st.remote_peer_id == PeerId.from_public_key(key)
        ext = st.remote_extensions
        assert ext is None or set(ext) == {"webtransport_certhashes", "stream_muxers"}
    ta, tb = noise.NoiseTransport.from_handshake(a), noise.NoiseTransport.from_handshake(b)
    assert tb.decrypt_feed(ta.encrypt(b"ping")) == [b"ping"]
    assert ta.decrypt_feed(tb.encrypt(b"pong")) == [b"pong"]


def test_one(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 5, data[1:]
    try:
        if mode == 0:  # garbage message 1 to a responder
            _, b = common.states()
            b.read_message(body)
            b.write_message()
        elif mode == 1:  # garbage message 2 to an initiator
            a, _ = common.states()
            a.write_message()
            a.read_message(body)
        elif mode == 2:  # garbage message 3 to a responder
            a, b = common.states()
            b.read_message(a.write_message())
            a.read_message(b.write_message())
            b.read_message(body)
        elif mode == 3:  # the responder's payload is the fuzzer's
            try:
                a, b = common.states(responder_payload=body)
            except ValueError:
                return  # too large to send: our own check
            b.read_message(a.write_message())
            a.read_message(b.write_message())
            b.read_message(a.write_message())
            _check_complete(a, b)
        else:  # the initiator's payload is the fuzzer's
            try:
                a, b = common.states(initiator_payload=body)
            except ValueError:
                return
            b.read_message(a.write_message())
            a.read_message(b.write_message())
            b.read_message(a.write_message())
            _check_complete(a, b)
    except HandshakeError:
        pass
    except ProtocolError as e:
        raise AssertionError(f"handshake raised {type(e).__name__}, not HandshakeError: {e}") from e


def seeds() -> list[bytes]:
    a, b = common.states()
    m1 = a.write_message()
    b.read_message(m1)
    m2 = b.write_message()
    a.read_message(m2)
    m3 = a.write_message()
    payload_b = common.BOB.public_key.to_protobuf()
    from p2prtc.pb import noise_pb2
    good = noise_pb2.NoiseHandshakePayload(
        identity_key=payload_b, identity_sig=b"\x00" * 64,
        extensions=noise_pb2.NoiseExtensions(stream_muxers=["/yamux/1.0.0"],
                                            webtransport_certhashes=[b"\x12\x20" + b"\x01" * 32]),
    ).SerializeToString()
    return [b"\x00" + m1, b"\x01" + m2, b"\x02" + m3, b"\x00" + m1 + b"extra",
            b"\x03" + good, b"\x04" + good, b"\x03", b"\x04" + payload_b]
