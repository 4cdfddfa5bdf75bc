"""Circuit relay v2 client (specs: relay/circuit-v2.md): dial `/p2p-circuit` addresses through a
relay, keep reservations on relays (refreshed before expiry, re-made when the relay restarts or
the connection drops: every FAST_RETRY at first, then with backoff), and accept relayed
connections via the stop protocol.

A relayed connection is limited when the relay announces limits: protocols must opt in to run
on it (identify, ping, WebRTC signaling do).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..connection import Connection, RelayLimit
from ..errors import DialError, P2PError, ProtocolError, StreamClosed
from ..events import (Identified, ListenAddrsChanged, RelayConnected, RelayError,
                      ReservationLost, ReservationMade)
from ..identity import PeerId
from ..multiaddr import Multiaddr, MultiaddrError
from ..muxer.yamux import GO_AWAY_NORMAL
from ..protocols import relay_hop as hop
from ..pb import circuit_pb2
from ..protocols.relay_hop import HopMessage, Status, StopMessage
from ..streams import Stream
from .base import ConnectionHandler, Listener, RawConnection, Transport
from .circuit_limit import CircuitMeter, limit_seconds

if TYPE_CHECKING:
    from ..network import Network

log = logging.getLogger(__name__)

HOP_TIMEOUT = 15.0
# Refresh a reservation this long before it expires (or at half its life if shorter).
REFRESH_MARGIN = 120.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
# A relay we cannot reach, or just lost, is usually restarting (a deploy, a crash under a
# supervisor): retry it every FAST_RETRY (jittered) for FAST_RETRY_WINDOW, so the reservation is
# back within ~1 s of its return (issue 12 asks for 2 s), then back off as above. A refused dial
# costs the relay one RST. A relay that answers and refuses the reservation backs off at once.
FAST_RETRY = 0.5
FAST_RETRY_WINDOW = 30.0
# How long to wait for a relay to announce the hop protocol after identify (see _identified).
HOP_ANNOUNCE_WAIT = 3.0


class CircuitStream(RawConnection):
    """A hop or stop stream that has become a relayed byte stream; every byte either way is
    counted on `meter` (what the relay counts against its limits)."""

    transport_name = "circuit"

    def __init__(self, stream: Stream, local_addr: Multiaddr, remote_addr: Multiaddr,
                 meter: CircuitMeter | None = None) -> None:
        self._s = stream
        if stream.connection is None:
            raise ValueError("a circuit runs on a stream of a relay connection")
        self._relay_connection = stream.connection
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.meter = meter or CircuitMeter(started=time.monotonic())

    @property
    def relay_connection(self) -> Connection:
        """Our connection to the relay that carries this circuit."""
        return self._relay_connection

    async def read(self, n: int = 65536) -> bytes:
        data = await self._s.read(n)
        self.meter.on_received(len(data))
        return data

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.meter.on_sent(len(data))
        await self._s.write(data)

    async def close_write(self) -> None:
        await self._s.close_write()

    async def close(self) -> None:
        await self._s.close()

    def reset(self) -> None:
        self._s.reset()


def split_circuit(addr: Multiaddr) -> tuple[Multiaddr, PeerId | None, Multiaddr]:
    """`<relay>/p2p/R/p2p-circuit/<rest>` -> (relay address with /p2p/R, R, rest)."""
    parts = addr.split_last("p2p-circuit")
    if parts is None:
        raise DialError(f"not a circuit address: {addr}")
    relay, rest = parts
    if not relay.protocols():
        raise DialError(f"circuit address names no relay: {addr}")
    return relay, relay.peer_id(), rest


def is_limited(limit: circuit_pb2.Limit | None) -> bool:
    return limit is not None and (limit.duration > 0 or limit.data > 0)


@dataclass
class ReservationInfo:
    relay: PeerId
    relay_addr: Multiaddr
    expires: float  # unix time
    addrs: list[Multiaddr] = field(default_factory=list)  # relay addrs, each with /p2p/<relay>
    limit_duration: int = 0
    limit_data: int = 0


async def reserve(conn: Connection, relay_agent: str | None = None) -> ReservationInfo:
    """Ask the relay on `conn` for a reservation; raise DialError with its status if refused.
    `relay_agent` (from identify) lets us read a js relay's duration limit right."""
    async with asyncio.timeout(HOP_TIMEOUT):
        stream = await conn.new_stream([hop.HOP])
        try:
            await hop.write_message(stream, HopMessage(type=HopMessage.RESERVE))
            reply = await hop.read_message(stream, HopMessage)
        finally:
            await stream.close()
    if reply.type != HopMessage.STATUS:
        raise ProtocolError(f"relay answered RESERVE with message type {reply.type}")
    if reply.status != hop.OK:
        raise DialError(f"relay {conn.remote_peer} refused the reservation: "
                        f"{hop.status_name(reply.status)}")
    if not reply.HasField("reservation"):
        raise ProtocolError("relay accepted the reservation but sent none")
    addrs = []
    for raw in reply.reservation.addrs:
        try:
            addrs.append(Multiaddr.from_bytes(raw).with_peer_id(conn.remote_peer))
        except MultiaddrError as e:  # undecodable, or naming another peer: skip that address
            log.debug("ignoring reservation address from %s: %s", conn.remote_peer, e)
    if reply.reservation.HasField("voucher"):
        try:
            voucher = hop.open_voucher(reply.reservation.voucher)
            if voucher.relay != conn.remote_peer.to_bytes():
                log.warning("relay %s sent a voucher signed for another relay", conn.remote_peer)
        except ProtocolError as e:
            log.warning("relay %s sent an invalid voucher: %s", conn.remote_peer, e)
    info = ReservationInfo(conn.remote_peer, conn.remote_addr.with_peer_id(conn.remote_peer),
                           float(reply.reservation.expire), addrs)
    if reply.HasField("limit"):
        info.limit_duration = limit_seconds(reply.limit.duration, relay_agent)
        info.limit_data = reply.limit.data
    return info


