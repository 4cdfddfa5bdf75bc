"""WebRTC stream framing (specs: webrtc/README.md): our hand-written fast paths agree byte for
byte with the protobuf-generated Message, the 16 KiB cap holds, and garbage only ever raises
ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.errors import ProtocolError
from p2prtc.pb import webrtc_pb2
from p2prtc.transports.webrtc import framing
from p2prtc.wire.varint import encode_length_prefixed


def reference(flag=None, message=None) -> bytes:
    m = webrtc_pb2.Message()
    if flag is not None:
        m.flag = flag
    if message is not None:
        m.message = message
    return encode_length_prefixed(m.SerializeToString())


@given(st.binary(max_size=framing.MAX_DATA_SIZE))
@settings(max_examples=200)
def test_encode_data_matches_protobuf(data):
    assert framing.encode_data(data) == reference(message=data)


@pytest.mark.parametrize("flag", sorted(framing.FLAG_NAMES))
def test_encode_flag_matches_protobuf(flag):
    assert framing.encode_flag(flag) == reference(flag=flag)


def test_largest_data_message_fits_16_kib():
    assert len(framing.encode_data(bytes(framing.MAX_DATA_SIZE))) <= framing.MAX_ENCODED_SIZE
    assert framing.MAX_DATA_SIZE == 16384 - 7  # the figure js-libp2p uses


@given(st.lists(st.one_of(
    st.tuples(st.none(), st.binary(max_size=2000)),
    st.tuples(st.sampled_from(sorted(framing.FLAG_NAMES)), st.none()),
    st.tuples(st.sampled_from(sorted(framing.FLAG_NAMES)), st.binary(min_size=1, max_size=50)),
), max_size=20), st.data())
def test_decoder_round_trips_at_any_split(frames, data):
    wire = b"".join(reference(f, m) for f, m in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    dec = framing.FrameDecoder()
    got = []
    prev = 0
    for c in cuts + [len(wire)]:
        got += dec.feed(wire[prev:c])
        prev = c
    expected = [(f, m if m else (b"" if m == b"" else None)) for f, m in frames]
    # an empty bytes field is absent-or-empty on the wire: compare by content
    assert [(f, m or None) for f, m in got] == [(f, m or None) for f, m in expected]


@given(st.binary(max_size=300))
def test_garbage_only_raises_protocol_error(blob):
    try:
        framing.FrameDecoder().feed(blob)
    except ProtocolError:
        pass


def test_oversized_message_is_refused():
    with pytest.raises(ProtocolError):
        framing.FrameDecoder().feed(encode_length_prefixed(bytes(framing.MAX_ENCODED_SIZE + 1)))


def test_unknown_flag_is_refused_or_ignored():
    # flag 9 is unknown: proto2 keeps it as an unknown field, so it reads as "no flag"
    flag, msg = framing.decode_body(b"\x08\x09")
    assert flag is None and msg is None
