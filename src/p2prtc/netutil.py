"""Local interface addresses (for expanding 0.0.0.0 / :: listeners), without psutil."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915


def ipv4_addresses() -> list[str]:
    """IPv4 addresses of the interfaces that are up, loopback first."""
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            out.append(socket.inet_ntoa(packed[20:24]))
    return sorted(set(out), key=lambda a: (not a.startswith("127."), a))


def ipv6_addresses() -> list[str]:
    out: list[str] = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _idx, _plen, scope, _flags, _name = line.split()
                if int(scope, 16) == 0x20:  # link-local needs a zone; skip
                    continue
                out.append(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except OSError:
        pass
    return sorted(set(out), key=lambda a: (a != "::1", a))


def is_unspecified(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_unspecified


def expand_unspecified(ip: str) -> list[str]:
    """0.0.0.0 -> every local IPv4 address; :: -> every IPv6 one; anything else -> itself."""
    addr = ipaddress.ip_address(ip)
    if not addr.is_unspecified:
        return [ip]
    return ipv4_addresses() if addr.version == 4 else ipv6_addresses()


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def is_private(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_private
    except ValueError:
        return False


def bind_udp(host: str, port: int) -> socket.socket:
    """A bound UDP socket. IPv6 sockets are IPv6-only, so that `::` and `0.0.0.0` can both hold
    the same port (asyncio does the same for TCP servers; for datagrams it does not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
