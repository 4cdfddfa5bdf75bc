"""AutoNAT v2 sans-I/O core: codec bounds, the server's address policy, dial data and rate
limits, the client's checks of what a server says."""

from __future__ import annotations

import pytest

from p2prtc.errors import ProtocolError
from p2prtc.multiaddr import Multiaddr
from p2prtc.pb import autonat_v2_pb2 as pb
from p2prtc.protocols import autonat_core as core
from p2prtc.wire.varint import encode_uvarint

PUBLIC = Multiaddr("/ip4/8.8.8.8/tcp/4001")
OTHER_PUBLIC = Multiaddr("/ip4/1.1.1.1/tcp/4001")
PRIVATE = Multiaddr("/ip4/192.168.1.5/tcp/4001")


def request(*addrs: Multiaddr, nonce: int = 7) -> bytes:
    return core.encode(pb.Message(dialRequest=pb.DialRequest(
        addrs=[a.to_bytes() for a in addrs], nonce=nonce)))


def decode(data: bytes) -> pb.Message:
    (body,) = core.MessageReader().feed(data)
    return core.parse_message(body)


def test_reader_bounds_and_split_input():
    msg = request(PUBLIC)
    reader = core.MessageReader()
    assert reader.feed(msg[:3]) == [] and len(reader.feed(msg[3:])) == 1
    big = core.dial_data_message()  # a 2-byte length prefix, split after its first byte
    assert reader.feed(big[:1]) == [] and len(reader.feed(big[1:])) == 1
    with pytest.raises(ProtocolError, match="max 8192"):
        core.MessageReader().feed(encode_uvarint(9000))


def test_same_ip_is_dialled_without_dial_data():
    req = core.ServerRequest(core.ServerPolicy(), "8.8.8.8")
    (action,) = req.receive(request(PRIVATE, PUBLIC))
    assert action == core.DialBack(PUBLIC, 1, 7)
    assert req.refusals == [(PRIVATE, "private address")]
    done = decode(req.dial_result(core.DIAL_OK).data).dialResponse
    assert (done.status, done.addrIdx, done.dialStatus) == (pb.DialResponse.OK, 1, pb.OK)


def test_other_ip_costs_dial_data():
    req = core.ServerRequest(core.ServerPolicy(), "8.8.8.8", dial_data_size=10_000)
    (ask,) = req.receive(request(OTHER_PUBLIC))
    assert isinstance(ask, core.Send) and not ask.then_close
    assert decode(ask.data).dialDataRequest.numBytes == 10_000
    chunk = core.dial_data_message()
    assert req.receive(chunk + chunk) == []
    (dial,) = req.receive(chunk)  # 12288 >= 10000: the last one may overshoot (spec)
    assert dial == core.DialBack(OTHER_PUBLIC, 0, 7)


def test_dial_data_in_tiny_pieces_is_refused():
    req = core.ServerRequest(core.ServerPolicy(), "8.8.8.8")
    req.receive(request(OTHER_PUBLIC))
    with pytest.raises(ProtocolError, match="too small"):
        req.receive(core.dial_data_message(10))


def test_private_address_of_a_third_party_is_never_dialled():
    policy = core.ServerPolicy(allow_private=True)
    req = core.ServerRequest(policy, "10.0.0.1")
    (refused,) = req.receive(request(PRIVATE))
    assert refused.then_close  # type: ignore[union-attr]
    assert decode(refused.data).dialResponse.status == pb.DialResponse.E_DIAL_REFUSED  # type: ignore[union-attr]
    assert req.refusals == [(PRIVATE, "private address of another host")]
    # ... but the requester's own private IP is, with allow_private
    own = core.ServerRequest(policy, "192.168.1.5")
    assert own.receive(request(PRIVATE)) == [core.DialBack(PRIVATE, 0, 7)]
    assert core.ServerRequest(core.ServerPolicy(), "192.168.1.5").receive(request(PRIVATE))[0] \
        != core.DialBack(PRIVATE, 0, 7)


def test_rate_limits():
    rl = core.RateLimiter(rpm=3, per_peer_rpm=2, dial_data_rpm=1, max_concurrent_per_peer=1)
    assert rl.accept("a", 0.0)
    assert not rl.accept("a", 0.1)  # one at a time
    rl.complete("a")
    assert rl.accept("a", 0.2) and rl.accept("b", 0.2)
    rl.complete("a")
    assert not rl.accept("a", 0.3)  # two a minute
    rl.complete("b")
    assert not rl.accept("c", 0.3)  # three a minute, all peers
    assert rl.accept("a", 61.0)  # the window slid
    assert rl.accept_dial_data(0.0) and not rl.accept_dial_data(1.0)


def test_client_trusts_the_nonce_not_the_server():
    c = core.ClientRequest([PUBLIC], 42)
    ok = core.encode(pb.Message(dialResponse=pb.DialResponse(
        status=pb.DialResponse.OK, addrIdx=0, dialStatus=pb.OK)))
    (wait,) = c.receive(ok)
    assert isinstance(wait, core.AwaitDialBack)
    with pytest.raises(ProtocolError, match="never received"):
        c.held_result()
    assert not c.dial_back(41) and c.dial_back(42)
    assert c.held_result().reachability is core.Reachability.PUBLIC


def test_client_rejects_bad_answers():
    c = core.ClientRequest([PUBLIC], 1)
    bad_idx = core.encode(pb.Message(dialResponse=pb.DialResponse(
        status=pb.DialResponse.OK, addrIdx=3, dialStatus=pb.E_DIAL_ERROR)))
    with pytest.raises(ProtocolError, match="address 3"):
        c.receive(bad_idx)
    unknown = core.encode(pb.Message(dialResponse=pb.DialResponse(status=7)))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="unknown response status"):
        core.ClientRequest([PUBLIC], 1).receive(unknown)
    greedy = core.encode(pb.Message(dialDataRequest=pb.DialDataRequest(addrIdx=0, numBytes=10**6)))
    with pytest.raises(core.DialDataRefused):
        core.ClientRequest([PUBLIC], 1).receive(greedy)
    refused = core.encode(pb.Message(dialResponse=pb.DialResponse(
        status=pb.DialResponse.E_DIAL_REFUSED)))
    (done,) = core.ClientRequest([PUBLIC], 1).receive(refused)
    assert isinstance(done, core.Done) and done.result.status == "refused"