class CircuitListener(Listener):
    """Keeps a reservation on one relay alive; its addrs are `<relay addr>/p2p-circuit`.
    Relayed connections through that relay go to `on_connection` (from `Transport.listen`).
    `await listener.reserved(timeout)` waits for the first reservation attempt."""

    def __init__(self, transport: CircuitTransport, relay_addr: Multiaddr,
                 on_connection: ConnectionHandler) -> None:
        self.transport = transport
        self.host = transport.host
        self.relay_addr = relay_addr
        self.relay_peer = relay_addr.peer_id()
        self.reservation: ReservationInfo | None = None
        self.addrs: list[Multiaddr] = []
        self._on_connection = on_connection
        self._first_attempt: asyncio.Future[ReservationInfo] = (
            asyncio.get_running_loop().create_future())
        self._task = asyncio.ensure_future(self._keep())

    def _set_addrs(self, addrs: list[Multiaddr]) -> None:
        if addrs != self.addrs:
            self.addrs = addrs
            self.host.events.emit(ListenAddrsChanged())

    async def _keep(self) -> None:
        backoff = BACKOFF_INITIAL
        unreachable_since: float | None = None
        while True:
            conn = None
            try:
                conn = await self.host.dial(self.relay_addr)
                self.host.events.emit(RelayConnected(self.relay_peer, conn))
                await self._identified(conn)
                while not conn.is_closed:
                    info = await reserve(conn, self.transport.agent_of(self.relay_peer))
                    self.reservation = info
                    self.transport.accept_relayed(info, self._on_connection)
                    relay_addrs = info.addrs or [conn.remote_addr.with_peer_id(info.relay)]
                    self._set_addrs([a.encapsulate("/p2p-circuit") for a in relay_addrs])
                    log.info("reservation on relay %s until %s", info.relay,
                             time.strftime("%H:%M:%S", time.localtime(info.expires)))
                    self.host.events.emit(ReservationMade(info))
                    if not self._first_attempt.done():
                        self._first_attempt.set_result(info)
                    backoff, unreachable_since = BACKOFF_INITIAL, None
                    ttl = info.expires - time.time()
                    wait = max(1.0, min(ttl - REFRESH_MARGIN, ttl / 2))
                    try:
                        await asyncio.wait_for(conn.wait_closed(), wait)
                    except TimeoutError:
                        continue  # time to refresh on the same connection
                reason = conn.close_reason or "connection closed"
                if self.host.closing:
                    return  # we are shutting down: nothing was lost
                log.warning("lost the connection to relay %s (%s); reserving again",
                            self.relay_peer, reason)
                self.host.events.emit(ReservationLost(self.relay_peer, reason))
            except asyncio.CancelledError:
                raise
            except (P2PError, OSError, TimeoutError) as e:
                msg = str(e) or type(e).__name__
                # one warning (and event) per outage while retrying fast, then each time
                quiet = (unreachable_since is not None and (conn is None or conn.is_closed)
                         and time.monotonic() - unreachable_since < FAST_RETRY_WINDOW)
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "reservation on %s failed: %s (retrying)", self.relay_addr, msg)
                if not quiet:
                    self.host.events.emit(RelayError(self.relay_addr, msg))
                if not self._first_attempt.done():
                    self._first_attempt.set_exception(DialError(msg))
                    self._first_attempt.exception()
            self.transport.stop_accepting(self.relay_peer)
            self.reservation = None
            self._set_addrs([])
            # Retry timer (not synchronisation): FAST_RETRY while the relay is unreachable
            # (FAST_RETRY_WINDOW at most), else jittered exponential backoff.
            now = time.monotonic()
            unreachable_since = now if unreachable_since is None else unreachable_since
            if (conn is None or conn.is_closed) and now - unreachable_since < FAST_RETRY_WINDOW:
                delay = FAST_RETRY
            else:
                delay, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            await asyncio.sleep(delay * (0.75 + random.random() / 2))

    async def reserved(self, timeout: float | None = None) -> ReservationInfo:
        """The first reservation; raises DialError if the first attempt failed (the listener
        keeps retrying in the background either way)."""
        return await asyncio.wait_for(asyncio.shield(self._first_attempt), timeout)

    async def _identified(self, conn: Connection) -> None:
        """Let identify finish first, as js does: a rust relay only serves hop once identify has
        given it an external address, and a relay that does not serve hop at all is worth a
        clear error rather than a failed negotiation."""
        try:
            info = await self.host.identified(conn)
        except (P2PError, TimeoutError):
            return  # reserve anyway: the hop request itself will tell
        if info is None or not info.protocols or hop.HOP in info.protocols:
            return
        # rust's relay adds hop once it learns an external address (from our identify) and
        # then pushes its new protocol list: give that push a moment.
        try:
            await self.host.events.wait_for(
                Identified, lambda e: e.connection is conn and hop.HOP in e.info.protocols,
                timeout=HOP_ANNOUNCE_WAIT)
        except TimeoutError:
            raise DialError(f"{self.relay_addr} does not offer circuit relay v2 "
                            f"({hop.HOP})") from None

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.relay_peer is not None:
            self.transport.stop_accepting(self.relay_peer)


