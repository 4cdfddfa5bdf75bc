"""From a DTLS+SCTP connection to a libp2p Connection: Noise on channel 0, then data channels.

specs webrtc-direct.md "Connection Security": channel id 0 (negotiated), the SERVER is the
Noise initiator (it can send first: DTLS 1.2's server sends the last handshake flight), the
prologue binds both DTLS certificates. Noise messages travel inside the usual stream framing
(webrtc/README.md). Once authenticated, channel 0 is closed and every stream is its own data
channel, exactly as on /webrtc (DataChannelStream, DataChannelMuxer).
"""

from __future__ import annotations

import logging

from ...connection import Connection
from ...identity import Identity, PeerId
from ...multiaddr import Multiaddr
from ...security import noise
from ..webrtc.muxer import DataChannelMuxer
from ..webrtc.stream import DataChannelStream
from .certificate import certhash, noise_prologue
from .peer import DirectPeerConnection

log = logging.getLogger(__name__)

TRANSPORT_NAME = "webrtc-direct"
MUXER_PROTOCOL = "/webrtc-direct"
SECURITY_PROTOCOL = "/noise"


async def authenticate(pc: DirectPeerConnection, identity: Identity, *, server: bool,
                       local_digest: bytes, remote_digest: bytes,
                       remote_peer: PeerId | None = None) -> noise.SecureSession:
    """Run Noise XX on the negotiated channel 0; raises HandshakeError on failure."""
    client_digest, server_digest = ((remote_digest, local_digest) if server
                                    else (local_digest, remote_digest))
    stream = DataChannelStream(pc.noise_channel)
    session = await noise.handshake(stream, identity, server, remote_peer,
                                    noise_prologue(client_digest, server_digest))
    # Done with channel 0 (FIN, then wait for the peer's FIN_ACK and FIN, all bounded).
    pc.spawn(_close_quietly(stream))
    return session


async def _close_quietly(stream: DataChannelStream) -> None:
    try:
        await stream.close()
    except Exception as e:  # noqa: BLE001 - the handshake channel's end does not matter
        log.debug("closing the noise channel: %r", e)


def build_connection(pc: DirectPeerConnection, muxer: DataChannelMuxer,
                     session: noise.SecureSession, *, direction: str, local_addr: Multiaddr,
                     remote_addr: Multiaddr) -> Connection:
    conn = Connection(
        muxer=muxer, remote_peer=session.remote_peer, remote_public_key=session.remote_public_key,
        local_addr=local_addr, remote_addr=remote_addr, direction=direction,
        transport=TRANSPORT_NAME, limited=False, security=SECURITY_PROTOCOL,
        muxer_protocol=MUXER_PROTOCOL,
    )
    return conn


def direct_addr(host: str, port: int, digest: bytes | None = None) -> Multiaddr:
    proto = "ip6" if ":" in host else "ip4"
    text = f"/{proto}/{host}/udp/{port}/webrtc-direct"
    if digest is not None:
        text += f"/certhash/{certhash(digest)}"
    return Multiaddr(text)
