"""libp2p WebRTC-direct (specs: webrtc/webrtc-direct.md): browsers and other peers reach a
public node over WebRTC without a trusted TLS certificate.

Modules, bottom up: stun.py (STUN codec, sans-I/O), ice.py (ICE-lite responder and client
checks, sans-I/O), certificate.py (DTLS certificate derived from the identity, certhash,
Noise prologue), peer.py (aiortc's DTLS/SCTP/data channels on our datagrams: the only module
that touches aiortc), upgrade.py (Noise on channel 0, Connection), listener.py (one UDP socket
for all clients), dialer.py (client), transport.py (the Transport the Host uses).
"""

from .transport import WebRTCDirectTransport

__all__ = ["WebRTCDirectTransport"]
