"""Inputs the fuzz targets (fuzz/targets/) found that broke a decoder's contract, fed straight
to the decoder: each must now give a value or the documented error (ProtocolError)."""

from __future__ import annotations

import pytest

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.pb import identify_pb2, webrtc_pb2
from p2prtc.protocols import identify
from p2prtc.transports.webrtc import engine, signaling
from p2prtc.wire.varint import encode_length_prefixed

PEER = Identity.from_seed(7).peer_id


def _string_field(field: int, raw: bytes) -> bytes:
    """A length-delimited protobuf field holding raw (not UTF-8) bytes."""
    return bytes([field << 3 | 2]) + encode_length_prefixed(raw)


def test_identify_strings_that_are_not_utf8_come_out_as_str():
    # fuzz pb_identify: upb returns bytes for a proto2 string field that is not valid UTF-8,
    # so `protocols` held a bytes object (and agentVersion would have too).
    data = (identify_pb2.Identify(protocols=["/ipfs/id/1.0.0"]).SerializeToString()
            + _string_field(3, b"\xc7\x93\x96\x9d\x8f\xcd\x8f\xd0circuit/relay/0.2.0/hop")
            + _string_field(6, b"agent\xff") + _string_field(5, b"\xfe"))
    rec = identify.decode(data, PEER)
    assert rec.protocols[0] == "/ipfs/id/1.0.0"
    assert all(isinstance(p, str) for p in rec.protocols)
    assert rec.protocols[1].endswith("circuit/relay/0.2.0/hop")
    assert rec.agent_version == "agent\ufffd" and rec.protocol_version == "\ufffd"


def test_signaling_data_that_is_not_utf8_comes_out_as_str():
    body = bytes([0x08, webrtc_pb2.SignalingMessage.SDP_OFFER]) + _string_field(2, b"v=0\xff")
    msg = signaling.decode_message(body)
    assert msg.data == "v=0\ufffd"
    with pytest.raises(ProtocolError):
        engine.parse_sdp(msg.data)


def test_candidate_json_nested_too_deep_is_a_protocol_error():
    # json.loads raises RecursionError (not a ValueError) on deep nesting; 64 KiB allows it.
    msg = webrtc_pb2.SignalingMessage(type=webrtc_pb2.SignalingMessage.ICE_CANDIDATE,
                                      data="[" * 50_000)
    with pytest.raises(ProtocolError, match="not JSON"):
        signaling.candidate_init(msg)


BAD_SDP = [
    # fuzz signaling: aiortc's parser raised KeyError for an unknown a=setup role ...
    "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup: host\r\n",
]


@pytest.mark.parametrize("sdp", BAD_SDP)
def test_unparsable_sdp_is_a_protocol_error(sdp):
    with pytest.raises(ProtocolError, match="unparsable SDP"):
        engine.parse_sdp(sdp)


@pytest.mark.parametrize("sdp", BAD_SDP)
async def test_peer_connection_refuses_unparsable_offer_and_answer(sdp):
    pc = engine.PeerConnection([])
    try:
        with pytest.raises(ProtocolError):
            await pc.accept_offer(sdp)
    finally:
        await pc.close()
    pc = engine.PeerConnection([])
    try:
        await pc.create_offer()
        with pytest.raises(ProtocolError):
            await pc.accept_answer(sdp)
    finally:
        await pc.close()


@pytest.mark.parametrize("extra", ['"sdpMid": 5', '"sdpMid": ["0"]', '"sdpMLineIndex": "0"',
                                   '"sdpMLineIndex": true'])
def test_candidate_with_badly_typed_mid_or_index_is_a_protocol_error(extra):
    # fuzz signaling's contract: a parsed candidate carries the types addIceCandidate expects.
    import json
    init = json.loads('{"candidate": "candidate:1 1 UDP 2130706431 198.51.100.7 5000 typ host", '
                      + extra + "}")
    with pytest.raises(ProtocolError, match="sdpMid"):
        engine.parse_candidate(init)


