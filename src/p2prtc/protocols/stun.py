"""The relay's STUN server: binding requests (RFC 8489) tell a peer the address and port its
packets come from, so peers need no public STUN service; RFC 5780's NAT behaviour discovery lets a
peer learn how its NAT maps and filters.

For RFC 5780 the server listens on up to four sockets, one per *role* `(ip, port)`: `(0, 0)` the
primary address, `(0, 1)` the primary IP with the alternate port, `(1, 0)` and `(1, 1)` the
alternate IP. Every success response carries RESPONSE-ORIGIN (the socket it leaves from) and, when
there is an alternate, OTHER-ADDRESS; a CHANGE-REQUEST is answered from the socket it names, or
with error 420 when that socket does not exist (RFC 5780 section 6.1). One deviation from RFC 5780,
which assumes a second IP: with only an alternate port, OTHER-ADDRESS names the same IP with the
other port, so that a client can still tell port-dependent filtering and mapping.

`StunResponder` is the sans-I/O core (datagram in, role and datagram out); `StunServer` binds the
sockets and is the only I/O. The message codec is `transports/webrtc_direct/stun.py`.

TURN shares the primary socket, as coturn serves STUN and TURN on 3478: after
`StunServer.take_primary(make_owner)` (called by the TURN adapter, `relay/turn_io.py`), TURN reads
that socket itself (in batches) and passes Binding requests back to
`StunServer.datagram_received`; replies leave through the owner's `sendto`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..netutil import bind_udp
from ..transports.webrtc_direct import stun as codec
from ..transports.webrtc_direct.stun import BINDING_REQUEST, HEADER, MAGIC_COOKIE, StunError

__all__ = ["BINDING_REQUEST", "HEADER", "MAGIC_COOKIE", "NotStun", "StunResponder", "StunServer",
           "build_binding_success", "parse_binding_request", "start_stun_server"]

log = logging.getLogger(__name__)

SOFTWARE = codec.SOFTWARE
# Requests larger than this are not binding requests we need to read (one Ethernet MTU).
MAX_REQUEST_SIZE = codec.MAX_MESSAGE_SIZE
# Route lookups cached for a wildcard-bound socket (which local IP answers which client IP).
ORIGIN_CACHE_SIZE = 1024

Role = tuple[int, int]  # (0 primary / 1 alternate IP, 0 primary / 1 alternate port)
PRIMARY: Role = (0, 0)


class NotStun(ValueError):
    """The datagram is not a STUN binding request (ignored, never answered)."""


def parse_binding_request(data: bytes) -> codec.StunMessage:
    """The parsed binding request, else raise NotStun."""
    try:
        msg = codec.parse(data)
    except StunError as e:
        raise NotStun(str(e)) from None
    if msg.msg_type != codec.BINDING_REQUEST:
        raise NotStun(f"message type 0x{msg.msg_type:04x}")
    return msg


def build_binding_success(txid: bytes, host: str, port: int, *,
                          origin: tuple[str, int] | None = None,
                          other: tuple[str, int] | None = None) -> bytes:
    """A binding success for a client seen at host:port; RESPONSE-ORIGIN / OTHER-ADDRESS when
    given. MAPPED-ADDRESS too, for RFC 3489-era clients."""
    attrs = [(codec.ATTR_XOR_MAPPED_ADDRESS, codec.xor_address_value((host, port), txid)),
             (codec.ATTR_MAPPED_ADDRESS, codec.address_value((host, port)))]
    if origin is not None:
        attrs.append((codec.ATTR_RESPONSE_ORIGIN, codec.address_value(origin)))
    if other is not None:
        attrs.append((codec.ATTR_OTHER_ADDRESS, codec.address_value(other)))
    attrs.append((codec.ATTR_SOFTWARE, SOFTWARE))
    return codec.build(codec.BINDING_SUCCESS, txid, attrs)


@dataclass(frozen=True)
class Reply:
    role: Role    # the socket to send from
    data: bytes


class StunResponder:
    """Sans-I/O: which socket answers a request and with what. `local` maps each role the server
    has to its bound address; an unspecified IP (0.0.0.0) is filled in per request by the caller
    (`local_ip`), as only the kernel knows which of its addresses a client reached."""

    def __init__(self, local: dict[Role, tuple[str, int]]) -> None:
        if PRIMARY not in local:
            raise ValueError("a STUN server needs its primary address")
        self.local = dict(local)

    def other_role(self, role: Role) -> Role | None:
        """The OTHER-ADDRESS of a socket: other IP and port, else other IP, else other port."""
        i, p = role
        for cand in ((1 - i, 1 - p), (1 - i, p), (i, 1 - p)):
            if cand in self.local:
                return cand
        return None

    def address(self, role: Role, local_ip: str | None = None) -> tuple[str, int] | None:
        ip, port = self.local[role]
        if ipaddress.ip_address(ip).is_unspecified:
            if local_ip is None:
                return None
            ip = local_ip
        return ip, port

    def handle(self, data: bytes, arrived_on: Role, source: tuple[str, int],
               local_ip: str | None = None) -> Reply:
        """The reply to `data` from `source`, received on the socket of `arrived_on`.
        Raises NotStun for anything that is not a binding request (never answered)."""
        msg = parse_binding_request(data)
        change_ip, change_port = msg.change_request()
        i, p = arrived_on
        role = (i ^ int(change_ip), p ^ int(change_port))
        if role not in self.local:
            what = " and ".join(w for w, on in (("IP", change_ip), ("port", change_port)) if on)
            return Reply(arrived_on, codec.binding_error(
                msg.txid, codec.ERROR_UNKNOWN_ATTRIBUTE,
                f"no alternate {what} to answer from"))
        other = self.other_role(role)
        return Reply(role, build_binding_success(
            msg.txid, source[0], source[1],
            origin=self.address(role, local_ip),
            other=self.address(other, local_ip) if other is not None else None))


class _RoleProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, role: Role) -> None:
        self.server = server
        self.role = role

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.datagram_received(self.role, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("STUN socket error: %s", exc)


class DatagramSender(Protocol):
    """What the server sends a role's replies through: its asyncio transport, or the owner the
    primary socket was handed to (`StunServer.take_primary`)."""

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


_Owner = TypeVar("_Owner", bound=DatagramSender)


class StunServer:
    """The sockets of one STUN server (see `start_stun_server`)."""

    def __init__(self) -> None:
        self.transports: dict[Role, DatagramSender] = {}
        self.responder: StunResponder | None = None
        self.answered = 0
        self.ignored = 0
        self._origins: OrderedDict[str, str] = OrderedDict()

    def take_primary(self, make_owner: Callable[[socket.socket], _Owner]) -> _Owner:
        """Hand the primary socket to `make_owner(socket)` (TURN, which reads it in batches and
        passes Binding requests back to `datagram_received(PRIMARY, ...)`): the asyncio
        transport is closed, a duplicate of its socket goes to the owner, and replies from the
        primary role leave through the owner's `sendto` from then on."""
        transport = self.transports[PRIMARY]
        inner = transport.get_extra_info("socket")  # type: ignore[attr-defined]
        sock = socket.fromfd(inner.fileno(), inner.family, inner.type)
        owner = make_owner(sock)
        transport.close()
        self.transports[PRIMARY] = owner
        return owner

    @property
    def addresses(self) -> dict[Role, tuple[str, int]]:
        return dict(self.responder.local) if self.responder else {}

    def datagram_received(self, role: Role, data: bytes, addr: tuple[str, int]) -> None:
        assert self.responder is not None
        local_ip = None
        if ipaddress.ip_address(self.responder.local[role][0]).is_unspecified:
            local_ip = self._local_ip_for(addr[0])
        try:
            reply = self.responder.handle(data, role, (addr[0], addr[1]), local_ip)
        except NotStun as e:
            self.ignored += 1
            log.debug("ignoring datagram from %s: %s", addr[0], e)
            return
        transport = self.transports.get(reply.role)
        if transport is None or transport.is_closing():
            return
        transport.sendto(reply.data, addr)
        self.answered += 1

    def send(self, data: bytes, addr: tuple[str, int], role: Role = PRIMARY) -> None:
        """Send from one of our sockets (TURN answers from the primary one)."""
        transport = self.transports.get(role)
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)

    def _local_ip_for(self, client_ip: str) -> str | None:
        """The address the kernel answers `client_ip` from (a route lookup: connecting a UDP
        socket sends nothing)."""
        ip = self._origins.get(client_ip)
        if ip is not None:
            self._origins.move_to_end(client_ip)
            return ip
        family = socket.AF_INET6 if ":" in client_ip else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((client_ip, 9))
                ip = str(s.getsockname()[0])
        except OSError:
            return None
        self._origins[client_ip] = ip
        if len(self._origins) > ORIGIN_CACHE_SIZE:
            self._origins.popitem(last=False)
        return ip

    def close(self) -> None:
        for t in self.transports.values():
            t.close()


