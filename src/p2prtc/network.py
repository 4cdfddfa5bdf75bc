"""The internal contract between the Host and what runs on it (issue 16).

Transports (tcp, websocket, circuit, webrtc, webrtc-direct) and services (identify, ping, the
relay's hop service, natinfo, turn-credentials, chat, file transfer, ...) are given a `Network`
and use nothing else of the Host: register a protocol handler, dial, open a stream, spawn a
background task, subscribe to or emit events (`p2prtc.events`). A transport hands every inbound
connection to the `on_connection` callback it got in `Transport.listen` (which calls
`add_connection`); nothing reaches into the Host's attributes.

`Host` implements it; `Host(identity, transports=[...])` takes factories `Network -> Transport`
(a transport class is one), as js-libp2p's `createLibp2p({transports: [tcp(), ...]})`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .connection import Connection
    from .events import EventBus
    from .identity import Identity, PeerId
    from .multiaddr import Multiaddr
    from .peerstore import PeerInfo, PeerStore
    from .streams import Stream
    from .transports.base import Listener, Transport
    from .upgrader import Upgrader

L = TypeVar("L", bound="Listener")

StreamHandler = Callable[["Stream"], Awaitable[None]]
"""Runs for each inbound stream negotiated to its protocol; `stream.connection` is set."""

TransportFactory = Callable[["Network"], "Transport"]
"""What `Host(transports=[...])` takes: a transport class, or e.g. `functools.partial` of one."""


class Network(Protocol):
    """What a transport or a service may use of the Host."""

    @property
    def identity(self) -> Identity: ...
    @property
    def peer_id(self) -> PeerId: ...
    @property
    def agent_version(self) -> str: ...
    @property
    def peerstore(self) -> PeerStore: ...
    @property
    def upgrader(self) -> Upgrader: ...
    @property
    def events(self) -> EventBus: ...

    @property
    def closing(self) -> bool:
        """True once `close()` has begun: losing a connection then is no failure."""
        ...

    # -- protocols
    def handle(self, protocol: str, handler: StreamHandler, *,
               allow_limited: bool = False) -> None:
        """Run `handler(stream)` for each inbound stream negotiated to `protocol`; on limited
        (relayed) connections only if `allow_limited`."""
        ...

    @property
    def protocols(self) -> list[str]: ...

    # -- connections
    async def dial(self, addr: Multiaddr | str, *, timeout: float = ...) -> Connection: ...

    async def new_stream(self, target: PeerId | Connection | Multiaddr | str,
                         protocols: Sequence[str] | str, *,
                         allow_limited: bool = False) -> Stream: ...

    def connections(self, peer: PeerId | None = None) -> list[Connection]: ...

    def best_connection(self, peer: PeerId, *,
                        allow_limited: bool = False) -> Connection | None: ...

    def add_connection(self, conn: Connection) -> None:
        """Track a new connection (dialled or accepted) and serve its inbound streams."""
        ...

    async def identified(self, conn: Connection) -> PeerInfo | None:
        """What identify learned on `conn` once it has run (None without identify); raises
        P2PError or TimeoutError when it failed."""
        ...

    # -- addresses
    def addrs(self) -> list[Multiaddr]:
        """The addresses we advertise."""
        ...

    @property
    def listen_addrs(self) -> list[Multiaddr]: ...
    @property
    def announce_addrs(self) -> list[Multiaddr]: ...
    @property
    def observed_addrs(self) -> list[Multiaddr]: ...

    def add_observed_addr(self, addr: Multiaddr) -> None: ...

    def listeners(self, kind: type[L]) -> list[L]:
        """Our open listeners of one type (e.g. `CircuitListener`)."""
        ...

    # -- tasks
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task that ends (is cancelled) when the host closes."""
        ...
