"""Dialing `/ip4/../udp/../webrtc-direct/certhash/../p2p/..` (the spec's client, A).

A fresh UDP socket and a fresh certificate per connection (the spec asks clients not to reuse
certificates); ufrag = pwd = `libp2p+webrtc+v1/<random>`; ICE checks with USE-CANDIDATE to the
server's one address until it answers; DTLS as client, accepting only the certificate whose
SHA-256 is the certhash; Noise as responder with the server's peer id checked; then data
channels. After that the checks go on every few seconds as keepalive and consent (RFC 7675).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from ...connection import Connection
from ...errors import DialError, HandshakeError, P2PError
from ...identity import Identity, PeerId
from ...multiaddr import Multiaddr
from ...resources import ConnectionScope, Refusal, ResourceLimitExceeded, ResourceManager
from . import stun
from .certificate import digest_from_certhash, ephemeral_certificate
from .ice import IceChecker
from .peer import DatagramLink, DirectPeerConnection, tune_socket
from .upgrade import DirectMuxer, authenticate, build_connection, direct_addr

log = logging.getLogger(__name__)

# ICE: retransmit checks from this interval, doubling up to the cap (RFC 8445 / 8489 style).
CHECK_RTO_INITIAL = 0.025
CHECK_RTO_MAX = 1.6
ICE_TIMEOUT = 10.0
# Below the Host's own dial deadline (20 s), so our message says which stage failed.
DIAL_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 2.5
CONSENT_TIMEOUT = 30.0


def parse_direct_addr(addr: Multiaddr) -> tuple[str, int, list[bytes], PeerId | None]:
    """(ip, port, certificate digests, peer) of a webrtc-direct address; raises DialError."""
    comps = addr.components()
    names = [n for n, _ in comps]
    if (len(names) < 3 or names[0] not in ("ip4", "ip6") or names[1] != "udp"
            or names[2] != "webrtc-direct"):
        raise DialError(f"not a webrtc-direct address: {addr}")
    digests: list[bytes] = []
    peer = None
    for name, value in comps[3:]:
        if name == "certhash":
            try:
                digests.append(digest_from_certhash(value or ""))
            except P2PError as e:
                raise DialError(str(e)) from None
        elif name == "p2p" and peer is None:
            peer = addr.peer_id()
        else:
            raise DialError(f"unexpected /{name} in webrtc-direct address {addr}")
    if not digests:
        raise DialError(f"{addr} has no /certhash: cannot authenticate the server's DTLS")
    ip, port = comps[0][1], comps[1][1]
    if ip is None or port is None:  # (the codec gives ip4/ip6/udp a value)
        raise DialError(f"not a webrtc-direct address: {addr}")
    return ip, int(port), digests, peer


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.on_datagram: Callable[[bytes], None] | None = None
        self.error: Exception | None = None
        self.failed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.on_datagram is not None:
            try:
                self.on_datagram(data)
            except Exception:  # noqa: BLE001
                log.exception("webrtc-direct: handling a datagram failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected UDP socket: nobody listens there.
        self.error = exc
        self.failed.set()


async def dial(addr: Multiaddr, identity: Identity, version: int = 1, *,
               resources: ResourceManager | None = None) -> Connection:
    """`version`: the webrtc-direct handshake, 1 or 2 (ice.py; go dials v1 by default too).
    `resources`: the host's budgets (p2prtc.resources), reserved as the upgrader does: a
    transient connection, moved to the peer's scope once Noise names it."""
    if version not in (1, 2):
        raise DialError(f"unknown webrtc-direct version {version} (1 or 2)")
    ip, port, digests, peer = parse_direct_addr(addr)
    scope = resources.open_connection("outbound") if resources is not None else None
    if isinstance(scope, Refusal):
        raise DialError(f"webrtc-direct dial to {ip}:{port} refused: {scope.reason}")
    try:
        return await _dial(ip, port, digests, peer, identity, version, scope)
    finally:
        if scope is not None and scope.peer is None:  # failed before Noise named the peer
            scope.close()


