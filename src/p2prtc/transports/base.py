"""The transport interface.

A transport dials and listens on the multiaddrs it understands and hands back upgraded
`Connection`s. It is made from the host's `network.Network` (a transport class is a factory
`Network -> Transport`) and uses only that. `dial` returns the connection (the host tracks it);
every inbound connection goes to the `on_connection` given to `listen`, and nowhere else.
Byte-stream transports (TCP, WebSocket, circuits) produce a `RawConnection` and let the
`Upgrader` add Noise and yamux; WebRTC brings its own security and muxing and builds the
`Connection` itself.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..multiaddr import Multiaddr
from ..streams import ByteStream

if TYPE_CHECKING:
    from ..connection import Connection


class RawConnection(ByteStream):
    """A byte stream between two transport endpoints, not yet secured or multiplexed."""

    local_addr: Multiaddr
    remote_addr: Multiaddr
    transport_name: str = "?"


class Listener(abc.ABC):
    addrs: list[Multiaddr]

    @abc.abstractmethod
    async def close(self) -> None: ...


ConnectionHandler = Callable[["Connection"], Awaitable[None]]


class Transport(abc.ABC):
    name: str

    @abc.abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool: ...

    def can_listen(self, addr: Multiaddr) -> bool:
        return self.can_dial(addr)

    @abc.abstractmethod
    async def dial(self, addr: Multiaddr) -> Connection: ...

    @abc.abstractmethod
    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener: ...

    async def close(self) -> None:  # noqa: B027 - an optional hook: a no-op unless overridden
        """Release shared resources (client sessions); listeners are closed by the host."""
