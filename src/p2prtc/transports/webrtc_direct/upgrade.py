"""From a DTLS+SCTP connection to a libp2p Connection: Noise on channel 0, then data channels.

specs webrtc-direct.md "Connection Security": channel id 0 (negotiated), the SERVER is the
Noise initiator (it can send first: DTLS 1.2's server sends the last handshake flight), the
prologue binds both DTLS certificates. Noise messages travel inside the usual stream framing
(webrtc/README.md). Once authenticated, channel 0 is closed and every stream is its own data
channel, exactly as on /webrtc (DataChannelStream, DataChannelMuxer).
"""

from __future__ import annotations

import asyncio
import logging

from ...connection import Connection
from ...identity import Identity, PeerId
from ...multiaddr import Multiaddr
from ...resources import ConnectionScope
from ...security import noise
from ..webrtc.engine_base import DataChannel
from ..webrtc.muxer import DataChannelMuxer
from ..webrtc.stream import DataChannelStream
from .certificate import certhash, noise_prologue
from .peer import DirectPeerConnection

log = logging.getLogger(__name__)

# How long a client's first stream waits for a sign that the server's connection is set up
# (see DirectMuxer); only servers that give no sign at all make a client wait this long.
SERVER_READY_GRACE = 0.5

TRANSPORT_NAME = "webrtc-direct"
MUXER_PROTOCOL = "/webrtc-direct"
SECURITY_PROTOCOL = "/noise"


class DirectMuxer(DataChannelMuxer):
    """The /webrtc data-channel muxer, plus two precautions.

    At most muxer.MAX_EARLY_CHANNELS channels wait for the connection to be handed to the host
    (as on /webrtc), so an unauthenticated client cannot make us hold thousands of channel
    objects for the length of a handshake.

    rust-libp2p's server (libp2p-webrtc 0.10) starts listening for data channels only after it
    has closed its end of the Noise channel, so a stream the client opens the moment its own
    Noise handshake ends is silently lost there. A client's first stream therefore waits until
    the server shows it is ready: its FIN on channel 0 (rust, us), a channel it opens (js and
    go open identify at once), or SERVER_READY_GRACE.
    """

    def __init__(self, pc: DirectPeerConnection, *, client: bool,
                 resources: ConnectionScope | None = None) -> None:
        super().__init__(pc, resources=resources)
        self.server_ready = asyncio.Event()
        if not client:
            self.server_ready.set()

    def _on_datachannel(self, channel: DataChannel) -> None:
        self.server_ready.set()
        super()._on_datachannel(channel)

    def _mark_closed(self, reason: str) -> None:
        self.server_ready.set()
        super()._mark_closed(reason)

    async def open_stream(self) -> DataChannelStream:
        if not self.server_ready.is_set():
            try:
                async with asyncio.timeout(SERVER_READY_GRACE):
                    await self.server_ready.wait()
            except TimeoutError:
                pass
            self.server_ready.set()
        return await super().open_stream()


async def authenticate(pc: DirectPeerConnection, identity: Identity, *, server: bool,
                       local_digest: bytes, remote_digest: bytes,
                       remote_peer: PeerId | None = None,
                       ready: asyncio.Event | None = None) -> noise.SecureSession:
    """Run Noise XX on the negotiated channel 0; raises HandshakeError on failure."""
    client_digest, server_digest = ((remote_digest, local_digest) if server
                                    else (local_digest, remote_digest))
    stream = DataChannelStream(pc.noise_channel)
    session = await noise.handshake(stream, identity, server, remote_peer,
                                    noise_prologue(client_digest, server_digest))
    if ready is not None:
        pc.spawn(_set_when(stream, ready))
    # Done with channel 0 (FIN, then wait for the peer's FIN_ACK and FIN, all bounded).
    pc.spawn(_close_quietly(stream))
    return session


async def _set_when(stream: DataChannelStream, target: asyncio.Event) -> None:
    await stream.wait_remote_finished()
    target.set()


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
