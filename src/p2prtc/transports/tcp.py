"""TCP transport: /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from ..errors import DialError, StreamClosed, StreamReset
from ..multiaddr import Multiaddr
from ..netutil import expand_unspecified
from .base import ConnectionHandler, Listener, RawConnection, Transport

if TYPE_CHECKING:
    from ..connection import Connection
    from ..network import Network

log = logging.getLogger(__name__)

# asyncio buffers this much received data before it stops reading the socket (backpressure).
READ_BUFFER_LIMIT = 1 << 20
# write() returns at once until this much is queued in the kernel-side transport buffer.
WRITE_HIGH_WATER = 1 << 20
IP_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")
# Accept queue: go's net.Listen takes somaxconn (4096 on Linux >= 5.4), asyncio 100. Under a
# connection flood a short queue drops SYNs, and an honest client then waits 1 s or more for
# its retransmission (bench/abuse.py); the kernel caps this at somaxconn.
LISTEN_BACKLOG = 4096


def host_port(addr: Multiaddr) -> tuple[str, int, int]:
    """(host, port, address family) of a TCP multiaddr."""
    comps = addr.components()
    if len(comps) < 2 or comps[0][0] not in IP_PROTOCOLS or comps[1][0] != "tcp":
        raise DialError(f"not a TCP address: {addr}")
    proto, host = comps[0]
    port = comps[1][1]
    if host is None or port is None:  # (the codec gives these protocols a value)
        raise DialError(f"not a TCP address: {addr}")
    family = {"ip4": socket.AF_INET, "dns4": socket.AF_INET, "ip6": socket.AF_INET6,
              "dns6": socket.AF_INET6}.get(proto, socket.AF_UNSPEC)
    return host, int(port), family


def sockaddr_to_multiaddr(sockaddr: tuple[str, int] | tuple[str, int, int, int],
                          suffix: str = "") -> Multiaddr:
    host, port = sockaddr[0], sockaddr[1]
    proto = "ip6" if ":" in host else "ip4"
    return Multiaddr(f"/{proto}/{host}/tcp/{port}{suffix}")


class TcpStream(RawConnection):
    transport_name = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_closed = False
        self.local_addr = sockaddr_to_multiaddr(writer.get_extra_info("sockname"))
        self.remote_addr = sockaddr_to_multiaddr(writer.get_extra_info("peername"))

    async def read(self, n: int = 65536) -> bytes:
        try:
            return await self._reader.read(n)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise StreamReset(f"TCP connection reset: {e}") from None
        except OSError as e:
            raise StreamReset(f"TCP read failed: {e}") from None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._write_closed:
            raise StreamClosed("TCP write side is closed")
        writer = self._writer
        if writer.is_closing():
            raise StreamClosed("TCP connection is closed")
        writer.write(data)
        if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await writer.drain()
            except (ConnectionError, OSError) as e:
                raise StreamClosed(f"TCP write failed: {e}") from None

    async def close_write(self) -> None:
        if self._write_closed:
            return
        self._write_closed = True
        if self._writer.can_write_eof() and not self._writer.is_closing():
            try:
                await self._writer.drain()
                self._writer.write_eof()
            except (ConnectionError, OSError):
                pass

    async def close(self) -> None:
        self._write_closed = True
        if not self._writer.is_closing():
            try:
                await self._writer.drain()
            except (ConnectionError, OSError):
                pass
            self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    def reset(self) -> None:
        self._write_closed = True
        transport = self._writer.transport
        if not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:  # RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            transport.abort()


class TcpListener(Listener):
    def __init__(self, server: asyncio.base_events.Server, addrs: list[Multiaddr]) -> None:
        self._server = server
        self.addrs = addrs

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


class TcpTransport(Transport):
    name = "tcp"

    def __init__(self, network: Network) -> None:
        self.upgrader = network.upgrader

    def can_dial(self, addr: Multiaddr) -> bool:
        protos = addr.without_peer_id().protocols()
        return len(protos) == 2 and protos[0] in IP_PROTOCOLS and protos[1] == "tcp"

    async def dial(self, addr: Multiaddr) -> Connection:
        host, port, family = host_port(addr)
        try:
            reader, writer = await asyncio.open_connection(
                host, port, family=family, limit=READ_BUFFER_LIMIT
            )
        except OSError as e:
            raise DialError(f"TCP connect to {host}:{port} failed: {e.strerror or e}") from None
        raw = TcpStream(reader, writer)
        return await self.upgrader.upgrade_outbound(raw, addr.peer_id(), "tcp")

    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener:
        host, port, _ = host_port(addr)

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # the budget first: a refused connection costs no more than its socket
            scope = self.upgrader.admit_inbound(writer.get_extra_info("peername"))
            if scope is None:
                writer.transport.abort()
                return
            raw = TcpStream(reader, writer)
            conn = await self.upgrader.upgrade_inbound_or_log(raw, "tcp", scope=scope)
            if conn is not None:
                await on_connection(conn)

        server = await asyncio.start_server(
            accepted, host, port, limit=READ_BUFFER_LIMIT, reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )
        bound = [s.getsockname() for s in server.sockets]
        addrs: list[Multiaddr] = []
        for sockaddr in bound:
            for ip in expand_unspecified(sockaddr[0]):
                addrs.append(sockaddr_to_multiaddr((ip, sockaddr[1])))
        return TcpListener(server, addrs)