def test_candidate_with_mid_and_index_parses():
    cand = engine.parse_candidate({"candidate": "candidate:1 1 UDP 2130706431 198.51.100.7 5000 "
                                                "typ host", "sdpMid": "0", "sdpMLineIndex": 0})
    assert (cand.ip, cand.port, cand.sdpMid, cand.sdpMLineIndex) == ("198.51.100.7", 5000, "0", 0)


def test_turn_credentials_that_are_not_utf8_are_a_protocol_error():
    # fuzz pb_turn_credentials: a URL that is not UTF-8 came back as bytes, and
    # bytes.startswith(("turn:", ...)) raised TypeError.
    from p2prtc.protocols import turn_credentials as tc
    data = (_string_field(1, b"turn:\xff") + _string_field(2, b"1800000000:peer")
            + _string_field(3, b"pw"))
    with pytest.raises(ProtocolError, match="not UTF-8"):
        tc.decode(data, now=1.0)


@pytest.mark.parametrize("username", ["\u00b2:peer", "9" * 400 + ":peer"])
def test_turn_credentials_expiry_is_an_ascii_unix_time(username):
    from p2prtc.protocols import turn_credentials as tc
    c = tc.decode(tc.pb.TurnCredentials(urls=["turn:x"], username=username, password="p",
                                        ttl=60).SerializeToString(), now=1000.0)
    assert c.expires == 1060.0


def test_autonat_length_prefix_split_across_reads_waits_for_the_rest():
    # fuzz autonat: MessageReader caught ValueError for an incomplete varint, but
    # decode_uvarint raises VarintIncomplete, so a 2-byte prefix (a 4096-byte DialDataResponse)
    # split across two reads escaped ServerRequest.receive (and ClientRequest.receive).
    from p2prtc.multiaddr import Multiaddr
    from p2prtc.protocols import autonat_core as core
    client = core.ClientRequest([Multiaddr("/ip4/203.0.113.9/tcp/4001")], nonce=7)
    policy = core.ServerPolicy(is_public=lambda ip: True, min_dial_data=core.DIAL_DATA_CHUNK)
    server = core.ServerRequest(policy, observed_ip="198.51.100.1")
    [ask] = server.receive(client.request())
    assert isinstance(ask, core.Send) and server.state == "dial-data"
    data = core.dial_data_message()
    assert data[1] & 0x80 == 0 and data[0] & 0x80  # the prefix is two bytes
    for i in range(len(data)):
        actions = server.receive(data[i:i + 1])
    [dial] = actions
    assert isinstance(dial, core.DialBack) and server.dial_data_received == core.DIAL_DATA_CHUNK
    reader = core.MessageReader()
    assert reader.feed(data[:1]) == [] and reader.feed(data[1:]) == [data[2:]]


def test_autonat_length_prefix_too_long_is_a_protocol_error():
    from p2prtc.protocols import autonat_core as core
    with pytest.raises(ProtocolError, match="varint"):
        core.MessageReader().feed(b"\xff" * 10)


def test_autonat_client_refuses_a_second_dial_response():
    # fuzz autonat: the client took every DialResponse on the stream (two "OK, dialled back"
    # answers gave two AwaitDialBack); one exchange has one response, more is a protocol error.
    from p2prtc.multiaddr import Multiaddr
    from p2prtc.protocols import autonat_core as core
    ok = core.response(core.pb.DialResponse.OK, 0, core.DIAL_OK)
    client = core.ClientRequest([Multiaddr("/ip4/203.0.113.9/tcp/4001")], nonce=7)
    with pytest.raises(ProtocolError, match="after the DialResponse"):
        client.receive(ok + ok)
    client = core.ClientRequest([Multiaddr("/ip4/203.0.113.9/tcp/4001")], nonce=7)
    [action] = client.receive(core.response(core.pb.DialResponse.E_DIAL_REFUSED))
    assert isinstance(action, core.Done) and action.result.status == "refused"
    with pytest.raises(ProtocolError):
        client.receive(ok)
