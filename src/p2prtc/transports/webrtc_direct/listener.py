"""The webrtc-direct listener: one UDP socket, every client on it.

Per datagram: STUN goes to the ICE-lite agent (which knows clients by ufrag and answers their
checks); anything else belongs to the client whose checks came from that source address, or
is dropped. Only a client's first DTLS ClientHello makes us build its DTLS/SCTP stack (tens of
KB), so a flood of checks costs table entries of a few hundred bytes, capped and expiring.

Budgets (each a constant below): ICE sessions (ice.py), concurrent handshakes in total and
per source IP, established connections, the time a handshake may take (DTLS + SCTP + Noise),
and how long a connection may stay silent (browsers send consent checks every ~5 s, rust and
go every 2 s, we every 2.5 s) before it is considered gone. With the host's budgets
(`resources`, p2prtc.resources) a client's ClientHello takes a transient connection (per-IP
handshakes included; refused: the ClientHello is dropped, as when the caps above are full), moved
to the peer's scope once Noise names it (refused: the connection is closed with the reason).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...connection import Connection
from ...errors import HandshakeError, P2PError
from ...identity import Identity
from ...multiaddr import Multiaddr
from ...resources import ConnectionScope, Refusal, ResourceManager
from ...netutil import bind_udp, expand_unspecified
from ..base import Listener
from . import stun
from .certificate import DtlsCertificate
from .ice import IceLiteAgent, IceSession, normalize_addr, ufrag_version
from .peer import DatagramLink, DirectPeerConnection, tune_socket
from .upgrade import DirectMuxer, authenticate, build_connection, direct_addr

log = logging.getLogger(__name__)

MAX_HANDSHAKES = 128
MAX_HANDSHAKES_PER_IP = 32
MAX_CONNECTIONS = 1024
# DTLS + SCTP + Noise, from the first ClientHello (js and rust give a dial 10-30 s overall).
UPGRADE_TIMEOUT = 15.0
# We (the server) send the first Noise message (specs webrtc-direct.md); it leaves right behind
# our SCTP COOKIE-ACK. rust-libp2p's dialer (libp2p-webrtc 0.10.0-alpha, webrtc-rs) opens its
# negotiated channel 0 a few ms after its association is up; a message on stream 0 before that
# makes webrtc-rs take the stream as an incoming channel, its own open fails ("there already
# exists a stream with identifier") and the dial times out. Measured in the netns at load ~2:
# 3 of 84 rust dials failed without this wait, 0 of 120 with 30 ms. (js, Chromium, go and we
# create channel 0 before connecting.)
NOISE_START_DELAY = 0.03
# RFC 7675 consent: 30 s without a word from the peer and it is gone.
IDLE_TIMEOUT = 30.0
SWEEP_INTERVAL = 1.0
# Rate-limited logging of dropped datagrams and failed clients: first of a kind at once, then
# at most one summary line per kind per interval.
LOG_INTERVAL = 10.0


class _LogThrottle:
    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        if len(self._last) > 256:
            self._last.clear()
        self._last[kind] = now
        n = self._suppressed.pop(kind, 0)
        suffix = f" (and {n} more like it in the last {self.interval:.0f} s)" if n else ""
        log.log(level, msg + suffix, *args)


@dataclass
class _Client:
    """A client past ICE: its DTLS/SCTP stack and, once authenticated, its Connection."""

    session: IceSession
    link: DatagramLink
    pc: DirectPeerConnection
    ip: str
    started: float
    connection: Connection | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    scope: ConnectionScope | None = field(default=None, repr=False)  # its budget


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: WebRTCDirectListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self.listener._on_datagram(data, addr)
        except Exception:  # noqa: BLE001 - one bad datagram must not stop the socket
            log.exception("webrtc-direct: handling a datagram from %s failed", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("webrtc-direct socket error: %s", exc)


class WebRTCDirectListener(Listener):
    def __init__(self, ip: str, port: int, identity: Identity, certificate: DtlsCertificate,
                 on_connection: Callable[[Connection], Awaitable[None]], *,
                 agent: IceLiteAgent | None = None,
                 resources: ResourceManager | None = None) -> None:
        self.resources = resources
        self.ip = ip
        self.port = port
        self.identity = identity
        self.certificate = certificate
        self._rtc_certificate = certificate.rtc_certificate()
        self.on_connection = on_connection
        self.agent = agent or IceLiteAgent()
        self.handshakes: dict[IceSession, _Client] = {}
        self.connections: dict[IceSession, _Client] = {}
        self._handshakes_per_ip: dict[str, int] = {}
        self.stats: dict[str, int] = {}
        self._throttle = _LogThrottle()
        self._transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.addrs: list[Multiaddr] = []
        # Called with each client whose ClientHello was let in (tests follow its lifetime).
        self.on_new_client: Callable[[_Client], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=bind_udp(self.ip, self.port))
        tune_socket(self._transport)
        sockname = self._transport.get_extra_info("sockname")
        self.port = sockname[1]
        self.addrs = [direct_addr(ip, self.port, self.certificate.digest)
                      for ip in expand_unspecified(sockname[0])]
        self._sweeper = asyncio.ensure_future(self._sweep())
        log.info("webrtc-direct listening on %s:%d/udp (certhash %s)", self.ip, self.port,
                 self.certificate.certhash)

    # -- datagrams -------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _on_datagram(self, data: bytes, source: tuple[str | Any, int]) -> None:
        if self._closed:
            return
        addr = normalize_addr(source)
        now = asyncio.get_running_loop().time()
        if stun.looks_like_stun(data):
            result = self.agent.handle_stun(data, addr, now)
            if result.dropped is not None:
                self._count("stun_dropped")
                self._throttle.log(logging.INFO, "stun:" + result.dropped.split(" from ")[0],
                                   "webrtc-direct: dropped STUN from %s:%d: %s", addr[0], addr[1],
                                   result.dropped)
                return
            if result.new and result.session is not None:
                log.debug("webrtc-direct: new ICE session %s from %s:%d",
                          result.session.ufrag, addr[0], addr[1])
            if result.reply is not None:
                self._sendto(result.reply, addr)
            client = result.session.connection if result.session is not None else None
            if client is not None:
                client.link.touch()
            return
        session = self.agent.session_for(addr)
        if session is None:
            self._count("unknown_address")
            self._throttle.log(logging.INFO, "unknown-address",
                               "webrtc-direct: dropped a %d-byte datagram from %s:%d, which has "
                               "sent no valid ICE check", len(data), addr[0], addr[1])
            return
        client = session.connection
        if client is None:
            client = self._new_client(session, data, addr)
            if client is None:
                return
        client.link.feed(data)

    def _new_client(self, session: IceSession, data: bytes, addr: tuple[str, int]) -> _Client | None:
        # A DTLS handshake record (22) holding a ClientHello (1) is the only way in.
        if len(data) < 14 or data[0] != 22 or data[13] != 1:
            self._count("not_client_hello")
            self._throttle.log(logging.INFO, "not-client-hello",
                               "webrtc-direct: dropped a datagram from %s:%d: expected a DTLS "
                               "ClientHello after the ICE checks", addr[0], addr[1])
            return None
        ip = addr[0]
        if len(self.handshakes) >= MAX_HANDSHAKES:
            self._count("handshakes_full")
            self._throttle.log(logging.WARNING, "handshakes-full",
                               "webrtc-direct: %d handshakes in progress; dropping a ClientHello "
                               "from %s (the client will retransmit)", MAX_HANDSHAKES, ip)
            return None
        if self._handshakes_per_ip.get(ip, 0) >= MAX_HANDSHAKES_PER_IP:
            self._count("handshakes_per_ip_full")
            self._throttle.log(logging.WARNING, "handshakes-ip-full:" + ip,
                               "webrtc-direct: %d handshakes in progress from %s; dropping its "
                               "ClientHello", MAX_HANDSHAKES_PER_IP, ip)
            return None
        if len(self.connections) >= MAX_CONNECTIONS:
            self._count("connections_full")
            self._throttle.log(logging.WARNING, "connections-full",
                               "webrtc-direct: %d connections open; refusing %s",
                               MAX_CONNECTIONS, ip)
            return None
        scope = None
        if self.resources is not None:
            reserved = self.resources.open_connection("inbound", ip)
            if isinstance(reserved, Refusal):
                self._count("budget_refused")
                line = self.resources.log_line(
                    f"webrtc-direct: ClientHello from {ip} dropped", reserved)
                if line is not None:
                    log.info("%s", line)
                return None
            scope = reserved
        link = DatagramLink(lambda d: self._sendto(d, session.addr), role="controlled")
        pc = DirectPeerConnection(link, self._rtc_certificate, dtls_role="server")
        client = _Client(session, link, pc, ip, link.loop.time(), scope=scope)
        if scope is not None:
            pc.on_closed.append(scope.close)
        session.connection = client
        self.handshakes[session] = client
        self._handshakes_per_ip[ip] = self._handshakes_per_ip.get(ip, 0) + 1
        pc.on_closed.append(lambda: self._forget(client))
        client.task = asyncio.ensure_future(self._serve(client))
        if self.on_new_client is not None:
            self.on_new_client(client)
        return client

    # -- one client ------------------------------------------------------------------------

    async def _serve(self, client: _Client) -> None:
        pc = client.pc
        addr = client.session.addr
        # takes the peer's channels from the first moment
        muxer = DirectMuxer(pc, client=False, resources=client.scope)
        stage = "DTLS"
        try:
            async with asyncio.timeout(UPGRADE_TIMEOUT):
                await pc.connect()
                stage = "Noise"
                await asyncio.sleep(NOISE_START_DELAY)  # a pace for webrtc-rs, see above
                remote_digest = pc.remote_digest
                if remote_digest is None:  # connect() returns only once DTLS verified it
                    raise HandshakeError("the client's DTLS certificate is unknown")
                secure = await authenticate(pc, self.identity, server=True,
                                            local_digest=self.certificate.digest,
                                            remote_digest=remote_digest)
        except TimeoutError:
            await self._failed(client, stage, f"timed out after {UPGRADE_TIMEOUT:.0f} s")
            return
        except (ConnectionError, HandshakeError, P2PError, OSError) as e:
            await self._failed(client, stage, str(e) or type(e).__name__)
            return
        except asyncio.CancelledError:
            await pc.close("listener closed")
            raise
        except Exception as e:  # noqa: BLE001 - aiortc internals may raise anything
            log.debug("webrtc-direct handshake error", exc_info=True)
            await self._failed(client, stage, f"internal error: {e!r}")
            return
        refusal = client.scope.set_peer(secure.remote_peer) if client.scope is not None else None
        if refusal is not None:  # the peer's budget decides, before any stream
            self._count("budget_refused")
            assert self.resources is not None
            line = self.resources.log_line(
                f"webrtc-direct: connection of {secure.remote_peer.short()} from {addr[0]} "
                "refused", refusal)
            if line is not None:
                log.info("%s", line)
            await pc.close(f"refused: {refusal.reason}")
            return
        remote = direct_addr(addr[0], addr[1], pc.remote_digest).with_peer_id(secure.remote_peer)
        local = direct_addr(self.ip, self.port, self.certificate.digest)
        conn = build_connection(pc, muxer, secure, direction="inbound", local_addr=local,
                                remote_addr=remote)
        conn.details.ufrag = client.session.ufrag
        conn.details.webrtc_direct_version = ufrag_version(client.session.ufrag)
        conn.details.timings["handshake_ms"] = round(
            (pc.link.loop.time() - client.started) * 1000, 1)
        self._handshake_done(client)
        if pc.state in ("closed", "failed"):
            return
        client.connection = conn
        self.connections[client.session] = client
        self._count("connections")
        log.info("webrtc-direct: %s connected from %s:%d", secure.remote_peer.short(),
                 addr[0], addr[1])
        await self.on_connection(conn)

    async def _failed(self, client: _Client, stage: str, reason: str) -> None:
        self._count(f"failed_{stage.lower()}")
        self._throttle.log(logging.INFO, f"failed:{stage}",
                           "webrtc-direct: client %s:%d failed the %s handshake: %s",
                           client.session.addr[0], client.session.addr[1], stage, reason)
        await client.pc.close(f"{stage} handshake failed: {reason}")

    def _handshake_done(self, client: _Client) -> None:
        if self.handshakes.pop(client.session, None) is not None:
            n = self._handshakes_per_ip.get(client.ip, 0) - 1
            if n > 0:
                self._handshakes_per_ip[client.ip] = n
            else:
                self._handshakes_per_ip.pop(client.ip, None)

    def _forget(self, client: _Client) -> None:
        self._handshake_done(client)
        self.connections.pop(client.session, None)
        self.agent.remove(client.session)

    # -- housekeeping ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            self.agent.expire(now)
            for client in list(self.handshakes.values()) + list(self.connections.values()):
                if now - client.link.last_received > IDLE_TIMEOUT and client.pc.state != "closed":
                    self._count("idle_closed")
                    log.info("webrtc-direct: nothing from %s:%d for %.0f s; closing",
                             client.session.addr[0], client.session.addr[1], IDLE_TIMEOUT)
                    task = asyncio.ensure_future(
                        client.pc.close(f"nothing received for {IDLE_TIMEOUT:.0f} s"))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        clients = list(self.handshakes.values()) + list(self.connections.values())
        for c in clients:
            if c.task is not None and not c.task.done():
                c.task.cancel()
        await asyncio.gather(*(c.pc.close("listener closed") for c in clients),
                             return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