class CircuitTransport(Transport):
    name = "circuit"

    def __init__(self, host: Network) -> None:
        self.host = host
        # relay -> (our reservation there, where its relayed connections go)
        self._accepting: dict[PeerId, tuple[ReservationInfo, ConnectionHandler]] = {}
        host.handle(hop.STOP, self._handle_stop)

    def accept_relayed(self, info: ReservationInfo, on_connection: ConnectionHandler) -> None:
        """Accept stop requests (relayed connections) from `info.relay`, for `on_connection`."""
        self._accepting[info.relay] = (info, on_connection)

    def stop_accepting(self, relay: PeerId | None) -> None:
        if relay is not None:
            self._accepting.pop(relay, None)

    def can_dial(self, addr: Multiaddr) -> bool:
        protos = addr.protocols()
        if "p2p-circuit" not in protos:
            return False
        after = protos[len(protos) - 1 - protos[::-1].index("p2p-circuit") + 1:]
        return after == ["p2p"]

    def can_listen(self, addr: Multiaddr) -> bool:
        protos = addr.protocols()
        return len(protos) > 1 and protos[-1] == "p2p-circuit" and "p2p" in protos

    async def dial(self, addr: Multiaddr) -> Connection:
        relay_addr, relay_peer, rest = split_circuit(addr)
        dst = rest.peer_id()
        if relay_peer is None or dst is None:
            raise DialError(f"circuit address needs /p2p/<relay>/p2p-circuit/p2p/<peer>: {addr}")
        return await self.dial_via(relay_addr, dst)

    async def dial_via(self, relay_addr: Multiaddr, dst: PeerId) -> Connection:
        """Open a relayed connection to `dst` through the relay at `relay_addr` (with /p2p/)."""
        relay_peer = relay_addr.peer_id()
        if relay_peer is None:
            raise DialError(f"relay address needs /p2p/<relay>: {relay_addr}")
        relay_conn = await self.host.dial(relay_addr)
        stream = None
        try:
            async with asyncio.timeout(HOP_TIMEOUT):
                stream = await relay_conn.new_stream([hop.HOP])
                req = HopMessage(type=HopMessage.CONNECT)
                req.peer.id = dst.to_bytes()
                await hop.write_message(stream, req)
                reply = await hop.read_message(stream, HopMessage)
        except BaseException as e:
            # reset, so that the relay keeps no circuit for us (e.g. a raced dial that lost)
            if stream is not None:
                stream.reset()
            if isinstance(e, TimeoutError):
                raise DialError(f"relay {relay_peer} did not answer the circuit request") from None
            if isinstance(e, (ProtocolError, StreamClosed)):
                raise DialError(f"circuit request to relay {relay_peer} failed: {e}") from None
            raise
        if reply.type != HopMessage.STATUS or reply.status != hop.OK:
            stream.reset()
            raise DialError(f"relay {relay_peer} could not connect us to {dst}: "
                            f"{hop.status_name(reply.status)}")
        limit = reply.limit if reply.HasField("limit") else None
        base = relay_addr.with_peer_id(relay_peer).encapsulate("/p2p-circuit")
        stream.connection = relay_conn
        raw = CircuitStream(stream, base.encapsulate(f"/p2p/{self.host.peer_id}"),
                            base.encapsulate(f"/p2p/{dst}"),
                            _meter(limit, self.agent_of(relay_peer)))
        conn = await self.host.upgrader.upgrade_outbound(raw, dst, "circuit",
                                                         limited=is_limited(limit))
        _note_limit(conn, limit, raw)
        return conn

    def agent_of(self, relay: PeerId | None) -> str | None:
        """The relay's agent version (from identify), if known."""
        info = self.host.peerstore.peek(relay) if relay is not None else None
        return info.agent_version if info is not None else None

    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener:
        relay_addr = addr.decapsulate("p2p-circuit")
        if relay_addr.peer_id() is None:
            raise DialError(f"relay address needs /p2p/<relay id>: {addr}")
        return CircuitListener(self, relay_addr, on_connection)

    async def _handle_stop(self, stream: Stream) -> None:
        relay_conn = stream.connection
        assert relay_conn is not None  # set by Connection.accept_stream
        try:
            msg = await hop.read_message(stream, StopMessage)
        except hop.MalformedMessage as e:
            log.info("malformed stop message from relay %s: %s", relay_conn.remote_peer, e)
            await _stop_status(stream, hop.MALFORMED_MESSAGE)
            return
        if msg.type != StopMessage.CONNECT:
            await _stop_status(stream, hop.UNEXPECTED_MESSAGE)
            return
        accepting = self._accepting.get(relay_conn.remote_peer)
        if accepting is None:
            log.info("refusing a relayed connection from %s: no reservation there",
                     relay_conn.remote_peer)
            await _stop_status(stream, hop.PERMISSION_DENIED)
            return
        try:
            src = hop.peer_of(msg)
        except hop.MalformedMessage:
            await _stop_status(stream, hop.MALFORMED_MESSAGE)
            return
        await hop.write_message(stream, StopMessage(type=StopMessage.STATUS, status=hop.OK))
        limit = msg.limit if msg.HasField("limit") else None
        base = relay_conn.remote_addr.with_peer_id(relay_conn.remote_peer).encapsulate("/p2p-circuit")
        raw = CircuitStream(stream, base.encapsulate(f"/p2p/{self.host.peer_id}"),
                            base.encapsulate(f"/p2p/{src}"),
                            _meter(limit, self.agent_of(relay_conn.remote_peer)))
        conn = await self.host.upgrader.upgrade_inbound(raw, "circuit", limited=is_limited(limit))
        if conn.remote_peer != src:
            log.warning("relayed connection claimed to be from %s but authenticated as %s",
                        src, conn.remote_peer)
            await conn.close()
            return
        _note_limit(conn, limit, raw)
        await accepting[1](conn)


