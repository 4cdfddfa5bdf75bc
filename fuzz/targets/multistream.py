"""wire/multistream.py: both roles of multistream-select over a stream of fuzzed bytes.

Contract: negotiation returns the agreed protocol (one the listener supports / the dialer
proposed) or raises ProtocolError / NegotiationFailed. decode_message raises only
ProtocolError and round-trips with encode_message.
"""

from p2prtc.errors import NegotiationFailed, ProtocolError
from p2prtc.wire import multistream as ms
from p2prtc.wire.varint import LengthPrefixedDecoder

from ..harness import BufferStream, run_sync

SUPPORTED = ("/echo/1.0.0", "/ipfs/id/1.0.0")
PROPOSALS = ["/noise", "/echo/1.0.0", "/yamux/1.0.0"]


def test_one(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0], data[1:]
    stream = BufferStream(body, max_read=(mode >> 1) % 5 + 1 if mode & 0x80 else 1 << 20)
    try:
        if mode & 1:
            proto = run_sync(ms.handle_inbound(stream, lambda p: p in SUPPORTED))
            assert proto in SUPPORTED
        else:
            proto = run_sync(ms.select_outbound(stream, PROPOSALS))
            assert proto in PROPOSALS
    except (ProtocolError, NegotiationFailed):
        pass
    # Everything we wrote must itself be well-formed multistream.
    for body_out in LengthPrefixedDecoder(ms.MAX_MESSAGE_SIZE).feed(bytes(stream.written)):
        ms.decode_message(body_out)

    try:
        for msg in LengthPrefixedDecoder(ms.MAX_MESSAGE_SIZE).feed(body):
            try:
                text = ms.decode_message(msg)
            except ProtocolError:
                continue
            try:
                again = ms.encode_message(text)
            except ValueError:
                continue  # a message at the size limit cannot grow a newline: refused to encode
            assert again.endswith(msg), "multistream message does not round-trip"
    except ProtocolError:
        pass


def seeds() -> list[bytes]:
    m = ms.encode_message
    hdr = m(ms.PROTOCOL_ID)
    return [
        b"\x01" + hdr + m("/echo/1.0.0"),
        b"\x01" + hdr + m("/nope") + m("ls") + m("/ipfs/id/1.0.0"),
        b"\x81" + hdr + m("na") + m("/echo/1.0.0"),
        b"\x00" + hdr + m("/echo/1.0.0"),
        b"\x00" + hdr + m("na") + m("na") + m("na"),
        b"\x80" + hdr + m("na") + m("/echo/1.0.0") + b"trailing",
        b"\x01" + hdr + b"\x03ab\xff",
    ]
