"""Batched UDP I/O for TURN's data path (`relay/turn_io.py`): many datagrams per system call and
no Python object per datagram that is only forwarded.

On Linux, `recvmmsg(2)` reads up to `RECV_BATCH` datagrams into one shared buffer and `sendmmsg(2)`
sends a batch whose payloads point into that same buffer (zero copy: a ChannelData payload is
sent from where it was received; a peer's datagram gets its 4-byte ChannelData header written in
the headroom in front of it). Python's `socket` module has neither call, so they are reached
through `ctypes` (libc). Elsewhere, or when `ctypes` cannot find them, `Batcher(mmsg=False)` does
the same with one `recvfrom_into`/`sendto` per datagram behind the same interface.

Everything here is synchronous and runs on the event loop's thread: a batch is received, handled
and flushed before the next socket is read, which is why one receive buffer serves all sockets.
Addresses stay in their raw form (`sockaddr` bytes with mmsg, `(ip, port)` tuples without) as
opaque, hashable keys; `decode`/`encode` convert at the edges (new peers, the slow path).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# Ours: datagrams read per wake-up of a socket (a 1 ms burst at 30 MB/s is ~25 datagrams of
# 1,200 bytes); the event loop gets control back after each batch, so other sockets are served.
RECV_BATCH = 32
# Bytes reserved in front of every received datagram: room for a ChannelData header (RFC 8656
# 12.4), written there when a peer's datagram goes to its client on a channel.
HEADROOM = 4
# One receive slot: the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6) plus the
# headroom, rounded to 64 KiB. The buffer is an anonymous mapping: only touched pages cost memory.
SLOT = 65536
# sockaddr_in6 is 28 bytes; a slot for either family.
NAME_SIZE = 32
# Sends queued per flush: at most one per datagram of a batch (a full queue flushes early).
SEND_BATCH = RECV_BATCH

_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(socket.AF_INET6)

Key = Any  # raw sockaddr bytes (mmsg) or an (ip, port) tuple (fallback): opaque, hashable
Addr = tuple[str, int]


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_HDR = ctypes.sizeof(_MMsgHdr)
_IOV = ctypes.sizeof(_Iovec)
_NAME_PTR = struct.Struct("P")
_NAMELEN = struct.Struct("I")
_NAME = struct.Struct("PI")  # msg_name, msg_namelen (adjacent in struct msghdr)
_IOVEC = struct.Struct("PN")
_OFF_NAME = _MsgHdr.name.offset
_OFF_NAMELEN = _MsgHdr.namelen.offset
_OFF_IOV = _MsgHdr.iov.offset
_OFF_IOVLEN = _MsgHdr.iovlen.offset
_OFF_LEN = _MMsgHdr.len.offset
assert _OFF_NAMELEN == struct.calcsize("P"), "msg_namelen follows msg_name"


def _libc_calls() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _libc_calls()


def mmsg_available() -> bool:
    """recvmmsg/sendmmsg reachable (Linux with a libc that has them)."""
    return _CALLS is not None


def encode_name(addr: Addr) -> bytes:
    """The sockaddr_in / sockaddr_in6 of an (ip, port)."""
    ip, port = addr
    if ":" in ip:
        return (struct.pack("=H", _AF_INET6) + struct.pack(">HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, ip) + b"\0\0\0\0")
    return (struct.pack("=H", _AF_INET) + struct.pack(">H", port)
            + socket.inet_pton(socket.AF_INET, ip) + bytes(8))


def decode_name(raw: bytes) -> Addr:
    (family,) = struct.unpack_from("=H", raw)
    (port,) = struct.unpack_from(">H", raw, 2)
    if family == _AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


class Batcher:
    """The shared receive buffer and send queue (one per event loop: see the module docstring).

    `recv(sock, v6)` -> (n, lengths, keys): datagram i is `buf[offset(i):offset(i) + lengths[i]]`
    (`HEADROOM` writable bytes in front of it), from `keys[i]`; `heads(n)` reads the first four
    bytes of each as two big-endian 16-bit numbers (a ChannelData header's channel and length).
    `queue(fd, sock, offset, length, dest)` sends `buf[offset:offset + length]` from `sock` (its
    fd) to `dest` (a `dest(addr)` value) at the next `flush()` (automatic when the queue is
    full); `sendto(sock, data, addr)` sends bytes now (after what is queued). A send that fails
    drops that datagram (UDP semantics; counted in `send_errors`)."""

    def __init__(self, mmsg: bool = True) -> None:
        self.mmsg = mmsg and _CALLS is not None
        # layout: the slots, then per address family a receive header array and its names,
        # then the send headers and their iovecs
        data_size = RECV_BATCH * SLOT
        self._rx: dict[bool, tuple[int, int]] = {}
        pos = data_size
        for v6 in (False, True):
            self._rx[v6] = (pos, pos + RECV_BATCH * _HDR)  # headers, names
            pos += RECV_BATCH * (_HDR + NAME_SIZE)
        self._rx_iovs = pos
        pos += RECV_BATCH * _IOV
        self._tx_hdrs = pos
        self._tx_iovs = pos + SEND_BATCH * _HDR
        size = self._tx_iovs + SEND_BATCH * _IOV
        self.buf = mmap.mmap(-1, size)
        self.view = memoryview(self.buf)
        self._anchor = ctypes.c_char.from_buffer(self.buf)  # pins the mapping for the pointers
        self._base = ctypes.addressof(self._anchor)
        self._fds: list[int] = []
        self.send_errors = 0
        self.recv_errors = 0
        self.batches = 0     # receive calls that returned datagrams
        self.datagrams = 0   # datagrams they returned
        buf, base = self.buf, self._base
        for i in range(RECV_BATCH):
            _IOVEC.pack_into(buf, self._rx_iovs + i * _IOV, base + offset(i), SLOT - HEADROOM)
        for v6, (hdrs, names) in self._rx.items():
            # the kernel writes each name's length back: with one family per array it stays
            namelen = 28 if v6 else 16
            for i in range(RECV_BATCH):
                h = hdrs + i * _HDR
                _NAME_PTR.pack_into(buf, h + _OFF_NAME, base + names + i * NAME_SIZE)
                _NAMELEN.pack_into(buf, h + _OFF_NAMELEN, namelen)
                _NAME_PTR.pack_into(buf, h + _OFF_IOV, base + self._rx_iovs + i * _IOV)
                _NAME_PTR.pack_into(buf, h + _OFF_IOVLEN, 1)
        for i in range(SEND_BATCH):
            h = self._tx_hdrs + i * _HDR
            _NAME_PTR.pack_into(buf, h + _OFF_IOV, base + self._tx_iovs + i * _IOV)
            _NAME_PTR.pack_into(buf, h + _OFF_IOVLEN, 1)

    # -- receiving -------------------------------------------------------------------------------

    def recv(self, sock: socket.socket, v6: bool
             ) -> tuple[int, Sequence[int], Sequence[Key]]:
        if not self.mmsg:
            return self._recv_each(sock)
        assert _CALLS is not None
        hdrs, names = self._rx[v6]
        n = _CALLS[0](sock.fileno(), self._base + hdrs, RECV_BATCH, _MSG_DONTWAIT, None)
        if n <= 0:
            if n < 0:
                e = ctypes.get_errno()
                if e not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self.recv_errors += 1
                    log.debug("recvmmsg: %s", errno.errorcode.get(e, e))
            return 0, (), ()
        self.batches += 1
        self.datagrams += n
        # MSG_TRUNC cannot happen (a slot holds the largest UDP datagram): lengths are whole
        return (n, _LENGTHS[n].unpack_from(self.buf, hdrs),
                (_NAMES6 if v6 else _NAMES4)[n].unpack_from(self.buf, names))

    def _recv_each(self, sock: socket.socket) -> tuple[int, Sequence[int], Sequence[Key]]:
        lengths: list[int] = []
        keys: list[Key] = []
        view = self.view
        for i in range(RECV_BATCH):
            off = offset(i)
            try:
                n, addr = sock.recvfrom_into(view[off:off + SLOT - HEADROOM])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.recv_errors += 1
                log.debug("recvfrom: %s", e)
                break
            lengths.append(n)
            keys.append((addr[0], addr[1]))
        if lengths:
            self.batches += 1
            self.datagrams += len(lengths)
        return len(lengths), lengths, keys

    def heads(self, n: int) -> tuple[int, ...]:
        """(first 16 bits, next 16 bits) of datagrams 0..n-1, flattened (stale bytes for a
        datagram shorter than 4: check its length)."""
        return _HEADS[n].unpack_from(self.buf, 0)

    # -- keys and destinations -------------------------------------------------------------------

    def decode(self, key: Key) -> Addr:
        if self.mmsg:
            return decode_name(key)
        ip, port = key
        return str(ip), int(port)

    def dest(self, addr: Addr) -> Dest:
        return Dest(addr, self.mmsg)

    # -- sending ---------------------------------------------------------------------------------

    def queue(self, fd: int, sock: socket.socket, off: int, length: int, dest: Dest) -> None:
        if not self.mmsg:
            self._send_now(sock, self.view[off:off + length], dest.addr)
            return
        fds = self._fds
        i = len(fds)
        buf = self.buf
        _IOVEC.pack_into(buf, self._tx_iovs + i * _IOV, self._base + off, length)
        _NAME.pack_into(buf, self._tx_hdrs + i * _HDR, dest.ptr, dest.namelen)
        fds.append(fd)
        if i + 1 == SEND_BATCH:
            self.flush()

    def flush(self) -> None:
        fds = self._fds
        if not fds:
            return
        assert _CALLS is not None
        sendmmsg = _CALLS[1]
        start, total = 0, len(fds)
        while start < total:
            fd = fds[start]
            end = start + 1
            while end < total and fds[end] == fd:
                end += 1
            while start < end:
                r = sendmmsg(fd, self._base + self._tx_hdrs + start * _HDR, end - start, 0)
                if r > 0:
                    start += r
                    continue
                e = ctypes.get_errno()
                if e == errno.EINTR:
                    continue
                if e in (errno.EAGAIN, errno.EWOULDBLOCK):  # socket buffer full: drop the rest
                    self.send_errors += end - start
                    start = end
                    break
                self.send_errors += 1  # this datagram (unreachable, refused...): skip it
                log.debug("sendmmsg: %s", errno.errorcode.get(e, e))
                start += 1
        fds.clear()

    def sendto(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        if self._fds:
            self.flush()
        self._send_now(sock, data, addr)

    def _send_now(self, sock: socket.socket, data: Any, addr: Addr) -> None:
        try:
            sock.sendto(data, addr)
        except OSError as e:  # BlockingIOError (buffer full), unreachable, refused: a drop
            self.send_errors += 1
            log.debug("sendto %s:%d: %s", addr[0], addr[1], e)


def offset(i: int) -> int:
    """Where received datagram i starts in `Batcher.buf`."""
    return i * SLOT + HEADROOM


class Dest:
    """A destination prepared once (its sockaddr, kept alive here, for sendmmsg)."""

    __slots__ = ("addr", "name", "ptr", "namelen")

    def __init__(self, addr: Addr, mmsg: bool) -> None:
        self.addr = (addr[0], addr[1])
        self.name = ctypes.create_string_buffer(encode_name(addr), NAME_SIZE) if mmsg else None
        self.ptr = ctypes.addressof(self.name) if self.name is not None else 0
        self.namelen = 28 if ":" in addr[0] else 16


def _repeat(one: str, stride: int, size: int, n: int, byte_order: str = "=") -> struct.Struct:
    """A Struct reading `one` (`size` bytes) at the start of each of n records `stride` apart."""
    return struct.Struct(byte_order + f"{one}{stride - size}x" * (n - 1) + one)


# Precompiled readers for 0..RECV_BATCH datagrams: one unpack per batch, not one per datagram.
_LENGTHS = [_repeat(f"{_OFF_LEN}xI", _HDR, _OFF_LEN + 4, n) if n else struct.Struct("")
            for n in range(RECV_BATCH + 1)]
_NAMES4 = [_repeat("8s", NAME_SIZE, 8, n) if n else struct.Struct("")  # family, port, address
           for n in range(RECV_BATCH + 1)]
_NAMES6 = [_repeat("28s", NAME_SIZE, 28, n) if n else struct.Struct("")
           for n in range(RECV_BATCH + 1)]
_HEADS = [_repeat(f"{HEADROOM}xHH", SLOT, HEADROOM + 4, n, ">") if n else struct.Struct("")
          for n in range(RECV_BATCH + 1)]
