"""transports/webrtc/framing.py: FrameDecoder over data channel messages.

Contract: ProtocolError only; a decoded (flag, payload) re-encodes to an equivalent message,
and our encoders' output decodes back to what was encoded.
"""

from p2prtc.errors import ProtocolError
from p2prtc.transports.webrtc import framing

from ..harness import split_points


def test_one(data: bytes) -> None:
    if not data:
        return
    seed, body = data[0], data[1:]
    decoder = framing.FrameDecoder()
    frames = []
    try:
        for chunk in split_points(body, seed):
            frames += decoder.feed(chunk)
    except ProtocolError:
        pass
    for flag, payload in frames:
        assert flag is None or flag in framing.FLAG_NAMES
        assert payload is None or isinstance(payload, bytes)
        if payload is not None and len(payload) <= framing.MAX_DATA_SIZE:
            assert framing.FrameDecoder().feed(framing.encode_data(payload)) == [(None, payload)]
        if flag is not None:
            assert framing.FrameDecoder().feed(framing.encode_flag(flag)) == [(flag, None)]
        try:
            framing.decode_body(b"")
        except ProtocolError:
            pass
    # Our encoder on the fuzzer's bytes.
    payload = body[:framing.MAX_DATA_SIZE]
    enc = framing.encode_data(payload)
    assert len(enc) <= framing.MAX_ENCODED_SIZE
    assert framing.FrameDecoder().feed(enc) == [(None, payload)]


def seeds() -> list[bytes]:
    e, f = framing.encode_data, framing.encode_flag
    return [
        b"\x00" + e(b"hello") + f(framing.FIN),
        b"\x03" + e(b"x" * 200) + e(b"") + f(framing.FIN_ACK) + f(framing.STOP_SENDING),
        b"\x00" + f(framing.RESET_STREAM),
        b"\x01" + b"\x04\x08\x00\x12\x00",  # flag FIN plus an empty message, one protobuf
        b"\x00" + b"\x02\x08\x09",  # unknown flag
    ]
