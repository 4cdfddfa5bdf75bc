"""DTLS + SCTP + data channels for webrtc-direct, on aiortc's ORTC objects, fed from our own UDP.

Written against aiortc 1.16.0 (aioice 0.13.0); this is the only webrtc-direct module that
touches aiortc, and it uses internals, so re-check it when aiortc changes. Why not
RTCPeerConnection: it insists on an SDP offer/answer round, runs aioice with sockets of its own
(one port per connection, never 127.0.0.1) and always verifies the remote fingerprint from SDP.
A webrtc-direct server has no SDP from the client, must answer every client on ONE port and
must accept any client certificate. So we keep aiortc's DTLS (pyOpenSSL), SCTP and data channel
code and replace what is below and beside it:

- `DatagramLink` stands in for `RTCIceTransport` under `RTCDtlsTransport`. In aiortc 1.16 the
  DTLS transport only calls `transport._recv()` (raising ConnectionError once closed),
  `transport._send(data)` and reads `transport.role` (stats). Our ICE (ice.py) runs beside it
  on the same socket; the link just carries the non-STUN datagrams of one client.
- `DirectDtlsTransport(RTCDtlsTransport)`: the role is set explicitly (server = DTLS server),
  `_validate_peer_identity` is replaced (the server accepts any client certificate and records
  its SHA-256 for the Noise prologue; the client compares the server's with the certhash), and
  `_setup_srtp` does nothing (data channels only: no SRTP keys, and no failure when the peer
  offers no SRTP profile). `start()` still asserts a non-empty fingerprint list: we pass a
  placeholder that `_validate_peer_identity` ignores.
- `_SctpTransport(RTCSctpTransport)` tells us when the association closes (aiortc emits no
  event for that), never reuses stream id 0 (reserved for the Noise handshake channel: aiortc
  starts looking for a free id at `_data_channel_id`, so the DTLS client starts at 2), and
  drops packets quietly once DTLS is closed (`_send_chunk`). Delayed SACKs (every second
  packet) come from webrtc/engine.py's patch of RTCSctpTransport, which applies here too.
- Our UDP sockets get large kernel buffers (`tune_socket`): SCTP bursts overflowed the default.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiortc import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    State as DtlsState,
)
from aiortc.rtcsctptransport import Chunk, RTCSctpCapabilities, RTCSctpTransport
from cryptography.hazmat.primitives import serialization

from ..webrtc import aiortc_compat
from ..webrtc import engine_base
from ..webrtc.engine import DataChannel

log = logging.getLogger(__name__)

# The spec's `a=max-message-size:16384`: the most we send in one message (our framing never
# exceeds it: framing.MAX_ENCODED_SIZE).
MAX_MESSAGE_SIZE = 16384
SCTP_PORT = 5000
# Datagrams waiting for the DTLS reader of one connection; beyond this they are dropped, as a
# full socket buffer would (SCTP retransmits). ~1.5 MB at most per connection.
LINK_QUEUE = 1024
NOISE_CHANNEL_ID = 0
# Kernel buffer of our UDP sockets. SCTP on loopback or a fast LAN sends bursts far larger than
# the default (~208 KiB = ~90 datagrams of truesize); the overflow is dropped and recovered by
# retransmission at a fraction of the speed (measured: 5 MB/s with drops, see bench). Linux caps
# the request at net.core.rmem_max / wmem_max.
SOCKET_RCVBUF = 4 << 20
SOCKET_SNDBUF = 1 << 20


_T = TypeVar("_T")


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """Ask for large socket buffers (best effort: the kernel may give less)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for opt, size in ((socket.SO_RCVBUF, SOCKET_RCVBUF), (socket.SO_SNDBUF, SOCKET_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError as e:
            log.debug("cannot set socket buffer size: %s", e)


class DatagramLink:
    """One client's datagrams, between our UDP socket and aiortc's DTLS transport."""

    def __init__(self, sendto: Callable[[bytes], None], role: str, *,
                 max_queue: int = LINK_QUEUE) -> None:
        self.role = role  # ICE role: "controlling" (client) / "controlled" (lite server)
        self._sendto = sendto
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.loop = asyncio.get_running_loop()
        self.last_received = self.loop.time()
        self.received = 0
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def touch(self) -> None:
        self.last_received = self.loop.time()

    def feed(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_received = self.loop.time()
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self.received += 1
        self._queue.append(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _recv(self) -> bytes:
        while not self._queue:
            if self._closed:
                raise ConnectionError("webrtc-direct link closed")
            fut = self._waiter = self.loop.create_future()
            try:
                await fut
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def _send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError("webrtc-direct link closed")
        self._sendto(data)

    def mute(self) -> None:
        """Send nothing from now on (silently): see DirectPeerConnection.go_silent."""
        self._sendto = lambda data: None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class DirectDtlsTransport(RTCDtlsTransport):
    def __init__(self, link: DatagramLink, certificate: RTCCertificate, *, role: str,
                 expected_digest: bytes | None) -> None:
        super().__init__(link, [certificate])  # type: ignore[arg-type]
        self._set_role(role)
        self.expected_digest = expected_digest
        self.remote_digest: bytes | None = None
        self.failure: str | None = None

    def _validate_peer_identity(self, remoteParameters: RTCDtlsParameters) -> None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True) if self._ssl else None
        if cert is None:
            self.failure = "the peer sent no DTLS certificate"
            self._set_state(DtlsState.FAILED)
            return
        digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
        self.remote_digest = digest
        if self.expected_digest is not None and not hmac.compare_digest(digest, self.expected_digest):
            self.failure = ("the server's DTLS certificate does not match the certhash in its "
                            f"address (sha-256 {digest.hex()[:16]}..., expected "
                            f"{self.expected_digest.hex()[:16]}...)")
            self._set_state(DtlsState.FAILED)

    def _setup_srtp(self) -> None:
        pass  # data channels only


class _SctpTransport(RTCSctpTransport):
    on_closed: Callable[[], None] | None = None

    async def _send_chunk(self, chunk: Chunk) -> None:
        try:
            await super()._send_chunk(chunk)
        except ConnectionError:
            # DTLS is closed, so the connection is ending (its close path says why). aiortc
            # sends from fire-and-forget tasks (ensure_future), whose error would otherwise be
            # logged as "Task exception was never retrieved"; a packet for a dead link is lost.
            pass

    def _set_state(self, state: RTCSctpTransport.State) -> None:
        super()._set_state(state)
        if state == self.State.CLOSED and self.on_closed is not None:
            cb, self.on_closed = self.on_closed, None
            cb()


# A fingerprint `RTCDtlsTransport.start()` insists on; `_validate_peer_identity` ignores it.
_PLACEHOLDER = RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint("sha-256", "00")])


class DirectPeerConnection:
    """One webrtc-direct connection: what `DataChannelMuxer` drives (the same surface as
    `webrtc.engine.PeerConnection`: on_datachannel, on_state, create_channel, close)."""

    def __init__(self, link: DatagramLink, certificate: RTCCertificate, *, dtls_role: str,
                 expected_digest: bytes | None = None) -> None:
        self.link = link
        self.dtls = DirectDtlsTransport(link, certificate, role=dtls_role,
                                        expected_digest=expected_digest)
        self.sctp = _SctpTransport(self.dtls, port=SCTP_PORT)
        self.sctp.on_closed = lambda: self._set_state("closed")
        self.sctp.on("datachannel", self._datachannel)
        self.dtls.on("statechange", self._dtls_state)
        self.on_datachannel: Callable[[engine_base.DataChannel], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self.on_closed: list[Callable[[], None]] = []
        self.state = "new"
        self.close_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        # Registered now, before any datagram: the server starts Noise the moment the
        # association is up, and aiortc drops data for stream ids it does not know.
        self.noise_channel = DataChannel(RTCDataChannel(self.sctp, RTCDataChannelParameters(
            label="", negotiated=True, id=NOISE_CHANNEL_ID, ordered=True)))

    @property
    def connection_state(self) -> str:
        return self.state

    @property
    def remote_digest(self) -> bytes | None:
        return self.dtls.remote_digest

    def spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run a task that ends with this connection."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("webrtc-direct connection task failed: %r", task.exception())

    def go_silent(self) -> None:
        """Send nothing more and stop our own tasks (consent checks) without a word to the
        peer, as a process that vanished would: what the listener's idle timeout is for
        (tests use it)."""
        self.link.mute()
        for task in list(self._tasks):
            task.cancel()

    async def connect(self) -> None:
        """DTLS handshake, then SCTP association and the Noise channel open. Raises
        ConnectionError saying what failed; the caller bounds the time and closes us."""
        self.state = "connecting"
        await self.dtls.start(_PLACEHOLDER)
        if self.dtls.state != "connected":
            raise ConnectionError(self.dtls.failure or "DTLS handshake failed")
        await self.sctp.start(RTCSctpCapabilities(maxMessageSize=MAX_MESSAGE_SIZE), SCTP_PORT)
        aiortc_compat.skip_data_channel_id_zero(self.sctp)  # see module docstring
        if not await self.noise_channel.wait_open():
            raise ConnectionError("SCTP association failed before the Noise channel opened")
        self._set_state("connected")

    def _datachannel(self, channel: RTCDataChannel) -> None:
        ch = DataChannel(channel)
        if self.on_datachannel is not None and self.state != "closed":
            self.on_datachannel(ch)
        else:
            ch.close()

    def _dtls_state(self) -> None:
        if self.dtls.state in ("closed", "failed"):
            self._set_state("failed" if self.dtls.state == "failed" else "closed")

    def _set_state(self, state: str) -> None:
        if self.state == state or self.state in ("closed", "failed"):
            return
        self.state = state
        if state in ("closed", "failed"):
            if self.close_reason is None:
                self.close_reason = "DTLS failed" if state == "failed" else "closed by the peer"
            if self._closing is None:
                self._closing = asyncio.ensure_future(self._teardown())
        if self.on_state is not None:
            self.on_state(state)

    def create_channel(self, label: str = "") -> DataChannel:
        return DataChannel(RTCDataChannel(self.sctp, RTCDataChannelParameters(label=label, ordered=True)))

    async def close(self, reason: str = "closed locally") -> None:
        if self.close_reason is None:
            self.close_reason = reason
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._teardown())
            self._set_state("closed")
        await asyncio.shield(self._closing)

    async def _teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.sctp.stop()  # ABORT to the peer if the association is up
        except Exception as e:  # noqa: BLE001 - closing; the peer may be gone
            log.debug("stopping SCTP: %r", e)
        try:
            await self.dtls.stop()  # close_notify
        except Exception as e:  # noqa: BLE001
            log.debug("stopping DTLS: %r", e)
        self.link.close()
        callbacks, self.on_closed = self.on_closed, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001
                log.exception("webrtc-direct close callback failed")
