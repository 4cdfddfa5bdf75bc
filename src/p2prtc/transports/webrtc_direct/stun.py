"""STUN (RFC 8489) for ICE connectivity checks (RFC 8445 section 7) and NAT behaviour discovery
(RFC 5780), sans-I/O. The one STUN codec of p2prtc: webrtc-direct, the relay's STUN server
(`protocols/stun.py`) and the NAT probe (`nat.py`) all use it.

Binding requests, success and error responses and indications with USERNAME, MESSAGE-INTEGRITY
(short-term credentials: the key is the ICE password), PRIORITY, USE-CANDIDATE,
ICE-CONTROLLING/-CONTROLLED, (XOR-)MAPPED-ADDRESS, FINGERPRINT, RFC 5780's CHANGE-REQUEST,
RESPONSE-ORIGIN and OTHER-ADDRESS, and TURN (RFC 8656: the methods, attributes, long-term
credentials and ChannelData framing, in the block at the end; the server is `relay/turn.py`). Parsing never raises anything but `StunError`, so a datagram
from the network cannot take down the caller.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct(">HHI12s")
HEADER_SIZE = HEADER.size

BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

ATTR_MAPPED_ADDRESS = 0x0001
ATTR_CHANGE_REQUEST = 0x0003  # RFC 5780 section 7.2
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A
ATTR_RESPONSE_ORIGIN = 0x802B  # RFC 5780 section 7.3
ATTR_OTHER_ADDRESS = 0x802C  # RFC 5780 section 7.4

# CHANGE-REQUEST flags (RFC 5780 section 7.2): answer from the other IP / the other port.
CHANGE_IP = 0x04
CHANGE_PORT = 0x02
# RFC 8489 14.8: 420 Unknown Attribute; RFC 5780 6.1 uses it when a change cannot be served.
ERROR_UNKNOWN_ATTRIBUTE = 420

FINGERPRINT_XOR = 0x5354554E
INTEGRITY_SIZE = 20  # HMAC-SHA1
INTEGRITY_SHA256_SIZE = 32  # HMAC-SHA256 (RFC 8489 14.6)
MIN_INTEGRITY_SHA256_SIZE = 16  # the shortest truncation 14.6 allows
# RFC 8489: USERNAME is at most 513 bytes. A whole check is far below one MTU.
MAX_USERNAME = 513
MAX_MESSAGE_SIZE = 1500
MAX_ATTRIBUTES = 32
SOFTWARE = b"p2prtc"


class StunError(ValueError):
    """Not a STUN message we can use (malformed, truncated, bad FINGERPRINT, ...)."""


def looks_like_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: STUN starts with 0-3, then the magic cookie."""
    return (len(data) >= HEADER_SIZE and data[0] < 4
            and data[4:8] == b"\x21\x12\xa4\x42")


def looks_like_dtls(data: bytes) -> bool:
    return len(data) > 0 and 20 <= data[0] <= 63


@dataclass
class StunMessage:
    msg_type: int
    txid: bytes
    attrs: dict[int, bytes]
    # Byte offset of the MESSAGE-INTEGRITY attribute header, if present (for verification).
    integrity_offset: int | None = None
    # Every attribute in order, repeats included (`attrs` keeps the first of each type; TURN's
    # CreatePermission may carry several XOR-PEER-ADDRESS).
    attr_list: list[tuple[int, bytes]] = field(default_factory=list)
    # Byte offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if present (RFC 8489 14.6).
    integrity_sha256_offset: int | None = None

    @property
    def username(self) -> str | None:
        raw = self.attrs.get(ATTR_USERNAME)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def use_candidate(self) -> bool:
        return ATTR_USE_CANDIDATE in self.attrs

    @property
    def priority(self) -> int | None:
        raw = self.attrs.get(ATTR_PRIORITY)
        return int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else None

    def xor_mapped_address(self) -> tuple[str, int] | None:
        raw = self.attrs.get(ATTR_XOR_MAPPED_ADDRESS)
        if raw is None:
            return None
        return _unxor_address(raw, self.txid)

    def mapped_address(self) -> tuple[str, int] | None:
        return _plain_address(self.attrs.get(ATTR_MAPPED_ADDRESS))

    def response_origin(self) -> tuple[str, int] | None:
        return _plain_address(self.attrs.get(ATTR_RESPONSE_ORIGIN))

    def other_address(self) -> tuple[str, int] | None:
        return _plain_address(self.attrs.get(ATTR_OTHER_ADDRESS))

    def change_request(self) -> tuple[bool, bool]:
        """(change IP, change port) asked for by CHANGE-REQUEST; (False, False) without one."""
        raw = self.attrs.get(ATTR_CHANGE_REQUEST)
        if raw is None or len(raw) != 4:
            return False, False
        flags = raw[3]
        return bool(flags & CHANGE_IP), bool(flags & CHANGE_PORT)

    def error_code(self) -> int | None:
        raw = self.attrs.get(ATTR_ERROR_CODE)
        if raw is None or len(raw) < 4:
            return None
        return (raw[2] & 0x7) * 100 + raw[3]


