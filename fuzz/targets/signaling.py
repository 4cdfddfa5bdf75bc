"""transports/webrtc/signaling.py message parsing: length-prefixed SignalingMessage protobufs,
the ICE candidate JSON they carry (engine.parse_candidate, what add_candidate applies) and SDP
(engine.parse_sdp, aiortc's parser as accept_offer/accept_answer run it).

Contract: ProtocolError only (engine.parse_sdp runs aiortc's SDP parser the way accept_offer and
accept_answer do); a candidate that parses has the types aiortc's addIceCandidate expects.
"""

from p2prtc.errors import ProtocolError
from p2prtc.pb import webrtc_pb2
from p2prtc.transports.webrtc import engine, signaling
from p2prtc.wire.varint import LengthPrefixedDecoder, encode_length_prefixed

Msg = webrtc_pb2.SignalingMessage


def test_one(data: bytes) -> None:
    try:
        bodies = LengthPrefixedDecoder(signaling.MAX_MESSAGE_SIZE).feed(data)
    except ProtocolError:
        return
    for body in bodies[:8]:
        try:
            msg = signaling.decode_message(body)
        except ProtocolError:
            continue
        if msg.type == Msg.ICE_CANDIDATE:
            try:
                cand = engine.parse_candidate(signaling.candidate_init(msg))
            except ProtocolError:
                continue
            if cand is not None:
                assert cand.sdpMid is None or isinstance(cand.sdpMid, str), cand.sdpMid
                assert cand.sdpMLineIndex is None or (
                    isinstance(cand.sdpMLineIndex, int)
                    and not isinstance(cand.sdpMLineIndex, bool)), cand.sdpMLineIndex
                assert isinstance(cand.port, int) and isinstance(cand.ip, str)
        else:
            try:
                engine.parse_sdp(msg.data)
            except ProtocolError:
                pass


def seeds() -> list[bytes]:
    def m(kind, text):
        return encode_length_prefixed(Msg(type=kind, data=text).SerializeToString())
    offer = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
             "a=msid-semantic:WMS *\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
             "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:65536\r\n"
             "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
             "a=candidate:1 1 UDP 2130706431 198.51.100.7 5000 typ host\r\n")
    cand = ('{"candidate":"candidate:1 1 UDP 1694498815 203.0.113.5 40000 typ srflx raddr '
            '198.51.100.7 rport 5000","sdpMid":"0","sdpMLineIndex":0}')
    return [
        m(Msg.SDP_OFFER, offer),
        m(Msg.SDP_ANSWER, offer.replace("actpass", "active")),
        m(Msg.ICE_CANDIDATE, cand) + m(Msg.ICE_CANDIDATE, "null") + m(Msg.ICE_CANDIDATE, ""),
        m(Msg.ICE_CANDIDATE, '{"candidate":"","sdpMid":"0"}'),
        m(Msg.ICE_CANDIDATE, '{"candidate":"candidate:x 1 tcp 5 ::1 9 typ host tcptype '
                             'passive"}'),
    ]
