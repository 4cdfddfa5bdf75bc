"""Host: our libp2p node. Transports, upgrader, protocol router, connections, peer store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import AGENT_VERSION
from .connection import Connection
from .errors import DialError, P2PError, StreamClosed
from .events import (ConnectionClosed, ConnectionOpened, EventBus, ListenAddrsChanged,
                     ProtocolsChanged)
from .identity import Identity, PeerId
from .multiaddr import Multiaddr
from .network import L, StreamHandler, TransportFactory
from .peerstore import PeerInfo, PeerStore
from .streams import Stream
from .transports.base import Listener, Transport
from .upgrader import Upgrader

if TYPE_CHECKING:
    from .protocols.identify import IdentifyService
    from .transports.circuit import ReservationInfo

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 20.0
T = TypeVar("T", bound=Transport)


def default_transports() -> list[TransportFactory]:
    """TCP, WebSocket, webrtc-direct and the circuit relay client: what `Host()` has."""
    from .transports.circuit import CircuitTransport
    from .transports.tcp import TcpTransport
    from .transports.webrtc_direct import WebRTCDirectTransport
    from .transports.websocket import WebSocketTransport

    return [TcpTransport, WebSocketTransport, WebRTCDirectTransport, CircuitTransport]


@dataclass
class _Handler:
    fn: StreamHandler
    allow_limited: bool


class Host:
    """A libp2p node; implements `network.Network` for its transports and services.

    `transports`: factories `Network -> Transport`, tried in order for each dial and listen
    address (default: `default_transports()`). Events: `host.events.on(EventType, cb)` with the
    dataclasses of `p2prtc.events`.
    """

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        transports: Sequence[TransportFactory] | None = None,
        agent_version: str = AGENT_VERSION,
        announce: Iterable[Multiaddr | str] = (),
        identify: bool = True,
    ) -> None:
        self.identity = identity or Identity.generate()
        self.peer_id: PeerId = self.identity.peer_id
        self.agent_version = agent_version
        self.peerstore = PeerStore()
        self.events = EventBus()
        self.upgrader = Upgrader(self.identity)
        self.announce_addrs: list[Multiaddr] = [Multiaddr(a) for a in announce]
        self.observed_addrs: list[Multiaddr] = []  # how others see us, via identify
        self._listeners: list[Listener] = []
        self._handlers: dict[str, _Handler] = {}
        self._conns: dict[PeerId, list[Connection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.identify: IdentifyService | None = None
        from .protocols.ping import PingService
        self.ping_service = PingService(self)
        if identify:
            from .protocols.identify import IdentifyService
            self.identify = IdentifyService(self)
        factories = default_transports() if transports is None else transports
        self.transports: list[Transport] = [make(self) for make in factories]

    # -- addresses -----------------------------------------------------------------------------

    def transport(self, kind: type[T]) -> T:
        """Our transport of this type (e.g. `host.transport(CircuitTransport)`)."""
        found = next((t for t in self.transports if isinstance(t, kind)), None)
        if found is None:
            raise P2PError(f"this host has no {kind.__name__}")
        return found

    async def listen(self, *addrs: Multiaddr | str) -> list[Multiaddr]:
        bound: list[Multiaddr] = []
        for a in addrs:
            bound.extend((await self._listen_one(Multiaddr(a))).addrs)
        self.events.emit(ListenAddrsChanged())
        return bound

    async def _listen_one(self, addr: Multiaddr) -> Listener:
        transport = next((t for t in self.transports if t.can_listen(addr)), None)
        if transport is None:
            raise P2PError(f"no transport can listen on {addr}")
        listener = await transport.listen(addr, self._on_inbound_connection)
        self._listeners.append(listener)
        return listener

    def listeners(self, kind: type[L]) -> list[L]:
        """Our open listeners of one type, e.g. `host.listeners(CircuitListener)`."""
        return [lis for lis in self._listeners if isinstance(lis, kind)]

    async def stop_listening(self, listener: Listener) -> None:
        """Close one of our listeners (e.g. a `CircuitListener`: its reservation is no longer
        kept); its addresses leave listen_addrs."""
        if listener in self._listeners:
            self._listeners.remove(listener)
            await listener.close()
            self.events.emit(ListenAddrsChanged())

    async def listen_via_relay(self, relay_addr: Multiaddr | str,
                               timeout: float = 20.0) -> ReservationInfo:
        """Reserve on a relay (`<relay>/p2p/<id>`) and keep the reservation alive; returns the
        first ReservationInfo. Our `<relay>/p2p-circuit` addresses join listen_addrs."""
        from .transports.circuit import CircuitListener

        listener = await self._listen_one(Multiaddr(relay_addr).encapsulate("/p2p-circuit"))
        self.events.emit(ListenAddrsChanged())
        assert isinstance(listener, CircuitListener)
        return await listener.reserved(timeout)

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        return [a for listener in self._listeners for a in listener.addrs]

    def addrs(self) -> list[Multiaddr]:
        """The addresses we advertise: announced ones if any, else what we listen on."""
        if self.announce_addrs:
            return list(self.announce_addrs)
        return list(dict.fromkeys(self.listen_addrs))

    def add_observed_addr(self, addr: Multiaddr) -> None:
        if addr not in self.observed_addrs:
            self.observed_addrs.append(addr)
            del self.observed_addrs[:-8]

    # -- protocols -----------------------------------------------------------------------------

    def handle(self, protocol: str, handler: StreamHandler, *, allow_limited: bool = False) -> None:
        """handler(stream) runs for each inbound stream negotiated to `protocol`; `stream.connection`
        is its Connection. Handlers run on limited (relayed) connections only if allowed."""
        self._handlers[protocol] = _Handler(handler, allow_limited)
        self.events.emit(ProtocolsChanged())

    @property
    def protocols(self) -> list[str]:
        return list(self._handlers)

    # -- connections ---------------------------------------------------------------------------

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        if peer is not None:
            return list(self._conns.get(peer, ()))
        return [c for conns in self._conns.values() for c in conns]

    def best_connection(self, peer: PeerId, *, allow_limited: bool = False) -> Connection | None:
        # not one going away: a new stream on it would fail ("remote yamux session is going away")
        conns = [c for c in self._conns.get(peer, ()) if not c.going_away]
        unlimited = [c for c in conns if not c.limited]
        if unlimited:
            return unlimited[-1]
        if allow_limited and conns:
            return conns[-1]
        return None

    async def dial(self, addr: Multiaddr | str, *, timeout: float = DIAL_TIMEOUT) -> Connection:
        addr = Multiaddr(addr)
        peer = addr.peer_id()
        if peer == self.peer_id:
            raise DialError("refusing to dial ourselves")
        if peer is not None:
            existing = self.best_connection(peer)
            if existing is not None:
                return existing
        transport = next((t for t in self.transports if t.can_dial(addr)), None)
        if transport is None:
            raise DialError(f"no transport can dial {addr}")
        try:
            async with asyncio.timeout(timeout):
                conn = await transport.dial(addr)
        except TimeoutError:
            raise DialError(f"dialing {addr} timed out after {timeout:.0f} s") from None
        if peer is not None and conn.remote_peer != peer:
            await conn.close()
            raise DialError(f"{addr} is peer {conn.remote_peer}, not the one we dialed")
        if not conn.limited:
            self.peerstore.add_addrs(conn.remote_peer, [addr])
        self.add_connection(conn)
        return conn

    async def connect(self, peer: PeerId, *, allow_limited: bool = False) -> Connection:
        """A connection to `peer`: an existing one, else a dial of each known address."""
        conn = self.best_connection(peer, allow_limited=allow_limited)
        if conn is not None:
            return conn
        info = self.peerstore.peek(peer)
        errors: list[str] = []
        for addr in list(info.addrs if info else ()):
            try:
                return await self.dial(addr.with_peer_id(peer))
            except DialError as e:
                errors.append(str(e))
        raise DialError(f"cannot reach {peer}: " + ("; ".join(errors) or "no known addresses"))

    async def new_stream(self, target: PeerId | Connection | Multiaddr | str,
                         protocols: Sequence[str] | str, *, allow_limited: bool = False) -> Stream:
        if isinstance(protocols, str):
            protocols = [protocols]
        if isinstance(target, Connection):
            conn = target
        elif isinstance(target, PeerId):
            conn = await self.connect(target, allow_limited=allow_limited)
        else:
            conn = await self.dial(target)
        if conn.limited and not allow_limited:
            raise StreamClosed(f"connection to {conn.remote_peer} is limited (relayed); "
                               "this protocol is not allowed on it")
        return await conn.new_stream(protocols)

    def add_connection(self, conn: Connection) -> None:
        """Track `conn` until it closes and serve its inbound streams; dials do it, and the
        `on_connection` callback given to every `Transport.listen`."""
        if self._closed:
            self.spawn(conn.close())
            return
        if conn in self._conns.get(conn.remote_peer, ()):
            return
        self._conns.setdefault(conn.remote_peer, []).append(conn)
        def on_stream(stream: Stream) -> None:
            self.spawn(self._handle_inbound_stream(conn, stream))

        conn.start(on_stream)
        log.debug("connection opened: %r", conn)
        self.events.emit(ConnectionOpened(conn))
        self.spawn(self._watch_connection(conn))

    async def _on_inbound_connection(self, conn: Connection) -> None:
        self.add_connection(conn)

    async def identified(self, conn: Connection) -> PeerInfo | None:
        if self.identify is None:
            return None
        return await self.identify.identified(conn)

    async def _watch_connection(self, conn: Connection) -> None:
        try:
            await conn.wait_closed()
        finally:
            conns = self._conns.get(conn.remote_peer)
            if conns and conn in conns:
                conns.remove(conn)
                if not conns:
                    del self._conns[conn.remote_peer]
            log.debug("connection closed: %r (%s)", conn, conn.close_reason)
            self.events.emit(ConnectionClosed(conn))

    async def _handle_inbound_stream(self, conn: Connection, stream: Stream) -> None:
        def supports(proto: str) -> bool:
            h = self._handlers.get(proto)
            return h is not None and (h.allow_limited or not conn.limited)

        proto = await conn.accept_stream(stream, supports)
        if proto is None:
            return
        handler = self._handlers[proto]
        try:
            await handler.fn(stream)
        except (P2PError, OSError) as e:
            log.info("%s stream from %s ended: %s", proto, conn.remote_peer.short(), e)
            stream.reset()
        except asyncio.CancelledError:
            stream.reset()
            raise
        except Exception:
            log.exception("%s handler failed", proto)
            stream.reset()

    # -- tasks and shutdown --------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once close() has begun."""
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, (P2PError, OSError)):
                log.info("background task ended: %s", exc)
            else:
                log.error("background task failed", exc_info=exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Connections first: a WebSocket listener waits for its open connections to end.
        # Relayed ones before the rest: they ride on a relay connection, and their goodbye
        # (yamux GoAway) must leave before it goes, so the peer reads it as "the peer left".
        conns = self.connections()
        relayed = [c for c in conns if c.transport == "circuit"]
        await asyncio.gather(*(c.close() for c in relayed), return_exceptions=True)
        await asyncio.gather(*(c.close() for c in conns if c not in relayed),
                             return_exceptions=True)
        for listener in self._listeners:
            try:
                await listener.close()
            except Exception:
                log.debug("closing listener failed", exc_info=True)
        self._listeners.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self.transports:
            await t.close()

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


if TYPE_CHECKING:
    from .network import Network

    def _implements_network(host: Host) -> Network:
        return host  # mypy checks here that Host satisfies the Network protocol
