"""The Host's internal events (one frozen dataclass each) and a tiny typed event bus:
synchronous callbacks plus awaitable waits (no polling).

    host.events.on(ConnectionOpened, lambda e: print(e.connection))
    event = await host.events.wait_for(Identified, lambda e: e.connection is conn, timeout=5)

These are internal (transports, services, the Node's tracker, apps); the public API's events
are `p2prtc.api_events`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .connection import Connection
    from .identity import PeerId
    from .multiaddr import Multiaddr
    from .nat import NatBehaviour
    from .peerstore import PeerInfo
    from .transports.circuit import ReservationInfo

log = logging.getLogger(__name__)

E = TypeVar("E")


# -- connections (host.py) ---------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectionOpened:
    """A connection (dialled or accepted) is tracked by the host."""
    connection: Connection


@dataclass(frozen=True)
class ConnectionClosed:
    """A tracked connection has ended (`connection.end_reason` says why)."""
    connection: Connection


@dataclass(frozen=True)
class ListenAddrsChanged:
    """Our listen addresses changed (a listener opened, a reservation came or went)."""


@dataclass(frozen=True)
class ProtocolsChanged:
    """A protocol handler was registered."""


# -- identify (protocols/identify.py) ----------------------------------------------------------

@dataclass(frozen=True)
class Identified:
    """Identify (or an identify push) on `connection` told us about its peer."""
    peer: PeerId
    info: PeerInfo
    connection: Connection


# -- the relay client (transports/circuit.py) --------------------------------------------------

@dataclass(frozen=True)
class RelayConnected:
    """A circuit listener has a connection to its relay (before reserving)."""
    relay: PeerId | None
    connection: Connection


@dataclass(frozen=True)
class ReservationMade:
    """A reservation was granted or refreshed."""
    info: ReservationInfo


@dataclass(frozen=True)
class ReservationLost:
    """The connection to a relay we held a reservation on closed; reserving again."""
    relay: PeerId | None
    reason: str


@dataclass(frozen=True)
class RelayError:
    """Reaching or reserving on a relay failed; retrying with backoff."""
    relay_addr: Multiaddr
    reason: str


# -- WebRTC (transports/webrtc/transport.py) ---------------------------------------------------

@dataclass(frozen=True)
class HostWarning:
    """Something worth telling the user that is no failure (a STUN/TURN server that did not
    help, ...)."""
    reason: str


@dataclass(frozen=True)
class WebRTCFailed:
    """An inbound /webrtc upgrade (signaling, ICE) from `peer` failed."""
    peer: PeerId
    reason: str


@dataclass(frozen=True)
class PathChanged:
    """ICE moved a WebRTC connection to another candidate pair (`connection.details`)."""
    connection: Connection


# -- NAT (protocols/natinfo.py) ----------------------------------------------------------------

@dataclass(frozen=True)
class NatDetected:
    """Our own NAT behaviour, once detected."""
    behaviour: NatBehaviour


@dataclass(frozen=True)
class NatPeerLearned:
    """What a peer told us of its NAT; `ruled_out` says why no direct path can exist, or None."""
    peer: PeerId
    behaviour: NatBehaviour
    ruled_out: str | None


class EventBus:
    """Callbacks keyed by event type; `emit(event)` calls those of `type(event)` in order."""

    def __init__(self) -> None:
        self._subs: dict[type[Any], list[Callable[[Any], None]]] = defaultdict(list)

    def on(self, kind: type[E], callback: Callable[[E], None]) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        if not isinstance(kind, type):  # the event names of old were strings
            raise TypeError(f"subscribe to an event class of p2prtc.events, not {kind!r}")
        subs = self._subs[kind]
        subs.append(callback)

        def off() -> None:
            if callback in subs:
                subs.remove(callback)
        return off

    def emit(self, event: object) -> None:
        for cb in list(self._subs.get(type(event), ())):
            try:
                cb(event)
            except Exception:
                log.exception("event handler for %s failed", type(event).__name__)

    async def wait_for(self, kind: type[E], predicate: Callable[[E], bool] = lambda e: True,
                       timeout: float | None = None) -> E:
        """The next event of `kind` that passes `predicate`; TimeoutError after `timeout`."""
        fut: asyncio.Future[E] = asyncio.get_running_loop().create_future()

        def cb(event: E) -> None:
            if not fut.done() and predicate(event):
                fut.set_result(event)

        off = self.on(kind, cb)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            off()
