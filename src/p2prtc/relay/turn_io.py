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
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
from binascii import crc32
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ..netutil import bind_udp, expand_unspecified, is_loopback
from ..protocols.stun import PRIMARY, StunServer
from ..transports.webrtc_direct import stun as codec
from ..transports.webrtc_direct.stun import StunError
from .turn import (Action, Addr, Allocation, CloseRelay, FiveTuple, OpenRelay, StreamFramer,
                   ToClient, ToPeer, TurnLimits, TurnServer, TurnStats)
from .udp_batch import HEADROOM, SLOT, Batcher, Dest, Key

log = logging.getLogger(__name__)
_now = time.time
_CHANNEL_HEAD = codec.CHANNEL_HEADER
_SLOT = SLOT
_PAYLOAD = HEADROOM + 4  # where a ChannelData payload starts in a receive slot
_SEND_INDICATION = codec.message_type(codec.METHOD_SEND, codec.CLASS_INDICATION)
# A Send indication as browsers and aioice write it: XOR-PEER-ADDRESS (IPv4), then DATA (then,
# optionally, FINGERPRINT): type, length, cookie, txid, the two attribute headers, the address.
_SEND_HEAD = struct.Struct(">HHI12xHH8sHH")
_SEND_DATA = 36  # where its DATA value starts
_FINGERPRINT = struct.Struct(">HHI")

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
# Ours: fast-path routes a socket remembers (per client address and channel, or per peer address,
# positive or not); a flood of new addresses just clears the table.
MAX_ROUTES = 4096
# Ours: client IP -> the local IP that answers it, for sockets bound to 0.0.0.0 / ::.
MAX_LOCAL_IPS = 1024
# How often allocations, permissions and channels are aged.
EXPIRE_INTERVAL = 1.0
# Receive and send buffer of the sockets clients reach TURN on: coturn's UR_SERVER_SOCK_BUF_SIZE
# (65536 * 32 = 2 MiB, set on its UDP listeners). About 1,700 datagrams of 1,200 bytes wait there
# while the event loop is busy or descheduled; the kernel default (net.core.rmem_default, 208 KiB)
# holds ~90, which a loaded relay overruns at 10-20 MB/s. The kernel caps it at rmem_max/wmem_max.
SOCKET_BUFFER = 65536 * 32
# Receive buffer of each relayed socket (peers' datagrams): 512 KiB, ~430 datagrams of 1,200 bytes
# (15 ms at 30 MB/s) where the kernel default (rmem_default, 208 KiB) holds ~170; a cap on what
# the kernel may queue, not memory taken up front (1,000 allocations: at most 512 MiB queued).
RELAYED_SOCKET_BUFFER = 512 * 1024


@dataclass
class TurnConfig:
    secret: str
    realm: str
    limits: TurnLimits = field(default_factory=TurnLimits)
    relay_ip: str | None = "0.0.0.0"   # where IPv4 relayed sockets are bound (None: no IPv4)
    public_ip: str | None = None       # the relayed address's IP as peers see it (--announce)
    relay_ip6: str | None = None       # where IPv6 relayed sockets are bound (None: no IPv6)
    public_ip6: str | None = None
    min_port: int = MIN_RELAY_PORT
    max_port: int = MAX_RELAY_PORT
    # recvmmsg/sendmmsg when the platform has them (udp_batch.py); False: a call per datagram
    batched: bool = True


class _Route:
    """Where a datagram that needs no TURN decision goes: what `TurnServer.channel_route` /
    `peer_route` allowed until `until` (the core's state generation unchanged), the socket it
    leaves from and its prepared destination."""

    __slots__ = ("until", "allocation", "channel", "sock", "fd", "dest")

    def __init__(self, until: float, allocation: Allocation, channel: int, sock: socket.socket,
                 dest: Dest) -> None:
        self.until = until
        self.allocation = allocation
        self.channel = channel
        self.sock = sock
        self.fd = sock.fileno()
        self.dest = dest


