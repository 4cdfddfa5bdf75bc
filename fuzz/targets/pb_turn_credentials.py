"""protocols/turn_credentials.py: the TURN credentials a relay hands out (pb/turn_credentials
.proto), as a peer decodes them, and the request the relay parses.

Contract: decode returns credentials whose URLs are turn:/turns: strings and whose username and
password are non-empty strings, with a finite expiry, or raises ProtocolError; what decodes
re-encodes to the same.
"""

import math

from p2prtc.errors import ProtocolError
from p2prtc.protocols import turn_credentials as tc

NOW = 1_800_000_000.0


def test_one(data: bytes) -> None:
    try:
        c = tc.decode(data, now=NOW)
    except ProtocolError:
        return
    assert c.urls and all(isinstance(u, str) and u.startswith(("turn:", "turns:"))
                          for u in c.urls), c.urls
    assert isinstance(c.username, str) and c.username and isinstance(c.password, str)
    assert math.isfinite(c.expires), c.expires
    assert tc.decode(tc.encode(c), now=NOW) == c


def seeds() -> list[bytes]:
    c = tc.credentials_for("secret", "12D3KooWPeer", ["turn:198.51.100.7:3478?transport=udp",
                                                     "turns:relay.example:5349"], now=NOW)
    return [tc.encode(c),
            tc.pb.TurnCredentials(urls=["turn:x"], username="u", password="p",
                                  ttl=60).SerializeToString(),
            tc.pb.TurnCredentials(urls=["stun:x"], username="u").SerializeToString()]
