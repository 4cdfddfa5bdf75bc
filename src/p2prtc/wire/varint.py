"""Unsigned varints (multiformats unsigned-varint: LEB128, minimal, at most 9 bytes)."""

from __future__ import annotations

from ..errors import ProtocolError

MAX_VARINT_LEN = 9  # 63 bits, the multiformats limit


class VarintIncomplete(Exception):
    """More bytes are needed to finish the varint (not an error in a streaming decoder)."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint cannot encode a negative number")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            if len(out) > MAX_VARINT_LEN:
                raise ValueError("uvarint larger than 63 bits")
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at buf[pos:]; return (value, position after it).

    Raises VarintIncomplete if buf ends inside the varint, ProtocolError if it is too long or
    not minimal.
    """
    value = 0
    shift = 0
    end = len(buf)
    i = pos
    while True:
        if i >= end:
            raise VarintIncomplete()
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i - pos > 1:
                raise ProtocolError("varint is not minimally encoded")
            return value, i
        shift += 7
        if i - pos >= MAX_VARINT_LEN:
            raise ProtocolError("varint longer than 9 bytes")


class LengthPrefixedDecoder:
    """Incremental decoder of uvarint-length-prefixed messages with a size limit.

    feed() returns every complete message so far; partial data stays buffered.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while pos < len(buf):
            try:
                length, start = decode_uvarint(buf, pos)
            except VarintIncomplete:
                break
            if length > self.max_size:
                raise ProtocolError(
                    f"message of {length} bytes exceeds the limit of {self.max_size}"
                )
            end = start + length
            if end > len(buf):
                break
            out.append(bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


def encode_length_prefixed(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload
