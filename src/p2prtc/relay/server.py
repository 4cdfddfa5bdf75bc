"""Circuit relay v2 hop service (specs: relay/circuit-v2.md).

RESERVE always reserves for the authenticated remote peer (never for a peer named in the
message). A reservation lives until it expires or its connection closes. CONNECT opens the stop
protocol on the target's reservation connection and splices the two streams; the circuit's
duration and data limits are enforced by ending both streams cleanly (FIN), never by writing
anything into the relayed bytes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..connection import Connection
from ..errors import P2PError, ProtocolError, StreamClosed
from ..events import ConnectionClosed, ConnectionOpened
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..pb import circuit_pb2
from ..protocols import relay_hop as hop
from ..protocols.relay_hop import HopMessage, Status, StopMessage
from ..streams import Stream
from .limits import RateLimiter, RelayLimits
from .metrics import RelayMetrics

if TYPE_CHECKING:
    from ..network import Network
    from ..transports.base import RawConnection

log = logging.getLogger(__name__)

# The target must answer the stop protocol within this time (rust: 10 s via its handler).
STOP_TIMEOUT = 10.0
# A hop request must arrive within this time after the stream opens.
REQUEST_TIMEOUT = 10.0
SPLICE_CHUNK = 64 * 1024
# After a circuit ends, each side gets this long to finish closing before it is reset.
CLOSE_GRACE = 5.0


def remote_ip(conn: Connection) -> str | None:
    for proto in ("ip4", "ip6"):
        v = conn.remote_addr.value_for(proto)
        if v is not None:
            return v
    return None


@dataclass
class Reservation:
    peer: PeerId
    conn: Connection
    expires: float  # unix time


class ReservationTable:
    """Live reservations by peer and connection.

    Counts are kept as we go and expiry uses a heap (entries made stale by a renewal are skipped),
    so admitting a reservation costs O(log n) however many are live.
    """

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._by_peer: dict[PeerId, dict[int, Reservation]] = {}
        self._count = 0
        self._expiry: list[tuple[float, int, PeerId]] = []  # (expires, conn id, peer)

    def __len__(self) -> int:
        return self._count

    @property
    def peers_tracked(self) -> int:
        """Peers with an entry (nothing may be left behind for a peer with no reservation)."""
        return len(self._by_peer)

    def expire(self, now: float) -> int:
        dropped = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, cid, peer = heapq.heappop(heap)
            table = self._by_peer.get(peer)
            r = table.get(cid) if table else None
            if r is not None and r.expires == expires:  # not renewed since
                self._drop(peer, cid)
                dropped += 1
        return dropped

    def admit(self, peer: PeerId, conn: Connection, expires: float) -> str | None:
        """Add or renew; returns a refusal reason, or None when accepted."""
        table = self._by_peer.get(peer, {})
        if conn.id in table:  # renewal on the same connection
            table[conn.id].expires = expires
            heapq.heappush(self._expiry, (expires, conn.id, peer))
            return None
        if self._count >= self.limits.max_reservations:
            return "too many reservations"
        if len(table) >= self.limits.max_reservations_per_peer:
            return "too many reservations for this peer"
        self._by_peer.setdefault(peer, {})[conn.id] = Reservation(peer, conn, expires)
        self._count += 1
        heapq.heappush(self._expiry, (expires, conn.id, peer))
        return None

    def _drop(self, peer: PeerId, cid: int) -> bool:
        table = self._by_peer.get(peer)
        if not table or table.pop(cid, None) is None:
            return False
        if not table:
            del self._by_peer[peer]
        self._count -= 1
        return True

    def remove_connection(self, conn: Connection) -> bool:
        # Its heap entry goes stale and is skipped when it comes up.
        return self._drop(conn.remote_peer, conn.id)

    def connection_for(self, peer: PeerId, now: float) -> Connection | None:
        live = [r for r in self._by_peer.get(peer, {}).values()
                if r.expires > now and not r.conn.is_closed]
        return live[-1].conn if live else None


@dataclass(eq=False)  # identity: two circuits between the same peers are different circuits
class Circuit:
    src: PeerId
    dst: PeerId
    opened: float = field(default_factory=time.monotonic)
    bytes_up: int = 0
    bytes_down: int = 0


class CircuitTable:
    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self.active: set[Circuit] = set()
        self._per_peer: dict[PeerId, int] = {}

    def __len__(self) -> int:
        return len(self.active)

    @property
    def peers_tracked(self) -> int:
        """Peers with a circuit count (nothing may be left behind for a peer with none)."""
        return len(self._per_peer)

    def admit(self, src: PeerId, dst: PeerId) -> Circuit | None:
        if len(self.active) >= self.limits.max_circuits:
            return None
        cap = self.limits.max_circuits_per_peer
        if self._per_peer.get(src, 0) >= cap or self._per_peer.get(dst, 0) >= cap:
            return None
        c = Circuit(src, dst)
        self.active.add(c)
        for p in (src, dst):
            self._per_peer[p] = self._per_peer.get(p, 0) + 1
        return c

    def remove(self, c: Circuit) -> None:
        if c in self.active:
            self.active.remove(c)
            for p in (c.src, c.dst):
                n = self._per_peer.get(p, 0) - 1
                if n > 0:
                    self._per_peer[p] = n
                else:
                    self._per_peer.pop(p, None)


class RelayService:
    def __init__(self, host: Network, limits: RelayLimits | None = None,
                 metrics: RelayMetrics | None = None) -> None:
        self.host = host
        self.limits = limits or RelayLimits()
        self.metrics = metrics or RelayMetrics()
        self.reservations = ReservationTable(self.limits)
        self.circuits = CircuitTable(self.limits)
        L = self.limits
        self._rsv_peer = RateLimiter(L.reservation_rate_per_peer)
        self._rsv_ip = RateLimiter(L.reservation_rate_per_ip)
        self._cct_peer = RateLimiter(L.circuit_rate_per_peer)
        self._cct_ip = RateLimiter(L.circuit_rate_per_ip)
        self._conn_ip = RateLimiter(L.connection_rate_per_ip)
        self._conns_per_ip: dict[str, int] = {}
        host.handle(hop.HOP, self._handle_hop, allow_limited=True)
        host.events.on(ConnectionOpened, lambda e: self._on_connection(e.connection))
        host.events.on(ConnectionClosed, lambda e: self._on_disconnection(e.connection))
        host.upgrader.inbound_gate = self._admit_raw

    # -- connection accounting -------------------------------------------------------------

    def _admit_raw(self, raw: RawConnection) -> bool:
        ip = raw.remote_addr.value_for("ip4") or raw.remote_addr.value_for("ip6")
        if ip is None:
            return True
        if not self._conn_ip.try_acquire(ip):
            self.metrics.refuse("connection rate")
            log.warning("refusing connection from %s: connection rate limit", ip)
            return False
        if self._conns_per_ip.get(ip, 0) >= self.limits.max_connections_per_ip:
            self.metrics.refuse("connections per ip")
            log.warning("refusing connection from %s: %d connections already open", ip,
                        self._conns_per_ip[ip])
            return False
        return True

    def _on_connection(self, conn: Connection) -> None:
        self.metrics.connections_active += 1
        ip = remote_ip(conn)
        if ip is not None:
            self._conns_per_ip[ip] = self._conns_per_ip.get(ip, 0) + 1

    def _on_disconnection(self, conn: Connection) -> None:
        self.metrics.connections_active -= 1
        ip = remote_ip(conn)
        if ip is not None:
            n = self._conns_per_ip.get(ip, 0) - 1
            if n > 0:
                self._conns_per_ip[ip] = n
            else:
                self._conns_per_ip.pop(ip, None)
        if self.reservations.remove_connection(conn):
            self.metrics.reservations_active = len(self.reservations)
            log.info("reservation of %s ended: connection closed", conn.remote_peer)

    # -- hop -------------------------------------------------------------------------------

    async def _handle_hop(self, stream: Stream) -> None:
        conn = stream.connection
        if conn is None:  # (set for every inbound stream)
            stream.reset()
            return
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                msg = await hop.read_message(stream, HopMessage)
        except hop.MalformedMessage as e:
            log.info("malformed hop message from %s: %s", conn.remote_peer.short(), e)
            self.metrics.refuse("malformed message")
            await self._status(stream, hop.MALFORMED_MESSAGE)
            return
        except (TimeoutError, ProtocolError, StreamClosed) as e:
            log.info("hop stream from %s ended before a request: %s", conn.remote_peer.short(), e)
            stream.reset()
            return
        if msg.type == HopMessage.RESERVE:
            await self._reserve(stream, conn)
        elif msg.type == HopMessage.CONNECT:
            await self._connect(stream, conn, msg)
        else:
            self.metrics.refuse("unexpected message")
            await self._status(stream, hop.UNEXPECTED_MESSAGE)

    async def _status(self, stream: Stream, code: Status, *,
                      reservation: circuit_pb2.Reservation | None = None,
                      limit: circuit_pb2.Limit | None = None) -> None:
        try:
            await hop.write_message(stream, HopMessage(type=HopMessage.STATUS, status=code,
                                                       reservation=reservation, limit=limit))
            await stream.close()
        except P2PError:
            stream.reset()

    def _limit(self) -> circuit_pb2.Limit | None:
        L = self.limits
        if not L.max_circuit_duration and not L.max_circuit_bytes:
            return None
        limit = circuit_pb2.Limit()
        if L.max_circuit_duration:
            limit.duration = int(L.max_circuit_duration)
        if L.max_circuit_bytes:
            limit.data = int(L.max_circuit_bytes)
        return limit

    def public_addrs(self) -> list[Multiaddr]:
        """Addresses put in reservations: announced ones, else listen plus observed ones."""
        if self.host.announce_addrs:
            addrs = list(self.host.announce_addrs)
        else:
            addrs = list(self.host.listen_addrs) + list(self.host.observed_addrs)
        out = []
        for a in dict.fromkeys(a.without_peer_id() for a in addrs):
            if a.has("p2p-circuit"):
                continue
            out.append(a.with_peer_id(self.host.peer_id))
        return out

    async def _reserve(self, stream: Stream, conn: Connection) -> None:
        peer = conn.remote_peer
        ip = remote_ip(conn)
        if conn.limited:
            return await self._refuse_reservation(stream, peer, hop.PERMISSION_DENIED,
                                                  "reservation over a relayed connection")
        if not self._rsv_peer.try_acquire(peer) or (ip and not self._rsv_ip.try_acquire(ip)):
            return await self._refuse_reservation(stream, peer, hop.RESOURCE_LIMIT_EXCEEDED,
                                                  "reservation rate limit")
        now = time.time()
        self.reservations.expire(now)
        expires = int(now + self.limits.reservation_duration)
        reason = self.reservations.admit(peer, conn, expires)
        if reason is not None:
            return await self._refuse_reservation(stream, peer, hop.RESERVATION_REFUSED, reason)
        self.metrics.reservations_total += 1
        self.metrics.reservations_active = len(self.reservations)
        reservation = circuit_pb2.Reservation(
            expire=expires,
            addrs=[a.to_bytes() for a in self.public_addrs()],
            voucher=hop.make_voucher(self.host.identity, peer, expires),
        )
        log.info("reservation for %s from %s accepted, expires in %d s", peer, conn.remote_addr,
                 self.limits.reservation_duration)
        await self._status(stream, hop.OK, reservation=reservation, limit=self._limit())

    async def _refuse_reservation(self, stream: Stream, peer: PeerId, code: Status,
                                  reason: str) -> None:
        log.info("reservation for %s refused (%s): %s", peer, hop.status_name(code), reason)
        self.metrics.refuse(reason)
        await self._status(stream, code)

    async def _connect(self, stream: Stream, conn: Connection, msg: HopMessage) -> None:
        src = conn.remote_peer
        ip = remote_ip(conn)

        async def refuse(code: Status, reason: str, kind: str | None = None) -> None:
            log.info("circuit from %s refused (%s): %s", src, hop.status_name(code), reason)
            # The metrics label is a fixed category: a reason naming peers or quoting the
            # remote's words would grow the counter without bound.
            self.metrics.refuse(kind or reason)
            await self._status(stream, code)

        try:
            dst = hop.peer_of(msg)
        except hop.MalformedMessage as e:
            return await refuse(hop.MALFORMED_MESSAGE, f"malformed connect: {e}",
                                "malformed connect")
        if conn.limited:
            return await refuse(hop.PERMISSION_DENIED, "circuit over a relayed connection")
        if not self._cct_peer.try_acquire(src) or (ip and not self._cct_ip.try_acquire(ip)):
            return await refuse(hop.RESOURCE_LIMIT_EXCEEDED, "circuit rate limit")
        dst_conn = self.reservations.connection_for(dst, time.time())
        if dst_conn is None:
            return await refuse(hop.NO_RESERVATION, f"no reservation for {dst}", "no reservation")
        circuit = self.circuits.admit(src, dst)
        if circuit is None:
            return await refuse(hop.RESOURCE_LIMIT_EXCEEDED, "too many circuits")
        # From here on the slot is taken; every way out of this method gives it back.
        try:
            try:
                dst_stream = await self._open_stop(dst_conn, src)
            except (P2PError, OSError, TimeoutError) as e:
                self.circuits.remove(circuit)
                return await refuse(hop.CONNECTION_FAILED, f"target {dst} did not accept: {e}",
                                    "target did not accept")
            limit = self._limit()
            ok = HopMessage(type=HopMessage.STATUS, status=hop.OK)
            if limit is not None:
                ok.limit.CopyFrom(limit)
            try:
                await hop.write_message(stream, ok)
            except P2PError as e:
                dst_stream.reset()
                log.info("circuit %s -> %s: source went away: %s", src, dst, e)
                return
            self.metrics.circuits_total += 1
            self.metrics.circuits_active = len(self.circuits)
            log.info("circuit %s -> %s opened", src, dst)
            await self._splice(circuit, stream, dst_stream, conn, dst_conn)
        finally:
            self.circuits.remove(circuit)
            self.metrics.circuits_active = len(self.circuits)

    async def _open_stop(self, dst_conn: Connection, src: PeerId) -> Stream:
        async with asyncio.timeout(STOP_TIMEOUT):
            s = await dst_conn.new_stream([hop.STOP])
            try:
                req = StopMessage(type=StopMessage.CONNECT)
                req.peer.id = src.to_bytes()
                limit = self._limit()
                if limit is not None:
                    req.limit.CopyFrom(limit)
                await hop.write_message(s, req)
                reply = await hop.read_message(s, StopMessage)
            except BaseException:
                s.reset()
                raise
        if reply.type != StopMessage.STATUS or reply.status != hop.OK:
            s.reset()
            raise ProtocolError(f"stop answered {hop.status_name(reply.status)}")
        return s

    async def _splice(self, circuit: Circuit, a: Stream, b: Stream, a_conn: Connection,
                      b_conn: Connection) -> None:
        """Copy both ways until both sides end (FIN each way), a limit is hit, either side
        resets its stream, or either side's connection to the relay closes.

        A side that ends only its write half is waiting for the other's data (half-close), so
        the circuit lives on; one whose stream or connection breaks can never send or receive
        again, so the circuit ends at once and the other side's stream is reset: nothing else
        would tell that peer, and its relayed connection would hold the slot until the
        duration limit."""
        L = self.limits
        limit_bytes = L.max_circuit_bytes
        over_limit = asyncio.Event()

        async def pump(src: Stream, dst: Stream, up: bool) -> None:
            src_side, dst_side = ("source", "destination") if up else ("destination", "source")
            sent = 0
            while True:
                try:
                    data = await src.read(SPLICE_CHUNK)
                except P2PError as e:
                    raise _SideEnded(f"the {src_side} reset the stream ({e})") from None
                try:
                    if not data:
                        await dst.close_write()
                        return
                    if limit_bytes and sent + len(data) > limit_bytes:
                        allowed = limit_bytes - sent
                        if allowed:
                            await dst.write(data[:allowed])
                            self._count(circuit, up, allowed)
                        over_limit.set()
                        return
                    await dst.write(data)
                except P2PError as e:
                    raise _SideEnded(f"the {dst_side} reset the stream ({e})") from None
                sent += len(data)
                self._count(circuit, up, len(data))

        pumps = [asyncio.ensure_future(pump(a, b, True)), asyncio.ensure_future(pump(b, a, False))]
        watchers = [asyncio.ensure_future(over_limit.wait()),
                    asyncio.ensure_future(a_conn.wait_closed()),
                    asyncio.ensure_future(b_conn.wait_closed())]

        def outcome() -> tuple[str, bool] | None:
            """(reason, abrupt) once the circuit is over, else None."""
            if over_limit.is_set():
                return f"data limit of {limit_bytes} bytes reached", False
            failed = [p.exception() for p in pumps if p.done() and p.exception() is not None]
            if all(p.done() for p in pumps) and not failed:
                return "closed by both peers", False
            # A connection's streams fail as soon as it starts to close, before wait_closed()
            # returns: name the connection whenever it is the cause.
            for side, c in (("source", a_conn), ("destination", b_conn)):
                if c.is_closed:
                    return f"the {side}'s connection to the relay closed ({c.close_reason})", True
            if failed:
                return str(failed[0]), True
            return None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + L.max_circuit_duration if L.max_circuit_duration else None
        reason, abrupt = "relay shutting down", False
        try:
            while True:
                waiting = [f for f in (*pumps, *watchers) if not f.done()]
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    reason = f"duration limit of {L.max_circuit_duration:.0f} s reached"
                    break
                result = outcome()
                if result is not None:
                    reason, abrupt = result
                    break
        finally:
            for f in (*pumps, *watchers):
                f.cancel()
            await asyncio.gather(*pumps, *watchers, return_exceptions=True)
            # The slot is given back before either peer hears of the end: a peer that saw its
            # relayed connection close may dial again at once.
            self.circuits.remove(circuit)
            self.metrics.circuits_active = len(self.circuits)
            log.info("circuit %s -> %s closed: %s (%d B up, %d B down, %.1f s)", circuit.src,
                     circuit.dst, reason, circuit.bytes_up, circuit.bytes_down,
                     time.monotonic() - circuit.opened)
            if abrupt:
                a.reset()
                b.reset()
            else:
                # A clean end for both peers: FIN both ways, then close (reset if they linger).
                await asyncio.gather(_close_gracefully(a), _close_gracefully(b))

    def _count(self, circuit: Circuit, up: bool, n: int) -> None:
        if up:
            circuit.bytes_up += n
        else:
            circuit.bytes_down += n
        self.metrics.bytes_relayed += n


class _SideEnded(Exception):
    """One side of a circuit reset its stream (or its stream broke): the circuit is over."""


async def _close_gracefully(stream: Stream) -> None:
    try:
        async with asyncio.timeout(CLOSE_GRACE):
            await stream.close()
    except (TimeoutError, P2PError, OSError):
        stream.reset()
