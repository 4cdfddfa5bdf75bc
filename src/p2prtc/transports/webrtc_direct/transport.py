"""The `/webrtc-direct` transport (specs: webrtc/webrtc-direct.md).

    host.listen("/ip4/0.0.0.0/udp/4885/webrtc-direct")
      -> /ip4/<each ip>/udp/4885/webrtc-direct/certhash/<sha-256 of our DTLS cert>
    host.dial("/ip4/1.2.3.4/udp/4885/webrtc-direct/certhash/uEi.../p2p/12D3KooW...")

WebRTC brings its own security and muxing, so the transport builds `Connection`s itself: DTLS
(certificate pinned by the certhash) + Noise on channel 0 for the libp2p identities + one data
channel per stream. aiortc is imported on first use, so a Host that never touches
webrtc-direct does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...connection import Connection
from ...multiaddr import Multiaddr
from ..base import ConnectionHandler, Listener, Transport

if TYPE_CHECKING:
    from ...network import Network


def _is_direct(names: list[str]) -> bool:
    return len(names) >= 3 and names[0] in ("ip4", "ip6") and names[1:3] == ["udp", "webrtc-direct"]


class WebRTCDirectTransport(Transport):
    name = "webrtc-direct"

    def __init__(self, host: Network, dial_version: int = 1) -> None:
        self.host = host
        # Which handshake our dials use (listeners accept both): 1 (what every server speaks
        # today) or 2 (libp2p/specs#715: no SDP munging; go-libp2p >= 0.49 listeners).
        self.dial_version = dial_version

    def can_dial(self, addr: Multiaddr) -> bool:
        names = addr.protocols()
        return (_is_direct(names) and "p2p-circuit" not in names
                and all(n in ("certhash", "p2p") for n in names[3:]) and "certhash" in names)

    def can_listen(self, addr: Multiaddr) -> bool:
        names = addr.protocols()
        return _is_direct(names) and len(names) == 3

    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener:
        from .certificate import certificate_for
        from .listener import WebRTCDirectListener

        comps = addr.components()
        ip, port = comps[0][1], comps[1][1]
        if ip is None or port is None:  # (can_listen checked the shape; the codec gives values)
            raise ValueError(f"not a webrtc-direct listen address: {addr}")
        listener = WebRTCDirectListener(ip, int(port), self.host.identity,
                                        certificate_for(self.host.identity), on_connection,
                                        resources=self.host.upgrader.resources)
        await listener.start()  # OSError (port in use, ...) as for TCP listeners
        return listener

    async def dial(self, addr: Multiaddr) -> Connection:
        from .dialer import dial

        return await dial(addr, self.host.identity, self.dial_version,
                          resources=self.host.upgrader.resources)