def _forward(batcher: Batcher, core: TurnServer, route: _Route, run: list[int], total: int,
             header: int, now: float) -> None:
    """Queue a run of datagrams on one route (`run`: offset, length, offset, length, ...; each
    length includes `header` bytes that are not payload), counted against the allocation's
    limits at once when they all fit (the usual case), else one by one exactly as the core
    counts them (what passes a limit is dropped, counted and logged there)."""
    a, fd, sock, dest, queue = route.allocation, route.fd, route.sock, route.dest, batcher.queue
    if core.try_account(a, total, now):
        for i in range(0, len(run), 2):
            queue(fd, sock, run[i], run[i + 1], dest)
        return
    for i in range(0, len(run), 2):
        if core.account(a, run[i + 1] - header, now):
            queue(fd, sock, run[i], run[i + 1], dest)


# not looked up yet (None in a route table: looked up, no fast route); a _Route for the type
_MISS = _Route.__new__(_Route)


class _BatchedSocket:
    """What the client and relayed UDP sockets share: a non-blocking socket read in batches on
    the loop (`udp_batch.Batcher`), routes cached per core generation, sends through the batcher."""

    routes: dict[Any, _Route | None]

    def __init__(self, service: TurnService, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self.v6 = sock.family == socket.AF_INET6
        self.generation = -1
        self._closing = False
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        raise NotImplementedError

    def _receive(self) -> tuple[int, Sequence[int], Sequence[Key]]:
        """One batch off the socket; the cached routes are dropped first when the core's state
        changed since they were made."""
        n, lengths, keys = self.service.batcher.recv(self.sock, self.v6)
        generation = self.service.core.generation
        if n and self.generation != generation:
            self._forget_routes()
            self.generation = generation
        return n, lengths, keys

    def _forget_routes(self) -> None:
        self.routes.clear()

    def sendto(self, data: bytes, addr: Addr) -> None:
        if not self._closing:
            self.service.batcher.sendto(self.sock, data, addr)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.service.batcher.flush()  # nothing queued may name this socket once it is closed
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class _ClientSocket(_BatchedSocket):
    """A UDP socket clients reach TURN on (the STUN server's primary one, or TURN's own), read
    in batches (`udp_batch.Batcher`). ChannelData on a channel the core has bound goes straight
    to its peer from the allocation's relayed socket (`channel_route`, cached until it expires
    or the core's state changes); everything else goes to the core (`TurnService.udp_datagram`),
    Binding requests to the STUN server when the socket is its."""

    def __init__(self, service: TurnService, sock: socket.socket,
                 stun: StunServer | None = None) -> None:
        self.stun = stun
        name = sock.getsockname()
        self.local: Addr = (str(name[0]), int(name[1]))
        # our address as clients reach it; None when bound to 0.0.0.0 / :: (looked up per client)
        self.here: Addr | None = None if ipaddress.ip_address(self.local[0]).is_unspecified \
            else self.local
        self.routes: dict[tuple[Key, int], _Route | None] = {}
        self.send_routes: dict[tuple[Key, bytes], _Route | None] = {}
        super().__init__(service, sock)

    def _forget_routes(self) -> None:
        self.routes.clear()
        self.send_routes.clear()

    def _readable(self) -> None:
        n, lengths, keys = self._receive()
        if not n:
            return
        svc = self.service
        batcher = svc.batcher
        core = svc.core
        routes = self.routes
        now = _now()
        buf = batcher.buf
        heads = batcher.heads(n)
        run: list[int] = []  # consecutive datagrams on one route, forwarded together
        run_route: _Route | None = None
        total = 0
        for i in range(n):
            size = lengths[i]
            channel = heads[2 * i]
            length = heads[2 * i + 1]
            if 0x4000 <= channel <= 0x4FFF and length + 4 <= size:  # ChannelData
                key = keys[i]
                r = routes.get((key, channel), _MISS)
                if r is _MISS:
                    r = self._route(key, channel, now)
                if r is not None:
                    if now < r.until:
                        if r is not run_route:
                            if run_route is not None:
                                _forward(batcher, core, run_route, run, total, 0, now)
                                run = []
                            run_route, total = r, 0
                        run += (i * _SLOT + _PAYLOAD, length)
                        total += length
                        continue
                    del routes[(key, channel)]
            elif channel == _SEND_INDICATION:
                hit = self._send_indication(i, size, keys[i], now)
                if hit is not None:
                    r, length = hit
                    if r is not run_route:
                        if run_route is not None:
                            _forward(batcher, core, run_route, run, total, 0, now)
                            run = []
                        run_route, total = r, 0
                    run += (i * _SLOT + HEADROOM + _SEND_DATA, length)
                    total += length
                    continue
            if run_route is not None:  # keep the order of what this client sent
                _forward(batcher, core, run_route, run, total, 0, now)
                run, run_route = [], None
            off = i * _SLOT + HEADROOM
            self._slow(buf[off:off + size], keys[i])
            if self.generation != core.generation:  # a request changed what is allowed
                routes.clear()
                self.send_routes.clear()
                self.generation = core.generation
        if run_route is not None:
            _forward(batcher, core, run_route, run, total, 0, now)
        batcher.flush()

    def _send_indication(self, i: int, size: int, key: Key, now: float
                         ) -> tuple[_Route, int] | None:
        """(route, DATA length) of received datagram i when it is a Send indication of the
        usual layout to an IPv4 peer the client has a permission for, else None (the core
        decides, refusals included). A FINGERPRINT is checked as the codec would."""
        if size < _SEND_DATA:
            return None
        buf = self.service.batcher.buf
        base = i * _SLOT + HEADROOM
        _, length, cookie, t1, l1, xpeer, t2, l2 = _SEND_HEAD.unpack_from(buf, base)
        if (cookie != codec.MAGIC_COOKIE or t1 != codec.ATTR_XOR_PEER_ADDRESS or l1 != 8
                or t2 != codec.ATTR_DATA or length + 20 != size):
            return None
        end = _SEND_DATA + l2 + (-l2 % 4)
        if end != size:
            if end + 8 != size:
                return None
            t, fl, fp = _FINGERPRINT.unpack_from(buf, base + end)
            view = self.service.batcher.view
            if (t != codec.ATTR_FINGERPRINT or fl != 4
                    or fp != (crc32(view[base:base + end]) ^ codec.FINGERPRINT_XOR) & 0xFFFFFFFF):
                return None
        rk = (key, xpeer)
        r = self.send_routes.get(rk, _MISS)
        if r is _MISS:
            r = self._send_route(key, xpeer, now)
        if r is None:
            return None
        if now >= r.until:
            del self.send_routes[rk]
            return None
        return r, l2

    def _send_route(self, key: Key, xpeer: bytes, now: float) -> _Route | None:
        svc = self.service
        family, xport, xip = struct.unpack(">xBHI", xpeer)
        route = None
        client = svc.batcher.decode(key)
        here = self._here(client)
        if family == codec.FAMILY_IPV4 and here is not None:
            peer = (socket.inet_ntoa((xip ^ codec.MAGIC_COOKIE).to_bytes(4, "big")),
                    xport ^ (codec.MAGIC_COOKIE >> 16))
            found = svc.core.send_route(svc.five_tuple(client, here), peer, now)
            relayed = svc.relayed.get(found.allocation.id) if found is not None else None
            if found is not None and relayed is not None:
                route = _Route(found.until, found.allocation, 0, relayed.sock,
                               svc.batcher.dest(peer))
        if len(self.send_routes) >= MAX_ROUTES:
            self.send_routes.clear()
        self.send_routes[(key, xpeer)] = route
        return route

    def _route(self, key: Key, channel: int, now: float) -> _Route | None:
        svc = self.service
        client = svc.batcher.decode(key)
        here = self._here(client)
        route = None
        if here is not None:
            found = svc.core.channel_route(svc.five_tuple(client, here), channel, now)
            relayed = svc.relayed.get(found.allocation.id) if found is not None else None
            if found is not None and relayed is not None:
                route = _Route(found.until, found.allocation, channel, relayed.sock,
                               svc.batcher.dest(found.peer))
        if len(self.routes) >= MAX_ROUTES:
            self.routes.clear()
        self.routes[(key, channel)] = route
        return route

    def _here(self, client: Addr) -> Addr | None:
        if self.here is not None:
            return self.here
        ip = self.service.local_ip_for(client[0])
        return None if ip is None else (ip, self.local[1])

    def _slow(self, data: bytes, key: Key) -> None:
        client = self.service.batcher.decode(key)
        if self.stun is not None and data[:2] == b"\x00\x01":  # a Binding request: STUN's
            self.stun.datagram_received(PRIMARY, data, client)
            return
        here = self._here(client)
        if here is not None:
            self.service.udp_datagram(data, client, here, self.sendto)

    # what StunServer needs of the socket it gave away (it answers Binding requests through it):
    # sendto and close (_BatchedSocket), and these
    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default


class _RelayedSocket(_BatchedSocket):
    """The relayed UDP socket of one allocation, read in batches. A datagram from a peer the
    client has a channel to (`TurnServer.peer_route`) goes to the client as ChannelData, its
    header written in the headroom in front of it (UDP clients); all else goes to the core
    (`peer_datagram`: permissions, Data indications, TCP clients)."""

    def __init__(self, service: TurnService, allocation: int, sock: socket.socket) -> None:
        self.allocation = allocation
        self.routes: dict[Key, _Route | None] = {}
        super().__init__(service, sock)

    def _readable(self) -> None:
        n, lengths, keys = self._receive()
        if not n:
            return
        svc = self.service
        batcher = svc.batcher
        core = svc.core
        routes = self.routes
        now = _now()
        buf = batcher.buf
        pack_head = _CHANNEL_HEAD.pack_into
        run: list[int] = []
        run_route: _Route | None = None
        total = 0
        for i in range(n):
            size = lengths[i]
            key = keys[i]
            r = routes.get(key, _MISS)
            if r is _MISS:
                r = self._route(key, now)
            if r is not None:
                if now < r.until:
                    if r is not run_route:
                        if run_route is not None:
                            _forward(batcher, core, run_route, run, total, 4, now)
                            run = []
                        run_route, total = r, 0
                    off = i * _SLOT  # the header goes into the headroom
                    pack_head(buf, off, r.channel, size)
                    run += (off, size + 4)
                    total += size
                    continue
                del routes[key]
            if run_route is not None:
                _forward(batcher, core, run_route, run, total, 4, now)
                run, run_route = [], None
            off = i * _SLOT + HEADROOM
            svc.guarded(core.peer_datagram, self.allocation, buf[off:off + size],
                        batcher.decode(key), now)
            if self.generation != core.generation:
                routes.clear()
                self.generation = core.generation
        if run_route is not None:
            _forward(batcher, core, run_route, run, total, 4, now)
        batcher.flush()

    def _route(self, key: Key, now: float) -> _Route | None:
        svc = self.service
        found = svc.core.peer_route(self.allocation, svc.batcher.decode(key), now)
        route = None
        if found is not None and found.five.transport == "udp":  # TCP: framed by the core
            client_socket = svc.client_sockets.get(found.five.server)
            if client_socket is not None:
                route = _Route(found.until, found.allocation, found.channel, client_socket.sock,
                               svc.batcher.dest(found.five.client))
        if len(self.routes) >= MAX_ROUTES:
            self.routes.clear()
        self.routes[key] = route
        return route

    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, service: TurnService) -> None:
        self.service = service
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.five: FiveTuple | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if len(self.service.tcp_clients) >= MAX_TCP_CONNECTIONS:
            log.info("TURN over TCP: %d connections, refusing %s", MAX_TCP_CONNECTIONS, peer[0])
            self.service.core.stats.refusals["tcp-connections"] += 1
            self.transport.abort()
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

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.five is not None and self.service.tcp_clients.pop(self.five, None) is self:
            self.service.dispatch(self.service.core.client_closed(self.five))


