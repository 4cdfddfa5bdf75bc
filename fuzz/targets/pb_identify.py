"""protocols/identify.py: identify messages (pb/identify.proto) from a remote peer.

Contract: identify.decode returns a record (its key, if any, is the peer's; its addresses are
multiaddrs; its texts are str) or raises ProtocolError.
"""

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity, PeerId
from p2prtc.multiaddr import Multiaddr
from p2prtc.pb import identify_pb2
from p2prtc.protocols import identify

PEER = Identity.from_seed(7)


def test_one(data: bytes) -> None:
    for remote in (PEER.peer_id, _OTHER):
        try:
            rec = identify.decode(data, remote)
        except ProtocolError:
            continue
        if rec.public_key is not None:
            assert PeerId.from_public_key(rec.public_key) == remote
        for a in rec.listen_addrs + ([rec.observed_addr] if rec.observed_addr else []):
            assert isinstance(a, Multiaddr)
            assert Multiaddr.from_bytes(a.to_bytes()) == a
        assert all(isinstance(p, str) for p in rec.protocols), rec.protocols
        for text in (rec.agent_version, rec.protocol_version):
            assert text is None or isinstance(text, str), repr(text)


_OTHER = Identity.from_seed(8).peer_id


def seeds() -> list[bytes]:
    m = identify_pb2.Identify(
        protocolVersion="ipfs/0.1.0", agentVersion="p2prtc/0.1.0",
        publicKey=PEER.public_key.to_protobuf(),
        listenAddrs=[Multiaddr("/ip4/198.51.100.7/tcp/4001").to_bytes(),
                     Multiaddr("/ip4/198.51.100.7/udp/4001/webrtc-direct").to_bytes()],
        observedAddr=Multiaddr("/ip6/::1/tcp/5/ws").to_bytes(),
        protocols=["/ipfs/id/1.0.0", "/libp2p/circuit/relay/0.2.0/hop"],
    )
    return [m.SerializeToString(), identify_pb2.Identify(agentVersion="x").SerializeToString(),
            b"\x0a\x03\xff\xfe\xfd"]