def _meter(limit: circuit_pb2.Limit | None, relay_agent: str | None) -> CircuitMeter:
    """Started before the upgrade: the relay counts the handshake bytes too (the listener's
    clock starts before the relay's, the dialer's up to one round trip after it)."""
    return CircuitMeter(limit_seconds(limit.duration, relay_agent) if limit is not None else 0,
                        limit.data if limit is not None else 0, started=time.monotonic())


def _note_limit(conn: Connection, limit: circuit_pb2.Limit | None, raw: CircuitStream) -> None:
    meter = raw.meter
    if limit is not None:
        conn.details.limit = RelayLimit(meter.duration, limit.data)  # seconds, bytes
    conn.limit_meter = meter
    relay_conn = raw.relay_connection
    session = getattr(conn.muxer, "session", None)  # the YamuxSession
    if session is not None:
        # written by the application, not yet handed to the circuit: counts all the same
        meter.queued = lambda: session.pending_bytes

    def explain_end(low_level: str) -> str:
        # yamux: did the peer say goodbye (GoAway normal) before the end?
        return meter.end_reason(
            low_level, time.monotonic(), relay_gone=relay_conn.is_closed,
            peer_left=getattr(session, "remote_go_away", None) == GO_AWAY_NORMAL)

    conn.explain_end = explain_end


async def _stop_status(stream: Stream, code: Status) -> None:
    try:
        await hop.write_message(stream, StopMessage(type=StopMessage.STATUS, status=code))
        await stream.close()
    except P2PError:
        stream.reset()
