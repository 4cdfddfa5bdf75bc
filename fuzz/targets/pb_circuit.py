"""protocols/relay_hop.py: circuit relay v2 HopMessage / StopMessage (pb/circuit.proto), the
peers and reservation (addresses, voucher envelope, limit) they carry.

Contract: parse_message / peer_of / open_voucher raise only ProtocolError (MalformedMessage);
reservation addresses raise only MultiaddrError; what parses re-serializes and parses again.
"""

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.multiaddr import Multiaddr, MultiaddrError
from p2prtc.pb import circuit_pb2
from p2prtc.protocols import relay_hop as hop

RELAY = Identity.from_seed(3)
PEER = Identity.from_seed(4)


def test_one(data: bytes) -> None:
    if not data:
        return
    cls = circuit_pb2.StopMessage if data[0] & 1 else circuit_pb2.HopMessage
    body = data[1:]
    try:
        msg = hop.parse_message(body, cls)
    except ProtocolError:
        msg = None
    if msg is not None:
        again = hop.parse_message(msg.SerializeToString(), cls)
        assert again == msg
        try:
            peer = hop.peer_of(msg)
            assert peer.to_bytes() == msg.peer.id
        except ProtocolError:
            pass
        if msg.HasField("peer"):
            for raw in msg.peer.addrs:
                _addr(raw)
        if cls is circuit_pb2.HopMessage and msg.HasField("reservation"):
            for raw in msg.reservation.addrs:
                _addr(raw)
            if msg.reservation.HasField("voucher"):
                _voucher(msg.reservation.voucher)
        if msg.HasField("limit"):
            assert msg.limit.duration >= 0 and msg.limit.data >= 0
        hop.status_name(msg.status)
    _voucher(body)


def _addr(raw: bytes) -> None:
    try:
        Multiaddr.from_bytes(raw).with_peer_id(RELAY.peer_id)
    except MultiaddrError:
        pass


def _voucher(raw: bytes) -> None:
    try:
        v = hop.open_voucher(raw)
    except ProtocolError:
        return
    assert isinstance(v.relay, bytes) and isinstance(v.peer, bytes)


def seeds() -> list[bytes]:
    H, S = circuit_pb2.HopMessage, circuit_pb2.StopMessage
    voucher = hop.make_voucher(RELAY, PEER.peer_id, 1_900_000_000)
    addr = Multiaddr("/ip4/198.51.100.7/tcp/4884").to_bytes()
    return [
        b"\x00" + H(type=H.RESERVE).SerializeToString(),
        b"\x00" + H(type=H.STATUS, status=hop.OK, reservation=circuit_pb2.Reservation(
            expire=1_900_000_000, addrs=[addr], voucher=voucher),
            limit=circuit_pb2.Limit(duration=120, data=1 << 17)).SerializeToString(),
        b"\x00" + H(type=H.CONNECT, peer=circuit_pb2.Peer(id=PEER.peer_id.to_bytes(),
                                                          addrs=[addr])).SerializeToString(),
        b"\x01" + S(type=S.CONNECT, peer=circuit_pb2.Peer(id=PEER.peer_id.to_bytes()),
                    limit=circuit_pb2.Limit(duration=5)).SerializeToString(),
        b"\x01" + S(type=S.STATUS, status=hop.OK).SerializeToString(),
        b"\x00" + voucher,
    ]