class TurnService:
    """One TURN core and all its sockets."""

    def __init__(self, config: TurnConfig, stats: TurnStats | None = None) -> None:
        self.config = config
        relay_ips = [ip for ip in (config.relay_ip, config.relay_ip6) if ip is not None]
        allow_loopback = any(ipaddress.ip_address(ip).is_loopback for ip in relay_ips)
        families = frozenset(ipaddress.ip_address(ip).version for ip in relay_ips)
        self.core = TurnServer(config.secret, config.realm, config.limits, stats,
                               allow_loopback_peers=allow_loopback, families=families)
        self.batcher = Batcher(config.batched)
        self.relayed: dict[int, _RelayedSocket] = {}
        self.ports_in_use: set[int] = set()
        self.tcp_clients: dict[FiveTuple, _TcpProtocol] = {}
        self.client_sockets: dict[Addr, _ClientSocket] = {}  # by the address clients reach
        self.udp_addresses: list[Addr] = []   # where TURN/UDP is served
        self.tcp_addresses: list[Addr] = []
        self._udp_senders: dict[Addr, Callable[[bytes, Addr], None]] = {}
        self._udp_fives: dict[tuple[Addr, Addr], FiveTuple] = {}
        self._local_ips: dict[str, str | None] = {}
        self._own_sockets: list[_ClientSocket] = []
        self._tcp_servers: list[asyncio.AbstractServer] = []
        self._expiry: asyncio.Task[None] | None = None
        self._closed = False

    # -- listening -------------------------------------------------------------------------------

    def share(self, stun: StunServer) -> None:
        """Serve TURN on the STUN server's primary socket (which TURN then reads: Binding
        requests go back to the STUN server)."""
        client_socket = stun.take_primary(lambda sock: _ClientSocket(self, sock, stun))
        _enlarge_buffers(client_socket.sock)
        self._add_client_socket(client_socket)
        self._start_expiry()

    async def listen_udp(self, host: str, port: int) -> Addr:
        sock = bind_udp(host, port)
        _enlarge_buffers(sock)
        client_socket = _ClientSocket(self, sock)
        self._own_sockets.append(client_socket)
        self._add_client_socket(client_socket)
        self._start_expiry()
        return client_socket.local

    def _add_client_socket(self, client_socket: _ClientSocket) -> None:
        self.udp_addresses.append(client_socket.local)
        self.client_sockets[client_socket.local] = client_socket

    async def listen_tcp(self, host: str, port: int) -> Addr:
        server = await asyncio.get_running_loop().create_server(
            lambda: _TcpProtocol(self), host, port, reuse_address=True)
        self._tcp_servers.append(server)
        name = server.sockets[0].getsockname()
        local = (str(name[0]), int(name[1]))
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

    def five_tuple(self, client: Addr, server: Addr) -> FiveTuple:
        five = self._udp_fives.get((client, server))
        if five is None:  # making a NamedTuple costs ~1 us; looking one up ~0.2 us
            if len(self._udp_fives) >= MAX_CACHED_FIVE_TUPLES:
                self._udp_fives.clear()
            five = self._udp_fives[(client, server)] = FiveTuple("udp", client, server)
        return five

    def local_ip_for(self, client_ip: str) -> str | None:
        """The address the kernel answers `client_ip` from (cached route lookups)."""
        if client_ip in self._local_ips:
            return self._local_ips[client_ip]
        if len(self._local_ips) >= MAX_LOCAL_IPS:
            self._local_ips.clear()
        ip = self._local_ips[client_ip] = _local_ip_for(client_ip)
        return ip

    def udp_datagram(self, data: bytes, client: Addr, server: Addr,
                     send: Callable[[bytes, Addr], None]) -> None:
        five = self.five_tuple(client, server)
        if server not in self._udp_senders:
            self._udp_senders[server] = send
        self.guarded(self.core.client_datagram, data, five, _now())

    def guarded(self, step: Callable[..., Iterable[Action]], *args: object) -> None:
        """Run a core step and its actions. The core never raises on network input (fuzzed in
        tests/unit/test_turn.py); should a bug slip through, it costs one datagram, not the
        socket, which STUN shares."""
        try:
            self.dispatch(step(*args))
        except Exception:
            log.exception("TURN: internal error on a datagram (dropped)")
            self.core.stats.refusals["internal-error"] += 1

    def dispatch(self, actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, ToPeer):
                relayed = self.relayed.get(a.allocation)
                if relayed is not None:
                    relayed.sendto(a.data, a.peer)
            elif isinstance(a, ToClient):
                if a.five.transport == "udp":
                    send = self._udp_senders.get(a.five.server)
                    if send is not None:
                        send(a.data, a.five.client)
                else:
                    conn = self.tcp_clients.get(a.five)
                    if conn is not None:
                        conn.send(a.data)
            elif isinstance(a, OpenRelay):
                self._open_relay(a)
            elif isinstance(a, CloseRelay):
                relayed = self.relayed.pop(a.allocation, None)
                if relayed is not None:
                    self.ports_in_use.discard(relayed.port())
                    relayed.close()
                conn = self.tcp_clients.get(a.five) if a.five.transport == "tcp" else None
                if conn is not None:
                    conn.arm_idle_timer()

    def _open_relay(self, a: OpenRelay) -> None:
        c = self.config
        bind_ip = self._relay_bind_ip(a.family, a.server)
        public = c.public_ip if a.family == 4 else c.public_ip6
        ip = public or bind_ip
        sock = None if self._closed or ip is None or bind_ip is None else \
            self._bind_relay_port(bind_ip, a.even)
        if sock is None:
            if not self._closed:
                log.warning("TURN: no free relay port in %d-%d", self.config.min_port,
                            self.config.max_port)
            self.dispatch(self.core.relay_failed(a.allocation, time.time()))
            return
        port = sock.getsockname()[1]
        self.ports_in_use.add(port)
        self.relayed[a.allocation] = _RelayedSocket(self, a.allocation, sock)
        assert ip is not None
        self.dispatch(self.core.relay_opened(a.allocation, (ip, port), time.time()))

    def _relay_bind_ip(self, family: int, server: Addr) -> str | None:
        """Where an allocation's relayed socket is bound: the relay IP of that family; for
        0.0.0.0 / ::, the address the client reached when it is of that family, else the first
        non-loopback address of that family here (a specific address, so that what peers see
        as the source is the relayed address, whichever route the kernel takes)."""
        ip = self.config.relay_ip if family == 4 else self.config.relay_ip6
        if ip is None or not ipaddress.ip_address(ip).is_unspecified:
            return ip
        if (":" in server[0]) == (family == 6):
            return server[0]
        found = [a for a in expand_unspecified(ip) if not is_loopback(a)]
        return found[0] if found else None

    def _bind_relay_port(self, bind_ip: str, even: bool = False) -> socket.socket | None:
        lo, hi = self.config.min_port, self.config.max_port
        step = 2 if even else 1
        first = lo + (lo % 2 if even else 0)
        if first > hi:
            return None
        tries = [random.randrange(first, hi + 1, step) for _ in range(RANDOM_PORT_TRIES)]
        for port in [*tries, *range(first, hi + 1, step)]:
            if port in self.ports_in_use:
                continue
            try:
                sock = bind_udp(bind_ip, port)
            except OSError:
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAYED_SOCKET_BUFFER)
            return sock
        return None

    def close(self) -> None:
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        for relayed in self.relayed.values():
            relayed.close()
        self.relayed.clear()
        for conn in list(self.tcp_clients.values()):
            conn.close()
        for own in self._own_sockets:
            own.close()
        for s in self._tcp_servers:
            s.close()


def _enlarge_buffers(sock: socket.socket | None) -> None:
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
            return str(s.getsockname()[0])
    except OSError:
        return None
