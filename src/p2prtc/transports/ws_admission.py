"""Admission for the WebSocket listener's HTTP phase.

aiohttp waits for a request's headers with no deadline (its keep-alive timeout is 3630 s), so a
client that sends its upgrade request a byte at a time (slowloris) would hold its socket for an
hour. `AdmittingServer` takes each accepted TCP connection's transient reservation from the
resource manager (refused: the socket is closed at once, nothing read) and gives it
`WS_UPGRADE_TIMEOUT` to become a WebSocket; the listener then hands the reservation to the
upgrader, whose `UPGRADE_TIMEOUT` covers Noise and yamux.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..resources import ConnectionScope, Refusal

if TYPE_CHECKING:
    from ..upgrader import Upgrader

log = logging.getLogger(__name__)

# From TCP accept to a WebSocket: as our dialer's WS_CONNECT_TIMEOUT (nginx gives request
# headers 60 s, client_header_timeout; an honest client sends them in one packet).
WS_UPGRADE_TIMEOUT = 10.0


class AdmittingServer(web.Server):
    """aiohttp's low-level server with a budget and a deadline per connection until upgrade."""

    def __init__(self, handler: Any, *, upgrader: Upgrader, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._upgrader = upgrader
        self._pending: dict[RequestHandler, tuple[ConnectionScope, asyncio.TimerHandle]] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
        result = self._upgrader.resources.open_connection("inbound", ip)
        loop = asyncio.get_running_loop()
        if isinstance(result, Refusal):
            line = self._upgrader.resources.log_line(f"WebSocket connection from {ip} refused",
                                                     result)
            if line is not None:
                log.info("%s", line)
            # Not at once: aiohttp starts the handler's task right after this returns, and that
            # task asserts the connection is still there.
            loop.call_soon(transport.abort)
            return
        timer = loop.call_later(WS_UPGRADE_TIMEOUT, self._expire, handler, transport, ip)
        self._pending[handler] = (result, timer)

    def _expire(self, handler: RequestHandler, transport: asyncio.Transport,
                ip: str | None) -> None:
        entry = self._pending.pop(handler, None)
        if entry is not None:
            entry[0].close()
            log.info("WebSocket connection from %s: no upgrade within %.0f s, closed", ip,
                     WS_UPGRADE_TIMEOUT)
            transport.abort()

    def take_scope(self, request: web.BaseRequest) -> ConnectionScope | None:
        """The reservation of the request's connection, now the upgrader's (its deadline
        lifted: the upgrader's own timeout takes over)."""
        entry = self._pending.pop(request.protocol, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        entry = self._pending.pop(handler, None)
        if entry is not None:
            entry[1].cancel()
            entry[0].close()
        super().connection_lost(handler, exc)
