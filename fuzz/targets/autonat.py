"""protocols/autonat_core.py: AutoNAT v2's messages and both state machines (ServerRequest on
/libp2p/autonat/2/dial-request, ClientRequest), plus the DialBack codec.

Input: a header byte (side, policy, observed IP, nonce of the dial-back), a split seed, then the
remote's bytes on the stream, fed in chunks; the server's dial-backs are answered with a status
from the input. Contract: only ProtocolError (DialDataRefused) comes out; the server dials at
most once, only an address its policy allows, and (unless it is the requester's observed IP)
only after receiving at least the dial data it asked for, never more than one chunk per
message; every answer it sends is a valid message the client side reads; the client reports
an address as public only after its own dial-back arrived, never sends more dial data than its
limit, and names only addresses it asked about.
"""

import ipaddress

from p2prtc.errors import ProtocolError
from p2prtc.multiaddr import Multiaddr
from p2prtc.pb import autonat_v2_pb2 as pb
from p2prtc.protocols import autonat_core as a

from ..harness import split_points

OBSERVED = [None, "203.0.113.9", "10.0.0.2", "2001:db8::9"]
ADDRS = [Multiaddr("/ip4/203.0.113.9/tcp/4001"), Multiaddr("/ip4/10.0.0.2/udp/9/quic-v1"),
         Multiaddr("/ip6/2001:db8::9/tcp/4001")]
NONCE = 0x1234_5678_9ABC


def _public(ip: str) -> bool:
    # the documentation ranges play the internet here (tests do the same with a netns range)
    return ipaddress.ip_address(ip).is_global or ip.startswith("203.0.113.") \
        or ip.startswith("2001:db8:")


def test_one(data: bytes) -> None:
    if len(data) < 2:
        return
    head, seed, wire = data[0], data[1], data[2:]
    if head & 1:
        _client(head, seed, wire)
    else:
        _server(head, seed, wire)
    try:
        nonce = a.parse_dial_back(wire)
    except ProtocolError:
        return
    assert a.parse_dial_back(a.dial_back_message(nonce)[1:] if nonce < 64 else
                             a.MessageReader().feed(a.dial_back_message(nonce))[0]) == nonce


def _server(head: int, seed: int, wire: bytes) -> None:
    policy = a.ServerPolicy(allow_private=bool(head & 2), is_public=_public,
                            can_dial=lambda addr: not addr.has("quic-v1") or bool(head & 4),
                            min_dial_data=1000 if head & 8 else a.MIN_DIAL_DATA)
    observed = OBSERVED[(head >> 4) & 3]
    limiter = a.RateLimiter(dial_data_rpm=head >> 7) if head & 64 else None  # 0: refuse
    req = a.ServerRequest(policy, observed, limiter=limiter, now=100.0)
    dials = 0
    client_reader = a.MessageReader()
    try:
        for chunk in split_points(wire, seed):
            for action in req.receive(chunk):
                if isinstance(action, a.DialBack):
                    dials += 1
                    assert dials == 1, "the server dialled twice"
                    assert policy.refusal(action.addr, observed) is None
                    ip = a.addr_ip(action.addr)
                    if observed is None or ipaddress.ip_address(ip) != \
                            ipaddress.ip_address(observed):
                        assert req.dial_data_received >= policy.min_dial_data
                    action = req.dial_result((a.DIAL_OK, a.DIAL_ERROR,
                                              a.DIAL_BACK_ERROR)[seed % 3])
                assert isinstance(action, a.Send)
                for body in client_reader.feed(action.data):
                    msg = a.parse_message(body)
                    assert msg.WhichOneof("msg") in ("dialResponse", "dialDataRequest")
                if action.then_close:
                    assert req.state == "done"
    except ProtocolError:
        return


def _client(head: int, seed: int, wire: bytes) -> None:
    client = a.ClientRequest(ADDRS[:1 + (head >> 1) % 3], NONCE, send_dial_data=bool(head & 8),
                             max_dial_data=a.CLIENT_MAX_DIAL_DATA >> ((head >> 4) & 3))
    a.MessageReader().feed(client.request())
    back = head & 64
    if back:
        assert client.dial_back(NONCE if head & 128 else NONCE + 1) == bool(head & 128)
    try:
        for chunk in split_points(wire, seed):
            for action in client.receive(chunk):
                if isinstance(action, a.SendDialData):
                    assert action.total <= client.max_dial_data
                    assert 0 <= action.index < len(client.addrs)
                elif isinstance(action, a.AwaitDialBack):
                    assert not client.dial_back_received
                    if seed & 1:  # the dial-back never comes: the server's word is not enough
                        try:
                            client.held_result()
                        except ProtocolError:
                            return
                        raise AssertionError("a dial back reported that never arrived")
                    client.dial_back(NONCE)
                    _result(client, client.held_result())
                else:
                    _result(client, action.result)
    except ProtocolError:
        return


def _result(client: a.ClientRequest, result: a.CheckResult) -> None:
    result.to_dict()
    if result.reachability is a.Reachability.PUBLIC:
        assert client.dial_back_received
    if result.addr is not None:
        assert client.addrs[result.index] == result.addr


def seeds() -> list[bytes]:
    client = a.ClientRequest(ADDRS, NONCE)
    req = client.request()
    data = a.dial_data_message()
    H = pb.DialResponse
    dial_data_req = a.encode(pb.Message(dialDataRequest=pb.DialDataRequest(addrIdx=0,
                                                                           numBytes=30_000)))
    return [
        # server: the requester's own IP (no dial data), then one that needs dial data
        bytes([0x10, 0]) + req,
        bytes([0x08, 3]) + req + data,  # min_dial_data 1000 (the default needs 30 KB)
        bytes([0x0A, 0]) + req + data,
        bytes([0x42, 7]) + req + data + data[:2000],
        bytes([0x24, 1]) + a.encode(pb.Message(dialRequest=pb.DialRequest(
            addrs=[ADDRS[1].to_bytes(), b"\xff", ADDRS[2].to_bytes()], nonce=5))) + data,
        # client: dial data asked, then OK with and without our dial-back
        bytes([0x49 | 0x80, 0]) + dial_data_req + a.response(H.OK, 0, a.DIAL_OK),
        bytes([0x09, 2]) + dial_data_req + a.response(H.OK, 1, a.DIAL_ERROR),
        bytes([0x05, 0]) + a.response(H.E_DIAL_REFUSED),
        bytes([0x01, 1]) + a.response(H.OK, 0, a.DIAL_OK),  # no dial-back came
        bytes([0x01, 0]) + a.rejected_response(),
        bytes([0x00, 0]) + a.dial_back_message(NONCE)[1:],
    ]