def parse(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> StunMessage:
    """Parse a STUN message; check its length fields and its FINGERPRINT if it has one.
    `max_size`: TURN carries whole datagrams in DATA, so its messages may exceed one MTU."""
    n = len(data)
    if n < HEADER_SIZE or n > max_size:
        raise StunError(f"{n}-byte datagram is not a STUN message")
    msg_type, length, cookie, txid = HEADER.unpack_from(data)
    if msg_type & 0xC000 or cookie != MAGIC_COOKIE:
        raise StunError("not STUN (no magic cookie)")
    if length % 4 or HEADER_SIZE + length != n:
        raise StunError("STUN length field does not match the datagram")
    attrs: dict[int, bytes] = {}
    attr_list: list[tuple[int, bytes]] = []
    integrity_offset = integrity_sha256_offset = None
    pos = HEADER_SIZE
    count = 0
    while pos < n:
        count += 1
        if count > MAX_ATTRIBUTES:
            raise StunError("too many STUN attributes")
        if pos + 4 > n:
            raise StunError("truncated STUN attribute header")
        attr_type, attr_len = struct.unpack_from(">HH", data, pos)
        start = pos + 4
        end = start + attr_len
        if end > n:
            raise StunError("truncated STUN attribute")
        if integrity_offset is not None and attr_type not in (ATTR_FINGERPRINT,
                                                              ATTR_MESSAGE_INTEGRITY_SHA256):
            # RFC 8489 14.5: only FINGERPRINT may follow MESSAGE-INTEGRITY (and agents must
            # ignore anything else after it); we are strict: nothing else is covered by the MAC.
            raise StunError("attribute after MESSAGE-INTEGRITY")
        if integrity_sha256_offset is not None and attr_type != ATTR_FINGERPRINT:
            # RFC 8489 14.6: likewise after MESSAGE-INTEGRITY-SHA256 (which follows M-I if both)
            raise StunError("attribute after MESSAGE-INTEGRITY-SHA256")
        if attr_type == ATTR_FINGERPRINT:
            if attr_len != 4 or end != n:
                raise StunError("FINGERPRINT is not the last attribute")
            (fp,) = struct.unpack_from(">I", data, start)
            # FINGERPRINT is last, so the header's length already counts up to its end: the CRC
            # runs over the bytes as they are (no copy; TURN checks one per relayed datagram)
            if fp != (binascii.crc32(memoryview(data)[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF:
                raise StunError("bad STUN FINGERPRINT")
        elif attr_type == ATTR_MESSAGE_INTEGRITY:
            if attr_len != INTEGRITY_SIZE:
                raise StunError("MESSAGE-INTEGRITY has the wrong length")
            integrity_offset = pos
        elif attr_type == ATTR_MESSAGE_INTEGRITY_SHA256:
            # RFC 8489 14.6: 32 bytes, or truncated to no less than 16, a multiple of 4
            if not MIN_INTEGRITY_SHA256_SIZE <= attr_len <= INTEGRITY_SHA256_SIZE or attr_len % 4:
                raise StunError("MESSAGE-INTEGRITY-SHA256 has the wrong length")
            integrity_sha256_offset = pos
        if attr_type == ATTR_USERNAME and attr_len > MAX_USERNAME:
            raise StunError("USERNAME too long")
        value = bytes(data[start:end])
        attrs.setdefault(attr_type, value)
        attr_list.append((attr_type, value))
        pos = end + (-attr_len % 4)
    if pos != n:
        raise StunError("STUN attribute padding runs past the datagram")
    return StunMessage(msg_type, txid, attrs, integrity_offset, attr_list,
                       integrity_sha256_offset)


def verify_integrity(data: bytes, msg: StunMessage, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY (HMAC-SHA1 over the message up to it, with the length field
    counting up to the end of MESSAGE-INTEGRITY)."""
    off = msg.integrity_offset
    if off is None:
        return False
    covered = _with_length(data[:off], off - HEADER_SIZE + 4 + INTEGRITY_SIZE)
    expected = hmac.new(key, covered, hashlib.sha1).digest()
    return hmac.compare_digest(expected, data[off + 4:off + 4 + INTEGRITY_SIZE])


def verify_integrity_sha256(data: bytes, msg: StunMessage, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256 (RFC 8489 14.6: HMAC-SHA256 over the message up to it,
    MESSAGE-INTEGRITY included when present, the length field counting up to its end; a
    truncated value is compared with as many leading bytes of the HMAC)."""
    off = msg.integrity_sha256_offset
    if off is None:
        return False
    (size,) = struct.unpack_from(">H", data, off + 2)
    covered = _with_length(data[:off], off - HEADER_SIZE + 4 + size)
    expected = hmac.new(key, covered, hashlib.sha256).digest()[:size]
    return hmac.compare_digest(expected, data[off + 4:off + 4 + size])


# -- building ------------------------------------------------------------------------------------

def new_transaction_id() -> bytes:
    return os.urandom(12)


def build(msg_type: int, txid: bytes, attrs: list[tuple[int, bytes]], *,
          integrity_key: bytes | None = None, integrity_sha256_key: bytes | None = None,
          fingerprint: bool = True) -> bytes:
    """A message; MESSAGE-INTEGRITY (HMAC-SHA1) with `integrity_key`, then
    MESSAGE-INTEGRITY-SHA256 (32 bytes) with `integrity_sha256_key`, then FINGERPRINT."""
    body = b"".join(_attr(t, v) for t, v in attrs)
    msg = HEADER.pack(msg_type, len(body), MAGIC_COOKIE, txid) + body
    if integrity_key is not None:
        covered = _with_length(msg, len(msg) - HEADER_SIZE + 4 + INTEGRITY_SIZE)
        mac = hmac.new(integrity_key, covered, hashlib.sha1).digest()
        msg = covered + _attr(ATTR_MESSAGE_INTEGRITY, mac)
    if integrity_sha256_key is not None:
        covered = _with_length(msg, len(msg) - HEADER_SIZE + 4 + INTEGRITY_SHA256_SIZE)
        mac = hmac.new(integrity_sha256_key, covered, hashlib.sha256).digest()
        msg = covered + _attr(ATTR_MESSAGE_INTEGRITY_SHA256, mac)
    if fingerprint:
        length = len(msg) - HEADER_SIZE + 8
        fp = _fingerprint(msg, length)
        msg = _with_length(msg, length) + _attr(ATTR_FINGERPRINT, struct.pack(">I", fp))
    return msg


def binding_request(txid: bytes, username: str, key: bytes, *, priority: int,
                    controlling: bool, tie_breaker: int, use_candidate: bool) -> bytes:
    attrs = [
        (ATTR_USERNAME, username.encode("utf-8")),
        (ATTR_PRIORITY, struct.pack(">I", priority)),
        (ATTR_ICE_CONTROLLING if controlling else ATTR_ICE_CONTROLLED,
         struct.pack(">Q", tie_breaker)),
    ]
    if use_candidate:
        attrs.append((ATTR_USE_CANDIDATE, b""))
    return build(BINDING_REQUEST, txid, attrs, integrity_key=key)


def binding_success(txid: bytes, addr: tuple[str, int], key: bytes) -> bytes:
    return build(BINDING_SUCCESS, txid, [(ATTR_XOR_MAPPED_ADDRESS, _xor_address(addr, txid))],
                 integrity_key=key)


def binding_error(txid: bytes, code: int, reason: str, key: bytes | None = None) -> bytes:
    value = struct.pack(">HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
    return build(BINDING_ERROR, txid, [(ATTR_ERROR_CODE, value)], integrity_key=key)


def change_request_value(change_ip: bool, change_port: bool) -> bytes:
    """The value of a CHANGE-REQUEST attribute."""
    return struct.pack(">I", (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0))


def address_value(addr: tuple[str, int]) -> bytes:
    """MAPPED-ADDRESS format (also RESPONSE-ORIGIN and OTHER-ADDRESS): family, port, address."""
    ip = ipaddress.ip_address(addr[0])
    return struct.pack(">BBH", 0, 0x01 if ip.version == 4 else 0x02, addr[1]) + ip.packed


def xor_address_value(addr: tuple[str, int], txid: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS format."""
    return _xor_address(addr, txid)


# -- helpers -------------------------------------------------------------------------------------

def _attr(attr_type: int, value: bytes) -> bytes:
    return struct.pack(">HH", attr_type, len(value)) + value + b"\0" * (-len(value) % 4)


def _with_length(msg: bytes, length: int) -> bytes:
    return msg[:2] + struct.pack(">H", length) + msg[4:]


def _fingerprint(prefix: bytes, length: int) -> int:
    return (binascii.crc32(_with_length(prefix, length)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _xor_address(addr: tuple[str, int], txid: bytes) -> bytes:
    try:  # IPv4, the common case, without ipaddress (TURN encodes one per relayed datagram)
        v4 = int.from_bytes(socket.inet_pton(socket.AF_INET, addr[0]), "big")
    except OSError:
        v4 = None
    if v4 is not None:
        return struct.pack(">BBHI", 0, 0x01, addr[1] ^ (MAGIC_COOKIE >> 16), v4 ^ MAGIC_COOKIE)
    ip = ipaddress.ip_address(addr[0])
    family = 0x01 if ip.version == 4 else 0x02
    key = struct.pack(">I", MAGIC_COOKIE) + txid
    xaddr = bytes(a ^ b for a, b in zip(ip.packed, key, strict=True))  # IPv6: 16 and 16
    return struct.pack(">BBH", 0, family, addr[1] ^ (MAGIC_COOKIE >> 16)) + xaddr


def _plain_address(raw: bytes | None) -> tuple[str, int] | None:
    if raw is None or len(raw) < 4:
        return None
    family = raw[1]
    port = struct.unpack_from(">H", raw, 2)[0]
    size = 4 if family == 0x01 else 16 if family == 0x02 else 0
    if not size or len(raw) != 4 + size:
        return None
    return str(ipaddress.ip_address(raw[4:])), port


def _unxor_address(raw: bytes, txid: bytes) -> tuple[str, int] | None:
    if len(raw) < 8:
        return None
    family = raw[1]
    port = struct.unpack_from(">H", raw, 2)[0] ^ (MAGIC_COOKIE >> 16)
    key = struct.pack(">I", MAGIC_COOKIE) + txid
    size = 4 if family == 0x01 else 16 if family == 0x02 else 0
    if not size or len(raw) != 4 + size:
        return None
    if size == 4:
        v4 = int.from_bytes(raw[4:8], "big") ^ MAGIC_COOKIE
        return socket.inet_ntoa(v4.to_bytes(4, "big")), port
    packed = bytes(a ^ b for a, b in zip(raw[4:], key, strict=True))  # IPv6: 16 and 16
    return str(ipaddress.ip_address(packed)), port


# -- TURN (RFC 8656) -----------------------------------------------------------------------------
# Methods (RFC 8656 section 18); a message type interleaves method and class bits (RFC 8489 5).
METHOD_BINDING = 0x001
METHOD_ALLOCATE = 0x003
METHOD_REFRESH = 0x004
METHOD_SEND = 0x006
METHOD_DATA = 0x007
METHOD_CREATE_PERMISSION = 0x008
METHOD_CHANNEL_BIND = 0x009
CLASS_REQUEST = 0b00
CLASS_INDICATION = 0b01
CLASS_SUCCESS = 0b10
CLASS_ERROR = 0b11

ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_CHANNEL_NUMBER = 0x000C
ATTR_LIFETIME = 0x000D
ATTR_XOR_PEER_ADDRESS = 0x0012
ATTR_DATA = 0x0013
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_RELAYED_ADDRESS = 0x0016
ATTR_REQUESTED_ADDRESS_FAMILY = 0x0017
ATTR_EVEN_PORT = 0x0018
ATTR_REQUESTED_TRANSPORT = 0x0019
ATTR_DONT_FRAGMENT = 0x001A
ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C  # RFC 8489 14.6
ATTR_PASSWORD_ALGORITHM = 0x001D  # RFC 8489 14.12
ATTR_USERHASH = 0x001E  # RFC 8489 14.4
ATTR_RESERVATION_TOKEN = 0x0022
ATTR_ADDITIONAL_ADDRESS_FAMILY = 0x8000
ATTR_ADDRESS_ERROR_CODE = 0x8001  # RFC 8656 18.12
ATTR_PASSWORD_ALGORITHMS = 0x8002  # RFC 8489 14.11

# RFC 8489 18.5: password algorithms (the long-term key: MD5 or SHA-256 of user:realm:password)
PASSWORD_ALGORITHM_MD5 = 0x0001
PASSWORD_ALGORITHM_SHA256 = 0x0002
# RFC 8489 9.2: a NONCE that starts with this cookie carries 24 bits of STUN security features
# (base64, 4 characters) after it; bit 0 (the least significant, erratum 6290) "password
# algorithms" says the server offered PASSWORD-ALGORITHMS.
NONCE_COOKIE = "obMatJos2"
SECURITY_FEATURE_PASSWORD_ALGORITHMS = 0x000001

TRANSPORT_UDP = 17  # REQUESTED-TRANSPORT protocol number (RFC 8656 18.8: only UDP is defined)
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
# RFC 8489 14.9 / 14.10: REALM and NONCE are under 128 characters (at most 763 bytes).
MAX_REALM = 763
MAX_NONCE = 763
# A STUN/TURN message over TCP or carrying a whole UDP datagram: 16-bit length + header.
MAX_TURN_MESSAGE_SIZE = HEADER_SIZE + 0xFFFF
# ChannelData (RFC 8656 12.4): channel numbers 0x4000-0x4FFF, a 4-byte header.
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
CHANNEL_HEADER = struct.Struct(">HH")


def message_type(method: int, cls: int) -> int:
    return ((method & 0xF80) << 2) | ((method & 0x070) << 1) | (method & 0x00F) \
        | ((cls & 0b10) << 7) | ((cls & 0b01) << 4)


def method_of(msg_type: int) -> int:
    return ((msg_type & 0x3E00) >> 2) | ((msg_type & 0x00E0) >> 1) | (msg_type & 0x000F)


def class_of(msg_type: int) -> int:
    return ((msg_type & 0x0100) >> 7) | ((msg_type & 0x0010) >> 4)


def long_term_key(username: str, realm: str, password: str,
                  algorithm: int = PASSWORD_ALGORITHM_MD5) -> bytes:
    """RFC 8489 9.2.2: MD5 (or, with PASSWORD-ALGORITHM SHA-256, SHA-256) of
    username ":" realm ":" password (no OpaqueString/SASLprep: we hand out ASCII)."""
    text = f"{username}:{realm}:{password}".encode()
    if algorithm == PASSWORD_ALGORITHM_SHA256:
        return hashlib.sha256(text).digest()
    return hashlib.md5(text).digest()


def error_code_value(code: int, reason: str) -> bytes:
    return struct.pack(">HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def text_attr(msg: StunMessage, attr_type: int) -> str | None:
    """A UTF-8 attribute (REALM, NONCE, SOFTWARE), None if absent or not UTF-8."""
    raw = msg.attrs.get(attr_type)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def xor_addresses(msg: StunMessage, attr_type: int) -> list[tuple[str, int] | None]:
    """Every XOR-encoded address attribute of that type, in order (None for a malformed one)."""
    return [_unxor_address(v, msg.txid) for t, v in msg.attr_list if t == attr_type]


def looks_like_channel_data(data: bytes) -> bool:
    """RFC 8656 12 / RFC 7983: ChannelData starts with 0b01 (64-79 in the first byte)."""
    return len(data) >= 4 and 0x40 <= data[0] <= 0x4F


def channel_data(channel: int, payload: bytes, *, pad: bool = False) -> bytes:
    """A ChannelData message; over TCP (`pad`) it is padded to a multiple of 4 bytes."""
    out = CHANNEL_HEADER.pack(channel, len(payload)) + payload
    return out + b"\0" * (-len(payload) % 4) if pad else out


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """(channel number, payload); the datagram may carry padding after the payload."""
    if len(data) < 4:
        raise StunError("truncated ChannelData")
    channel, length = CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"ChannelData with invalid channel number 0x{channel:04x}")
    if 4 + length > len(data):
        raise StunError("ChannelData length runs past the datagram")
    return channel, bytes(data[4:4 + length])


def stream_frame_length(head: bytes) -> int | None:
    """Over TCP (RFC 8656 12.5 / RFC 8489 6.2.2) STUN messages and ChannelData follow each other:
    the byte length of the frame starting with these (>= 4) bytes, ChannelData padded to 4;
    None if it is neither (the stream is garbage)."""
    kind = head[0] >> 6
    length: int = struct.unpack_from(">H", head, 2)[0]
    if kind == 0:
        return HEADER_SIZE + length
    if kind == 1 and head[0] <= 0x4F:
        return 4 + length + (-length % 4)
    return None
