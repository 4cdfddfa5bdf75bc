"""The asyncio side of the relay's TURN server: sockets around the sans-I/O core (`relay/turn.py`).

- UDP: by default TURN shares the STUN server's primary socket (3478, as coturn does; one port to
  open in a firewall, and `turn:HOST` without a port means 3478): Binding requests stay with the
  STUN responder, everything else comes here (`StunServer.share_primary`). With a `port` of its
  own, TURN binds its own UDP socket (which also answers Binding requests).
- TCP (RFC 8656 3.1, for networks that block UDP): its own listener, by default on the same port
  number as TURN's UDP port; one allocation per connection, ended when the connection ends.
- Relayed sockets: one UDP socket per allocation on the relay's IP, in [min_port, max_port].
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass, field

from ..netutil import bind_udp
from ..protocols.stun import StunServer
from ..transports.webrtc_direct.stun import StunError
from .turn import (Addr, CloseRelay, FiveTuple, OpenRelay, StreamFramer, ToClient, ToPeer,
                   TurnLimits, TurnServer, TurnStats)

log = logging.getLogger(__name__)
_now = time.time

# coturn's defaults for the relayed port range (--min-port / --max-port).
MIN_RELAY_PORT = 49152
MAX_RELAY_PORT = 65535
# Random ports tried before scanning the whole range in order (the range is mostly free).
RANDOM_PORT_TRIES = 32
# Ours: TCP connections at once; a TCP client gets one allocation per connection.
MAX_TCP_CONNECTIONS = 1024
# Ours: a TCP connection with no allocation after this long is closed (nothing to keep it for).
TCP_ALLOCATE_TIMEOUT = 30.0
# Bytes waiting to go to a slow TCP client beyond which relayed datagrams for it are dropped
# (UDP semantics: TURN relays datagrams, it does not queue them).
TCP_MAX_BUFFERED = 256 * 1024
# Ours: UDP 5-tuples remembered (one per client address; a flood of new ones just clears it).
MAX_CACHED_FIVE_TUPLES = 4096
# How often allocations, permissions and channels are aged.
EXPIRE_INTERVAL = 1.0
# Receive and send buffer of the sockets clients reach TURN on: coturn's UR_SERVER_SOCK_BUF_SIZE
# (65536 * 32 = 2 MiB, set on its UDP listeners). About 1,700 datagrams of 1,200 bytes wait there
# while the event loop is busy or descheduled; the kernel default (net.core.rmem_default, 208 KiB)
# holds ~90, which a loaded relay overruns at 10-20 MB/s. The kernel caps it at rmem_max/wmem_max.
SOCKET_BUFFER = 65536 * 32


@dataclass
class TurnConfig:
    secret: str
    realm: str
    limits: TurnLimits = field(default_factory=TurnLimits)
    relay_ip: str = "0.0.0.0"          # where relayed sockets are bound
    public_ip: str | None = None       # the relayed address's IP as peers see it (--announce)
    min_port: int = MIN_RELAY_PORT
    max_port: int = MAX_RELAY_PORT


class _RelayedProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: "TurnService", allocation: int) -> None:
        self.service = service
        self.allocation = allocation

    def datagram_received(self, data: bytes, addr) -> None:
        self.service.guarded(self.service.core.peer_datagram, self.allocation, data,
                             (addr[0], addr[1]), time.time())

    def error_received(self, exc: Exception) -> None:
        log.debug("TURN relayed socket error: %s", exc)


class _UdpProtocol(asyncio.DatagramProtocol):
    """TURN's own UDP socket (when it does not share STUN's)."""

    def __init__(self, service: "TurnService", local: Addr) -> None:
        self.service = service
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        server = self.local
        if ipaddress.ip_address(server[0]).is_unspecified:
            server = (_local_ip_for(addr[0]) or server[0], server[1])
        self.service.udp_datagram(data, (addr[0], addr[1]), server, self._send)

    def _send(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("TURN socket error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, service: "TurnService") -> None:
        self.service = service
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.five: FiveTuple | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if len(self.service.tcp_clients) >= MAX_TCP_CONNECTIONS:
            log.info("TURN over TCP: %d connections, refusing %s", MAX_TCP_CONNECTIONS, peer[0])
            self.service.core.stats.refusals["tcp-connections"] += 1
            transport.abort()
            return
        self.five = FiveTuple("tcp", (peer[0], peer[1]), (local[0], local[1]))
        self.service.tcp_clients[self.five] = self
        self.arm_idle_timer()

    def arm_idle_timer(self) -> None:
        """Close the connection unless it has an allocation TCP_ALLOCATE_TIMEOUT from now (at
        the start, and when its allocation ends: expired, deleted)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(TCP_ALLOCATE_TIMEOUT, self._idle)

    def _idle(self) -> None:
        if self.five is not None and not self.service.core.has_allocation(self.five):
            log.debug("TURN over TCP: %s made no allocation, closing", self.five.client[0])
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.five is None:
            return
        try:
            frames = self.framer.feed(data)
        except StunError as e:
            log.info("TURN over TCP from %s: %s; closing", self.five.client[0], e)
            self.service.core.stats.refusals["garbage"] += 1
            self.close()
            return
        now = time.time()
        for frame in frames:
            self.service.guarded(self.service.core.client_datagram, frame, self.five, now)

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() > TCP_MAX_BUFFERED:
            self.service.core.stats.refusals["tcp-backlog"] += 1
            return
        t.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.five is not None and self.service.tcp_clients.pop(self.five, None) is self:
            self.service.dispatch(self.service.core.client_closed(self.five))


