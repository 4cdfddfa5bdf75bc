"""protocols/natinfo.py: the NAT behaviour message a peer sends (`/p2prtc/nat/1.0.0`, JSON).

Contract: decode returns a NatBehaviour or None, or raises ProtocolError; what decodes
re-encodes to something that decodes the same.
"""

from p2prtc.errors import ProtocolError
from p2prtc.protocols import natinfo


def test_one(data: bytes) -> None:
    try:
        b = natinfo.decode(data)
    except ProtocolError:
        return
    if b is not None:
        assert natinfo.decode(natinfo.encode(b)) == b


def seeds() -> list[bytes]:
    return [b"{}", b'{"mapping":"endpoint-independent","filtering":"port-dependent",'
            b'"public":"203.0.113.5:4000","server":"198.51.100.1:3478"}',
            b'{"mapping":"address-and-port-dependent","filtering":"unknown"}', b"[]", b"null"]
