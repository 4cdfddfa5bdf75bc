"""A STUN server for binding requests (RFC 5389 / 8489): tells a peer the address and port its
packets come from, so peers need no public STUN service. The codec is sans-I/O; the asyncio
datagram protocol at the end is the only I/O.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import logging
import struct

from ..netutil import bind_udp

log = logging.getLogger(__name__)

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
HEADER = struct.Struct(">HHI12s")
SOFTWARE = b"p2prtc"
# Requests larger than this are not binding requests we need to read.
MAX_REQUEST_SIZE = 1500


class NotStun(ValueError):
    """The datagram is not a STUN binding request (ignored, never answered)."""


def parse_binding_request(data: bytes) -> bytes:
    """Return the transaction id of a well-formed binding request, else raise NotStun."""
    if len(data) < HEADER.size or len(data) > MAX_REQUEST_SIZE:
        raise NotStun("wrong size")
    msg_type, length, cookie, txid = HEADER.unpack_from(data)
    if msg_type != BINDING_REQUEST:
        raise NotStun(f"message type 0x{msg_type:04x}")
    if cookie != MAGIC_COOKIE:
        raise NotStun("no magic cookie (RFC 3489 clients are not served)")
    if length % 4 or HEADER.size + length != len(data):
        raise NotStun("length field does not match the datagram")
    # Walk the attributes so a truncated one is caught; check FINGERPRINT when present.
    pos = HEADER.size
    while pos < len(data):
        if pos + 4 > len(data):
            raise NotStun("truncated attribute header")
        attr_type, attr_len = struct.unpack_from(">HH", data, pos)
        end = pos + 4 + attr_len
        if end > len(data):
            raise NotStun("truncated attribute")
        if attr_type == ATTR_FINGERPRINT:
            if attr_len != 4 or end != len(data):
                raise NotStun("misplaced FINGERPRINT")
            (fp,) = struct.unpack_from(">I", data, pos + 4)
            if fp != _fingerprint(data[:pos]):
                raise NotStun("bad FINGERPRINT")
        pos = end + (-attr_len % 4)
    return txid


def _fingerprint(prefix_with_header: bytes) -> int:
    return (binascii.crc32(prefix_with_header) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _attr(attr_type: int, value: bytes) -> bytes:
    return struct.pack(">HH", attr_type, len(value)) + value + b"\0" * (-len(value) % 4)


def build_binding_success(txid: bytes, host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    family = 0x01 if ip.version == 4 else 0x02
    packed = ip.packed
    xor_key = struct.pack(">I", MAGIC_COOKIE) + txid
    xport = port ^ (MAGIC_COOKIE >> 16)
    xaddr = bytes(a ^ b for a, b in zip(packed, xor_key))
    attrs = (
        _attr(ATTR_XOR_MAPPED_ADDRESS, struct.pack(">BBH", 0, family, xport) + xaddr)
        + _attr(ATTR_MAPPED_ADDRESS, struct.pack(">BBH", 0, family, port) + packed)
        + _attr(ATTR_SOFTWARE, SOFTWARE)
    )
    body_len = len(attrs) + 8  # including the FINGERPRINT attribute that follows
    head = HEADER.pack(BINDING_SUCCESS, body_len, MAGIC_COOKIE, txid)
    msg = head + attrs
    return msg + _attr(ATTR_FINGERPRINT, struct.pack(">I", _fingerprint(msg)))


class StunServerProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.ignored = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            txid = parse_binding_request(data)
        except NotStun as e:
            self.ignored += 1
            log.debug("ignoring datagram from %s: %s", addr[0], e)
            return
        assert self.transport is not None
        self.transport.sendto(build_binding_success(txid, addr[0], addr[1]), addr)
        self.answered += 1

    def error_received(self, exc: Exception) -> None:
        log.debug("STUN socket error: %s", exc)


async def start_stun_server(host: str, port: int) -> tuple[asyncio.DatagramTransport, StunServerProtocol]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(StunServerProtocol, sock=bind_udp(host, port))