class TurnService:
    """One TURN core and all its sockets."""

    def __init__(self, config: TurnConfig, stats: TurnStats | None = None) -> None:
        self.config = config
        allow_loopback = ipaddress.ip_address(config.relay_ip).is_loopback
        self.core = TurnServer(config.secret, config.realm, config.limits, stats,
                               allow_loopback_peers=allow_loopback)
        self.relayed: dict[int, asyncio.DatagramTransport] = {}
        self.ports_in_use: set[int] = set()
        self.tcp_clients: dict[FiveTuple, _TcpProtocol] = {}
        self.udp_addresses: list[Addr] = []   # where TURN/UDP is served
        self.tcp_addresses: list[Addr] = []
        self._udp_senders: dict[Addr, object] = {}
        self._udp_fives: dict[tuple[Addr, Addr], FiveTuple] = {}
        self._udp_transports: list[asyncio.DatagramTransport] = []
        self._tcp_servers: list[asyncio.AbstractServer] = []
        self._expiry: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # -- listening -------------------------------------------------------------------------------

    def share(self, stun: StunServer) -> None:
        """Serve TURN on the STUN server's primary socket."""
        stun.share_primary(functools.partial(self.udp_datagram, send=stun.send))  # no frame
        primary = stun.transports.get((0, 0))
        if primary is not None:
            _enlarge_buffers(primary.get_extra_info("socket"))
        self.udp_addresses.append(stun.addresses[(0, 0)])
        self._start_expiry()

    async def listen_udp(self, host: str, port: int) -> Addr:
        sock = bind_udp(host, port)
        _enlarge_buffers(sock)
        local = sock.getsockname()[:2]
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _UdpProtocol(self, local), sock=sock)
        self._udp_transports.append(transport)
        self.udp_addresses.append(local)
        self._start_expiry()
        return local

    async def listen_tcp(self, host: str, port: int) -> Addr:
        server = await asyncio.get_running_loop().create_server(
            lambda: _TcpProtocol(self), host, port, reuse_address=True)
        self._tcp_servers.append(server)
        local = server.sockets[0].getsockname()[:2]
        self.tcp_addresses.append(local)
        self._start_expiry()
        return local

    def _start_expiry(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire_loop())

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)  # a timer, not synchronisation
            self.dispatch(self.core.expire(time.time()))

    # -- datagrams in and actions out ------------------------------------------------------------

    def udp_datagram(self, data: bytes, client: Addr, server: Addr, send) -> None:
        five = self._udp_fives.get((client, server))
        if five is None:  # making a NamedTuple costs ~1 us; looking one up ~0.2 us
            if len(self._udp_fives) >= MAX_CACHED_FIVE_TUPLES:
                self._udp_fives.clear()
            five = self._udp_fives[(client, server)] = FiveTuple("udp", client, server)
            self._udp_senders.setdefault(server, send)
        try:  # guarded(), inlined: this is the per-datagram path
            self.dispatch(self.core.client_datagram(data, five, _now()))
        except Exception:
            log.exception("TURN: internal error on a datagram (dropped)")
            self.core.stats.refusals["internal-error"] += 1

    def guarded(self, step, *args) -> None:
        """Run a core step and its actions. The core never raises on network input (fuzzed in
        tests/unit/test_turn.py); should a bug slip through, it costs one datagram, not the
        socket (asyncio closes a transport whose protocol raises), which STUN shares."""
        try:
            self.dispatch(step(*args))
        except Exception:
            log.exception("TURN: internal error on a datagram (dropped)")
            self.core.stats.refusals["internal-error"] += 1

    def dispatch(self, actions) -> None:
        for a in actions:
            kind = type(a)
            if kind is ToPeer:
                t = self.relayed.get(a.allocation)
                if t is not None and not t.is_closing():
                    t.sendto(a.data, a.peer)
            elif kind is ToClient:
                if a.five.transport == "udp":
                    send = self._udp_senders.get(a.five.server)
                    if send is not None:
                        send(a.data, a.five.client)
                else:
                    conn = self.tcp_clients.get(a.five)
                    if conn is not None:
                        conn.send(a.data)
            elif kind is OpenRelay:
                task = asyncio.get_running_loop().create_task(self._open_relay(a))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind is CloseRelay:
                t = self.relayed.pop(a.allocation, None)
                if t is not None:
                    self.ports_in_use.discard(t.get_extra_info("sockname")[1])
                    t.close()
                conn = self.tcp_clients.get(a.five) if a.five.transport == "tcp" else None
                if conn is not None:
                    conn.arm_idle_timer()

    async def _open_relay(self, a: OpenRelay) -> None:
        sock = None if self._closed else self._bind_relay_port()
        if sock is None:
            if not self._closed:
                log.warning("TURN: no free relay port in %d-%d", self.config.min_port,
                            self.config.max_port)
            self.dispatch(self.core.relay_failed(a.allocation, time.time()))
            return
        port = sock.getsockname()[1]
        self.ports_in_use.add(port)
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _RelayedProtocol(self, a.allocation), sock=sock)
        except OSError as e:
            sock.close()
            self.ports_in_use.discard(port)
            log.warning("TURN: relayed socket on port %d: %s", port, e)
            self.dispatch(self.core.relay_failed(a.allocation, time.time()))
            return
        if self._closed or not self.core.has_allocation_id(a.allocation):
            transport.close()  # the allocation ended while its socket was being opened
            self.ports_in_use.discard(port)
            return
        self.relayed[a.allocation] = transport
        ip = self.config.public_ip or self.config.relay_ip
        if ipaddress.ip_address(ip).is_unspecified:
            ip = a.server[0]
        self.dispatch(self.core.relay_opened(a.allocation, (ip, port), time.time()))

    def _bind_relay_port(self) -> socket.socket | None:
        lo, hi = self.config.min_port, self.config.max_port
        tries = [random.randint(lo, hi) for _ in range(RANDOM_PORT_TRIES)]
        for port in [*tries, *range(lo, hi + 1)]:
            if port in self.ports_in_use:
                continue
            try:
                sock = bind_udp(self.config.relay_ip, port)
            except OSError:
                continue
            sock.setblocking(False)
            return sock
        return None

    def close(self) -> None:
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        for t in self.relayed.values():
            t.close()
        self.relayed.clear()
        for conn in list(self.tcp_clients.values()):
            conn.close()
        for t in self._udp_transports:
            t.close()
        for s in self._tcp_servers:
            s.close()


def _enlarge_buffers(sock) -> None:
    """SOCKET_BUFFER for receiving and sending (never less than the kernel's default: it caps
    the value at rmem_max/wmem_max, then doubles it)."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError as e:
            log.debug("TURN socket buffer: %s", e)


def _local_ip_for(client_ip: str) -> str | None:
    """The address the kernel answers `client_ip` from (connecting a UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in client_ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((client_ip, 9))
            return s.getsockname()[0]
    except OSError:
        return None
