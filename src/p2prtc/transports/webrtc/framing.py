"""Stream framing on a data channel (specs: webrtc/README.md#multiplexing), sans-I/O.

Each data channel message carries uvarint-length-prefixed `Message{flag, message}` protobufs; an
encoded message with its prefix is at most 16 KiB. Data messages are on the hot path (one per
16 KiB sent), so they are encoded and decoded directly; everything else goes through the
generated protobuf class. tests/unit/test_webrtc_framing.py checks both agree byte for byte.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from ...errors import ProtocolError
from ...pb import webrtc_pb2
from ...wire.varint import LengthPrefixedDecoder, encode_uvarint

FIN = webrtc_pb2.Message.FIN
STOP_SENDING = webrtc_pb2.Message.STOP_SENDING
RESET_STREAM = webrtc_pb2.Message.RESET_STREAM
FIN_ACK = webrtc_pb2.Message.FIN_ACK
FLAG_NAMES = {FIN: "FIN", STOP_SENDING: "STOP_SENDING", RESET_STREAM: "RESET_STREAM",
              FIN_ACK: "FIN_ACK"}

# An encoded message including its length prefix must fit in 16 KiB (all browsers accept that).
MAX_ENCODED_SIZE = 16 * 1024
# Payload per message: 16 KiB minus the worst-case framing (2-byte prefix, flag field, message
# tag and 2-byte length), the same figure js-libp2p uses, so our messages are never larger.
MAX_DATA_SIZE = MAX_ENCODED_SIZE - 7

_DATA_TAG = 0x12  # field 2, length-delimited
_FLAG_TAG = 0x08  # field 1, varint


def encode_data(data: bytes | memoryview) -> bytes:
    """One framed data message (len(data) <= MAX_DATA_SIZE)."""
    n = len(data)
    body_head = bytes((_DATA_TAG,)) + encode_uvarint(n)
    return encode_uvarint(len(body_head) + n) + body_head + bytes(data)


def encode_flag(flag: int) -> bytes:
    return b"\x02\x08" + bytes((flag,))


class FrameDecoder:
    """Feed data channel messages; get (flag or None, payload or None) tuples back."""

    def __init__(self) -> None:
        self._lp = LengthPrefixedDecoder(MAX_ENCODED_SIZE)

    def feed(self, data: bytes) -> list[tuple[int | None, bytes | None]]:
        return [decode_body(body) for body in self._lp.feed(data)]


def decode_body(body: bytes) -> tuple[int | None, bytes | None]:
    # Fast paths: a pure data message, or a pure flag message.
    if len(body) > 1 and body[0] == _DATA_TAG:
        n = body[1]
        if n < 0x80:
            if n + 2 == len(body):
                return None, body[2:]
        elif len(body) > 2 and body[2] < 0x80:
            n = (n & 0x7F) | (body[2] << 7)
            if n + 3 == len(body) and n >= 0x80:
                return None, body[3:]
    if len(body) == 2 and body[0] == _FLAG_TAG and body[1] in FLAG_NAMES:
        return body[1], None
    msg = webrtc_pb2.Message()
    try:
        msg.ParseFromString(body)
    except DecodeError as e:
        raise ProtocolError(f"malformed WebRTC stream message: {e}") from None
    flag = msg.flag if msg.HasField("flag") else None
    if flag is not None and flag not in FLAG_NAMES:
        raise ProtocolError(f"unknown WebRTC stream flag {flag}")
    return flag, msg.message if msg.HasField("message") else None