async def start_stun_server(host: str, port: int, *, alt_port: int | None = None,
                            alt_ip: str | None = None) -> StunServer:
    """A STUN server on host:port (0: any free port), plus host:alt_port and, with alt_ip, the
    same two ports on alt_ip (RFC 5780's four sockets). alt_port 0 picks a free one."""
    if alt_ip is not None and ipaddress.ip_address(host).is_unspecified:
        raise ValueError("a second STUN IP needs a specific primary IP, not "
                         f"{host} (give the relay --listen-ip)")
    loop = asyncio.get_running_loop()
    server = StunServer()
    socks: dict[Role, socket.socket] = {}
    try:
        socks[PRIMARY] = bind_udp(host, port)
        port = socks[PRIMARY].getsockname()[1]
        if alt_port is not None:
            socks[(0, 1)] = bind_udp(host, alt_port)
            alt_port = socks[(0, 1)].getsockname()[1]
        if alt_ip is not None:
            socks[(1, 0)] = bind_udp(alt_ip, port)
            if alt_port is not None:
                socks[(1, 1)] = bind_udp(alt_ip, alt_port)
    except OSError:
        for s in socks.values():
            s.close()
        raise
    server.responder = StunResponder({r: s.getsockname()[:2] for r, s in socks.items()})
    for role, sock in socks.items():
        transport, _ = await loop.create_datagram_endpoint(
            functools.partial(_RoleProtocol, server, role), sock=sock)
        server.transports[role] = transport
    return server
