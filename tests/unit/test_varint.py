import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.errors import ProtocolError
from p2prtc.streams import (
    ByteStream,
    IncompleteRead,
    read_exactly,
    read_length_prefixed,
    read_uvarint,
    write_length_prefixed,
)
from p2prtc.wire.varint import (
    MAX_VARINT_LEN,
    LengthPrefixedDecoder,
    VarintIncomplete,
    decode_uvarint,
    encode_length_prefixed,
    encode_uvarint,
)

MAX_U63 = 2**63 - 1


@pytest.mark.parametrize(
    "value,hexbytes",
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (255, "ff01"),
        (300, "ac02"),
        (16384, "808001"),
        (421, "a503"),  # the p2p multiaddr code
        (MAX_U63, "ffffffffffffffff7f"),
    ],
)
def test_known_encodings(value, hexbytes):
    assert encode_uvarint(value).hex() == hexbytes
    assert decode_uvarint(bytes.fromhex(hexbytes)) == (value, len(hexbytes) // 2)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, MAX_U63), st.binary(max_size=4), st.binary(max_size=4))
def test_round_trip_at_any_position(value, before, after):
    data = before + encode_uvarint(value) + after
    assert decode_uvarint(data, len(before)) == (value, len(data) - len(after))
    assert len(encode_uvarint(value)) == max(1, (value.bit_length() + 6) // 7)


def test_encode_limits():
    with pytest.raises(ValueError):
        encode_uvarint(-1)
    with pytest.raises(ValueError):
        encode_uvarint(2**63)


@pytest.mark.parametrize("data", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00", b"\x80" * 8 + b"\x00"])
def test_non_minimal_is_refused(data):
    with pytest.raises(ProtocolError, match="minimal"):
        decode_uvarint(data)


def test_too_long_is_refused():
    with pytest.raises(ProtocolError, match="longer than 9"):
        decode_uvarint(b"\xff" * MAX_VARINT_LEN + b"\x01")
    with pytest.raises(ProtocolError, match="longer than 9"):
        decode_uvarint(b"\x80" * MAX_VARINT_LEN)  # refused before the 10th byte arrives


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff" * (MAX_VARINT_LEN - 1)])
def test_incomplete(data):
    with pytest.raises(VarintIncomplete):
        decode_uvarint(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12))
def test_random_bytes_decode_or_raise_cleanly(data):
    try:
        value, end = decode_uvarint(data)
    except (VarintIncomplete, ProtocolError):
        return
    assert encode_uvarint(value) == data[:end]  # whatever is accepted is the minimal encoding


# --- LengthPrefixedDecoder --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=10),
    st.lists(st.integers(0, 4000), max_size=12),
)
def test_decoder_with_random_split_points(messages, cuts):
    stream = b"".join(encode_length_prefixed(m) for m in messages)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = LengthPrefixedDecoder(max_size=300)
    out = []
    for a, b in itertools.pairwise(points):
        out.extend(decoder.feed(stream[a:b]))
    assert out == messages
    assert decoder.buffered == 0


def test_decoder_one_byte_at_a_time_and_buffering():
    decoder = LengthPrefixedDecoder(max_size=1000)
    data = encode_length_prefixed(b"x" * 200) + encode_length_prefixed(b"")
    got = []
    for i in range(len(data)):
        got.extend(decoder.feed(data[i : i + 1]))
        if i == 0:
            assert decoder.buffered == 1  # half a varint waits
    assert got == [b"x" * 200, b""]
    assert decoder.feed(b"\x05ab") == [] and decoder.buffered == 3


def test_decoder_limit():
    decoder = LengthPrefixedDecoder(max_size=10)
    assert decoder.feed(encode_length_prefixed(b"0123456789")) == [b"0123456789"]
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(encode_uvarint(11))  # refused from the prefix alone, before any payload
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        LengthPrefixedDecoder(max_size=10).feed(b"\xff\xff\xff\xff\x0f")


def test_decoder_refuses_bad_prefixes():
    with pytest.raises(ProtocolError, match="minimal"):
        LengthPrefixedDecoder(max_size=10).feed(b"\x81\x00")
    with pytest.raises(ProtocolError, match="longer than 9"):
        LengthPrefixedDecoder(max_size=10).feed(b"\x80" * 10)


# --- the stream helpers ---------------------------------------------------------------------


class _ChunkedStream(ByteStream):
    """Returns at most `chunk` bytes per read, then b"" at the end."""

    def __init__(self, data: bytes, chunk: int = 1) -> None:
        self.data = data
        self.chunk = chunk
        self.written = b""

    async def read(self, n: int = 65536) -> bytes:
        out, self.data = self.data[: min(n, self.chunk)], self.data[min(n, self.chunk) :]
        return out

    async def write(self, data) -> None:
        self.written += bytes(data)

    async def close_write(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def reset(self) -> None:
        pass


async def test_stream_helpers_never_read_past_a_message():
    payload = b"p" * 300
    s = _ChunkedStream(encode_length_prefixed(payload) + b"rest", chunk=7)
    assert await read_length_prefixed(s, max_size=300) == payload
    assert s.data == b"rest"
    s = _ChunkedStream(encode_uvarint(MAX_U63) + b"z")
    assert await read_uvarint(s) == MAX_U63
    assert await read_exactly(s, 1) == b"z"
    assert await read_uvarint(s, allow_eof=True) is None
    assert await read_length_prefixed(s, 10, allow_eof=True) is None
    assert await read_exactly(s, 0) == b""


async def test_stream_helpers_errors():
    with pytest.raises(IncompleteRead):
        await read_uvarint(_ChunkedStream(b""))
    with pytest.raises(IncompleteRead):
        await read_uvarint(_ChunkedStream(b"\x80"), allow_eof=True)
    with pytest.raises(IncompleteRead):
        await read_length_prefixed(_ChunkedStream(b"\x05abc"), 10)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        await read_length_prefixed(_ChunkedStream(b"\x0b" + b"x" * 11), 10)
    with pytest.raises(ProtocolError, match="minimal"):
        await read_uvarint(_ChunkedStream(b"\x80\x00"))
    with pytest.raises(ProtocolError, match="longer than 9"):
        await read_uvarint(_ChunkedStream(b"\x80" * 10))
    assert issubclass(IncompleteRead, ProtocolError)


async def test_write_length_prefixed():
    s = _ChunkedStream(b"")
    await write_length_prefixed(s, b"hello")
    assert s.written == b"\x05hello"