async def _dial(ip: str, port: int, digests: list[bytes], peer: PeerId | None,
                identity: Identity, version: int, scope: ConnectionScope | None) -> Connection:
    # rust/go/js advertise one certhash; several would mean "any of these" (rotation).
    expected = digests[0]
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _ClientProtocol, remote_addr=(ip, port), family=family)
    except OSError as e:
        raise DialError(f"cannot reach {ip}:{port}/udp: {e.strerror or e}") from None
    tune_socket(transport)
    checker = IceChecker.v2((ip, port)) if version == 2 else IceChecker.v1((ip, port))
    link = DatagramLink(transport.sendto, role="controlling")
    checked = asyncio.Event()

    def on_datagram(data: bytes) -> None:
        if stun.looks_like_stun(data):
            reply = checker.handle_stun(data, loop.time())
            if reply is not None:
                transport.sendto(reply)
            if checker.succeeded:
                checked.set()
                link.touch()
            return
        link.feed(data)

    proto.on_datagram = on_datagram
    cert = ephemeral_certificate()
    pc = DirectPeerConnection(link, cert.rtc_certificate(), dtls_role="client",
                              expected_digest=expected)
    pc.on_closed.append(transport.close)
    if scope is not None:
        pc.on_closed.append(scope.close)
    muxer = DirectMuxer(pc, client=True, resources=scope)
    stage = "ICE"
    t0 = loop.time()
    stamps: dict[str, float] = {}
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            await _check(checker, transport, proto, checked, ip, port)
            stamps["ice_ms"] = loop.time()
            pc.spawn(_keepalive(checker, transport, pc))
            stage = "DTLS"
            await pc.connect()  # DTLS, then SCTP and the Noise channel
            stamps["dtls_sctp_ms"] = loop.time()
            stage = "Noise"
            secure = await authenticate(pc, identity, server=False, local_digest=cert.digest,
                                        remote_digest=expected, remote_peer=peer,
                                        ready=muxer.server_ready)
            if scope is not None:  # the peer's budget decides, before any stream
                refusal = scope.set_peer(secure.remote_peer)
                if refusal is not None:
                    raise ResourceLimitExceeded(refusal)
    except TimeoutError:
        await pc.close(f"{stage} timed out")
        raise DialError(f"webrtc-direct dial to {ip}:{port} timed out during {stage}") from None
    except (ConnectionError, HandshakeError, P2PError, OSError) as e:
        await pc.close(f"{stage} failed: {e}")
        if isinstance(e, DialError):
            raise
        raise DialError(f"webrtc-direct dial to {ip}:{port} failed during {stage}: "
                        f"{e or type(e).__name__}") from None
    except BaseException:
        await pc.close("dial cancelled")
        raise
    sockname = transport.get_extra_info("sockname")
    local = direct_addr(sockname[0], sockname[1], cert.digest)
    conn = build_connection(pc, muxer, secure, direction="outbound", local_addr=local,
                            remote_addr=direct_addr(ip, port, expected).with_peer_id(secure.remote_peer))
    stamps["noise_ms"] = loop.time()
    conn.details.ufrag = checker.ufrag
    conn.details.webrtc_direct_version = version
    prev = t0
    for name, t in stamps.items():  # time spent in each stage
        conn.details.timings[name] = round((t - prev) * 1000, 1)
        prev = t
    return conn


async def _check(checker: IceChecker, transport: asyncio.DatagramTransport, proto: _ClientProtocol,
                 checked: asyncio.Event,
                 ip: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ICE_TIMEOUT
    rto = CHECK_RTO_INITIAL
    while not checked.is_set():
        if proto.failed.is_set():
            raise DialError(f"nothing listens on {ip}:{port}/udp ({proto.error})")
        left = deadline - loop.time()
        if left <= 0:
            raise DialError(f"no answer to ICE checks from {ip}:{port}/udp within "
                            f"{ICE_TIMEOUT:.0f} s (no webrtc-direct listener there?)")
        transport.sendto(checker.request(loop.time()))
        waiters = [asyncio.ensure_future(checked.wait()), asyncio.ensure_future(proto.failed.wait())]
        try:
            await asyncio.wait(waiters, timeout=min(rto, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        rto = min(rto * 2, CHECK_RTO_MAX)


async def _keepalive(checker: IceChecker, transport: asyncio.DatagramTransport,
                     pc: DirectPeerConnection) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(KEEPALIVE_INTERVAL)
        last = checker.last_success or 0.0
        if loop.time() - last > CONSENT_TIMEOUT:
            log.info("webrtc-direct: no answer to consent checks for %.0f s; closing",
                     CONSENT_TIMEOUT)
            await pc.close(f"peer unreachable: no answer to ICE consent checks for "
                           f"{CONSENT_TIMEOUT:.0f} s")
            return
        if not transport.is_closing():
            transport.sendto(checker.request(loop.time()))
