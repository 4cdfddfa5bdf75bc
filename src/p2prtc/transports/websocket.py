"""WebSocket transport: <tcp address>/ws, /wss, /tls/ws, /tls/sni/NAME/ws (dial), /ws and, with a
server certificate (`server_tls`), /tls/ws (listen), via aiohttp.

TLS: a listener's certificate comes from a `tls.ReloadingCertificate` (renewals are picked up
without a restart); dialers verify the server against `client_ssl` (default: the system store and
SSL_CERT_FILE). `/sni/NAME` names the host the certificate is checked against; without it, the
dns/ip component is.

libp2p over WebSocket sends binary frames carrying the raw connection bytes (Noise, yamux on
top); frame boundaries mean nothing. WebSocket has no half-close, so close_write closes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ..errors import DialError, StreamClosed, StreamReset
from ..multiaddr import Multiaddr
from ..netutil import expand_unspecified
from .base import ConnectionHandler, Listener, RawConnection, Transport
from .tcp import IP_PROTOCOLS, LISTEN_BACKLOG, host_port, sockaddr_to_multiaddr
from .ws_admission import AdmittingServer

if TYPE_CHECKING:
    from ..connection import Connection
    from ..network import Network
    from .tls import ReloadingCertificate

log = logging.getLogger(__name__)

# Largest WebSocket message we accept; peers send one Noise frame (<= 64 KiB) or a few per message.
MAX_MESSAGE_SIZE = 4 << 20
WS_CONNECT_TIMEOUT = 10.0


class WebSocketStream(RawConnection):
    transport_name = "ws"

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                 local_addr: Multiaddr, remote_addr: Multiaddr,
                 transport: asyncio.Transport | None = None) -> None:
        self._ws = ws
        self._transport = transport  # the TCP transport under it (reset aborts it), if known
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.closed = asyncio.Event()

    async def read(self, n: int = 65536) -> bytes:
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                self._buf, self._pos = msg.data, 0
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self._buf, self._pos = msg.data.encode(), 0
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED):
                self._eof = True
                self.closed.set()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                self._eof = True
                self.closed.set()
                raise StreamReset(f"WebSocket error: {self._ws.exception()}")
        start = self._pos
        end = min(start + n, len(self._buf))
        self._pos = end
        if start == 0 and end == len(self._buf):
            return self._buf
        return self._buf[start:end]

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._ws.closed:
            raise StreamClosed("WebSocket is closed")
        try:
            await self._ws.send_bytes(bytes(data))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as e:
            raise StreamClosed(f"WebSocket write failed: {e}") from None

    async def close_write(self) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(), 5)
            except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
        self.closed.set()

    def reset(self) -> None:
        self._eof = True
        self.closed.set()
        transport = self._transport
        if transport is None and isinstance(self._ws, aiohttp.ClientWebSocketResponse):
            # aiohttp has no public handle on a client WebSocket's transport (only
            # get_extra_info); its response's connection is the one way to abort it.
            conn = getattr(getattr(self._ws, "_response", None), "connection", None)
            transport = conn.transport if conn is not None else None
        if transport is not None:
            transport.abort()
        else:
            asyncio.ensure_future(self.close())


def ws_url(addr: Multiaddr) -> tuple[str, int, int, bool]:
    """(host, port, family, secure) of a /ws or /wss multiaddr (also /tls/ws)."""
    base = addr.without_peer_id()
    protos = base.protocols()
    secure = protos[-1] == "wss" or (protos[-1] == "ws" and "tls" in protos)
    host, port, family = host_port(base)
    return host, port, family, secure


class WebSocketListener(Listener):
    def __init__(self, runner: web.BaseRunner, addrs: list[Multiaddr]) -> None:
        self._runner = runner
        self.addrs = addrs

    async def close(self) -> None:
        await self._runner.cleanup()


class WebSocketTransport(Transport):
    name = "ws"

    def __init__(self, network: Network, *,
                 server_tls: ReloadingCertificate | None = None,
                 client_ssl: ssl.SSLContext | None = None) -> None:
        self.upgrader = network.upgrader
        # Public: set by the relay (`--tls-cert`) and the peers (`--tls-ca`) before listen/dial.
        self.server_tls = server_tls
        self.client_ssl = client_ssl
        self._session: aiohttp.ClientSession | None = None

    def can_dial(self, addr: Multiaddr) -> bool:
        protos = addr.without_peer_id().protocols()
        if len(protos) < 3 or protos[0] not in IP_PROTOCOLS or protos[1] != "tcp":
            return False
        rest = protos[2:]
        return rest in (["ws"], ["wss"], ["tls", "ws"], ["tls", "sni", "ws"])

    def can_listen(self, addr: Multiaddr) -> bool:
        protos = addr.without_peer_id().protocols()
        if len(protos) < 3 or protos[0] not in ("ip4", "ip6") or protos[1] != "tcp":
            return False
        if protos[2:] == ["ws"]:
            return True
        return self.server_tls is not None and protos[2:] in (["tls", "ws"], ["wss"])

    async def dial(self, addr: Multiaddr) -> Connection:
        host, port, _family, secure = ws_url(addr)
        hostpart = f"[{host}]" if ":" in host else host
        url = f"{'wss' if secure else 'ws'}://{hostpart}:{port}/"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        tls: ssl.SSLContext | bool = False
        if secure:
            tls = self.client_ssl if self.client_ssl is not None else ssl.create_default_context()
        try:
            ws = await self._session.ws_connect(
                url, max_msg_size=MAX_MESSAGE_SIZE, compress=0, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5), ssl=tls,
                server_hostname=addr.value_for("sni") if secure else None,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise DialError(f"WebSocket connect to {url} failed: {e}") from None
        conn = ws.get_extra_info("socket")
        local = conn.getsockname() if conn is not None else ("0.0.0.0", 0)
        remote = conn.getpeername() if conn is not None else (host, port)
        suffix = "/wss" if secure else "/ws"
        raw = WebSocketStream(ws, sockaddr_to_multiaddr(local, suffix),
                              sockaddr_to_multiaddr(remote, suffix))
        return await self.upgrader.upgrade_outbound(raw, addr.peer_id(), "ws")

    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener:
        host, port, _ = host_port(addr)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return web.Response(status=426, text="this is a libp2p WebSocket endpoint\n")
            ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_SIZE, compress=False)
            await ws.prepare(request)
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            local = sock.getsockname() if sock is not None else (host, port)
            peername = transport.get_extra_info("peername") if transport is not None else None
            remote = peername or ("0.0.0.0", 0)
            raw = WebSocketStream(ws, sockaddr_to_multiaddr(local, suffix),
                                  sockaddr_to_multiaddr(remote, suffix), transport)
            conn = await self.upgrader.upgrade_inbound_or_log(
                raw, "ws", scope=server.take_scope(request))
            if conn is not None:
                await on_connection(conn)
                # aiohttp closes the socket when this handler returns: stay until the connection ends.
                await conn.wait_closed()
            return ws

        protos = addr.without_peer_id().protocols()
        secure = protos[-1] == "wss" or "tls" in protos
        suffix = "/tls/ws" if secure else "/ws"
        if secure and self.server_tls is None:  # (can_listen says no to it)
            raise ValueError(f"cannot listen on {addr}: no TLS certificate")
        server = AdmittingServer(handle, upgrader=self.upgrader, access_log=None)
        # Connections are closed by the host before its listeners; do not wait 60 s for stragglers.
        runner = web.ServerRunner(server, handle_signals=False, access_log=None,
                                  shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG,
                           ssl_context=self.server_tls.context if self.server_tls and secure else None)
        await site.start()
        addrs: list[Multiaddr] = []
        for sockaddr in runner.addresses:  # the bound port when port was 0
            for ip in expand_unspecified(sockaddr[0]):
                addrs.append(sockaddr_to_multiaddr((ip, sockaddr[1]), suffix))
        return WebSocketListener(runner, addrs)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def websocket_transport(transports: Iterable[Transport]) -> WebSocketTransport:
    """The WebSocket transport among a host's `transports` (to give it certificates or a CA)."""
    return next(t for t in transports if isinstance(t, WebSocketTransport))
