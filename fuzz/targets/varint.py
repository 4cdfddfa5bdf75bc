"""wire/varint.py: decode_uvarint, LengthPrefixedDecoder, streams.read_length_prefixed.

Contract (module docstrings): decode_uvarint returns (value, end) or raises VarintIncomplete /
ProtocolError; the streaming decoder raises only ProtocolError, whatever the split; the stream
reader agrees with it. Round trip: a decoded varint re-encodes to the same (minimal) bytes.
"""

from p2prtc.errors import ProtocolError
from p2prtc.streams import read_length_prefixed
from p2prtc.wire.varint import (LengthPrefixedDecoder, VarintIncomplete, decode_uvarint,
                                encode_length_prefixed, encode_uvarint)

from ..harness import BufferStream, run_sync, split_points

MAX_SIZE = 512


def test_one(data: bytes) -> None:
    if not data:
        return
    seed, body = data[0], data[1:]
    try:
        value, end = decode_uvarint(body)
    except (VarintIncomplete, ProtocolError):
        pass
    else:
        assert 0 < end <= 9 and value < 1 << 63
        assert encode_uvarint(value) == body[:end], "decoded varint does not re-encode the same"

    whole = LengthPrefixedDecoder(MAX_SIZE)
    try:
        expected = whole.feed(body)
        whole_error = None
    except ProtocolError as e:
        expected, whole_error = None, e
    chunked = LengthPrefixedDecoder(MAX_SIZE)
    got: list[bytes] = []
    chunk_error = None
    try:
        for chunk in split_points(body, seed):
            got += chunked.feed(chunk)
    except ProtocolError as e:
        chunk_error = e
    if whole_error is None:
        assert chunk_error is None, f"split input failed ({chunk_error}) where whole input did not"
        assert got == expected, "split input decoded differently"
        assert chunked.buffered == whole.buffered
        consumed = len(body) - whole.buffered
        assert b"".join(encode_length_prefixed(m) for m in expected) == body[:consumed]
        for m in expected:
            assert len(m) <= MAX_SIZE
    else:
        assert chunk_error is not None, "split input passed where whole input failed"
        assert got == expected_prefix(got, body)

    stream = BufferStream(body, max_read=seed % 7 + 1)
    try:
        first = run_sync(read_length_prefixed(stream, MAX_SIZE, allow_eof=True))
    except ProtocolError:
        first = "error"
    if whole_error is None and expected:
        assert first == expected[0], "stream reader and buffer decoder disagree"


def expected_prefix(got: list[bytes], body: bytes) -> list[bytes]:
    """The messages a decoder may emit before an error: the valid ones at the start of body."""
    assert b"".join(encode_length_prefixed(m) for m in got) == body[:sum(
        len(encode_length_prefixed(m)) for m in got)]
    return got


def seeds() -> list[bytes]:
    out = [b"\x00" + encode_uvarint(v) for v in (0, 1, 127, 128, 300, 16383, 16384, 2**63 - 1)]
    out.append(b"\x03" + b"".join(encode_length_prefixed(m) for m in (b"", b"a", b"x" * 200)))
    out.append(b"\x01" + encode_length_prefixed(b"hello") + b"\x85")
    out.append(b"\x00\x80\x00")  # not minimal
    return out
