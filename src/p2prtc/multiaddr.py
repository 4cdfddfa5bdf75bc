"""A small multiaddr codec (spec: multiformats/multiaddr) for the protocols libp2p peers use.

Binary form: for each component, uvarint(protocol code) followed by its value, which is either
fixed-size (ip4, ip6, ports) or a uvarint length and that many bytes. String form:
`/name/value/name/...`.

Choices where implementations differ:
- `unix`: the value is an absolute path. We write it go-style, `/unix/tmp/p2p.sock` (the rest
  of the string is the path), and also read js-multiaddr 13's form, one percent-encoded segment
  `/unix/%2Ftmp%2Fp2p.sock` (recognised by its leading `%2F`), after which parsing continues.
  Both give the same bytes. A unix component that is not the last one, or whose path go-style
  cannot carry (ending in `/`, or a first directory name starting with `%2F`), is written
  js-style, so every address round-trips.
- `certhash`: the string keeps the multibase text as written (any of base58btc, base32,
  base64url, base16); from bytes we write base64url (`u`), as go, rust and js do.
- `p2p`: read as base58btc, CIDv1 or under the legacy name `ipfs`; written as base58btc. The
  value must be a peer id we can decode (identity or sha2-256 multihash), in both forms.
- `memory` (777) is left out: js-multiaddr encodes it as a length-prefixed string, go as a
  fixed 8-byte integer.
- Values that a string cannot carry (empty, or text containing `/`) are refused in the binary
  form too, so bytes -> string -> bytes always gives the same bytes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from . import multibase
from .errors import ProtocolError
from .identity import InvalidKey, PeerId
from .wire.varint import VarintIncomplete, decode_uvarint, encode_uvarint

# Our own cap: a circuit address with two peer ids and two certhashes is about 200 bytes; go and
# js set no limit, rust's Multiaddr neither. Addresses come off the network (identify, relay
# reservations), so anything longer is refused.
MAX_MULTIADDR_BYTES = 1024
# The longest text a <= 1 KiB address needs is about 3x its bytes (percent-encoded unix paths).
MAX_MULTIADDR_TEXT = 4 * MAX_MULTIADDR_BYTES


class MultiaddrError(ValueError, ProtocolError):
    """A multiaddr that cannot be parsed or decoded (it may have come from a remote peer)."""


# Value kinds.
_NONE = "none"  # no value
_IP4 = "ip4"  # 4 bytes
_IP6 = "ip6"  # 16 bytes
_PORT = "port"  # u16 big-endian
_TEXT = "text"  # length-prefixed UTF-8 without '/'
_PATH = "path"  # length-prefixed UTF-8 absolute path (unix)
_P2P = "p2p"  # length-prefixed peer id multihash
_CERTHASH = "certhash"  # length-prefixed multihash, multibase in the string form

_FIXED_SIZE = {_NONE: 0, _IP4: 4, _IP6: 16, _PORT: 2}


@dataclass(frozen=True)
class _Protocol:
    name: str
    code: int
    kind: str


# Codes from the multicodec table (multiformats/multicodec table.csv, tag "multiaddr").
_PROTOCOLS = (
    _Protocol("ip4", 4, _IP4),
    _Protocol("tcp", 6, _PORT),
    _Protocol("dccp", 33, _PORT),
    _Protocol("ip6", 41, _IP6),
    _Protocol("ip6zone", 42, _TEXT),
    _Protocol("dns", 53, _TEXT),
    _Protocol("dns4", 54, _TEXT),
    _Protocol("dns6", 55, _TEXT),
    _Protocol("dnsaddr", 56, _TEXT),
    _Protocol("sctp", 132, _PORT),
    _Protocol("udp", 273, _PORT),
    _Protocol("webrtc-direct", 280, _NONE),
    _Protocol("webrtc", 281, _NONE),
    _Protocol("p2p-circuit", 290, _NONE),
    _Protocol("unix", 400, _PATH),
    _Protocol("p2p", 421, _P2P),
    _Protocol("https", 443, _NONE),
    _Protocol("tls", 448, _NONE),
    _Protocol("sni", 449, _TEXT),
    _Protocol("noise", 454, _NONE),
    _Protocol("quic", 460, _NONE),
    _Protocol("quic-v1", 461, _NONE),
    _Protocol("webtransport", 465, _NONE),
    _Protocol("certhash", 466, _CERTHASH),
    _Protocol("ws", 477, _NONE),
    _Protocol("wss", 478, _NONE),
    _Protocol("http", 480, _NONE),
)
_BY_NAME = {p.name: p for p in _PROTOCOLS}
_BY_NAME["ipfs"] = _BY_NAME["p2p"]  # the legacy name; always written as p2p
_BY_CODE = {p.code: p for p in _PROTOCOLS}
PROTOCOL_CODES = {p.name: p.code for p in _PROTOCOLS}

_PORT_RE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class _Component:
    proto: _Protocol
    value: bytes  # the value as it is in the binary form (without the length prefix)
    text: str | None  # the value as it is in the string form (None for no value)

    def encode(self) -> bytes:
        code = encode_uvarint(self.proto.code)
        if self.proto.kind in _FIXED_SIZE:
            return code + self.value
        return code + encode_uvarint(len(self.value)) + self.value

    def to_string(self, last: bool) -> str:
        if self.text is None:
            return "/" + self.proto.name
        if self.proto.kind == _PATH:
            return "/" + self.proto.name + _path_to_string(self.text, last)
        return f"/{self.proto.name}/{self.text}"

    def __eq__(self, other: object) -> bool:  # certhash texts may differ for the same bytes
        return (
            isinstance(other, _Component)
            and other.proto.code == self.proto.code
            and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash((self.proto.code, self.value))


def _short(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "...")


# --- string form -------------------------------------------------------------------------------


def _parse_string(text: str) -> tuple[_Component, ...]:
    if len(text) > MAX_MULTIADDR_TEXT:
        raise MultiaddrError(f"multiaddr text longer than {MAX_MULTIADDR_TEXT} characters")
    if not text.startswith("/"):
        raise MultiaddrError(f"multiaddr must start with '/': {_short(text)}")
    parts = text.split("/")
    if parts[-1] == "":  # one trailing slash is tolerated; "/" alone is the empty address
        parts.pop()
    out: list[_Component] = []
    i = 1
    while i < len(parts):
        name = parts[i]
        i += 1
        if not name:
            raise MultiaddrError(f"empty protocol name in {_short(text)}")
        proto = _BY_NAME.get(name)
        if proto is None:
            raise MultiaddrError(f"unknown protocol {name!r} in {_short(text)}")
        if proto.kind == _NONE:
            out.append(_Component(proto, b"", None))
            continue
        # A go-style unix path may start with an empty segment ("/unix//x" is "//x").
        if i >= len(parts) or not (parts[i] if proto.kind != _PATH else any(parts[i:])):
            raise MultiaddrError(f"protocol {name!r} is missing its value in {_short(text)}")
        if proto.kind == _PATH:
            if parts[i][:3].upper() == "%2F":  # js-multiaddr: one percent-encoded segment
                try:
                    value = unquote(parts[i], errors="strict")
                except UnicodeDecodeError:
                    raise MultiaddrError(
                        f"unix path is not UTF-8 when percent-decoded in {_short(text)}"
                    ) from None
                i += 1
            else:  # go: the rest of the address is the path
                value = "/" + "/".join(parts[i:])
                i = len(parts)
        else:
            value = parts[i]
            i += 1
        try:
            out.append(_component_from_text(proto, value))
        except MultiaddrError as e:
            raise MultiaddrError(f"{e} in {_short(text)}") from None
    _check_size(out)
    return tuple(out)


def _component_from_text(proto: _Protocol, text: str) -> _Component:
    kind = proto.kind
    if kind == _IP4:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            raise MultiaddrError(f"invalid IPv4 address {text!r}") from None
        return _Component(proto, addr.packed, str(addr))
    if kind == _IP6:
        if "%" in text:  # ipaddress accepts a scope id; in a multiaddr that is /ip6zone
            raise MultiaddrError(f"invalid IPv6 address {text!r} (use /ip6zone for a zone)")
        try:
            packed = ipaddress.IPv6Address(text).packed
        except ValueError:
            raise MultiaddrError(f"invalid IPv6 address {text!r}") from None
        return _Component(proto, packed, _format_ip6(packed))
    if kind == _PORT:
        if not _PORT_RE.fullmatch(text) or int(text) > 0xFFFF:
            raise MultiaddrError(f"invalid {proto.name} port {text!r}")
        port = int(text)
        return _Component(proto, port.to_bytes(2, "big"), str(port))
    if kind in (_TEXT, _PATH):
        try:
            value = text.encode("utf-8")
        except UnicodeEncodeError:
            raise MultiaddrError(f"{proto.name} value is not valid Unicode") from None
        _check_text(proto, text)
        return _Component(proto, value, text)
    if kind == _P2P:
        try:
            peer = PeerId.from_string(text)
        except InvalidKey as e:
            raise MultiaddrError(f"invalid p2p value: {e}") from None
        return _Component(proto, peer.to_bytes(), peer.to_base58())
    if kind == _CERTHASH:
        try:
            value = multibase.decode(text)
        except multibase.MultibaseError as e:
            raise MultiaddrError(f"invalid certhash {text!r}: {e}") from None
        _check_multihash(value)
        return _Component(proto, value, text)
    raise AssertionError(kind)


def _check_text(proto: _Protocol, text: str) -> None:
    if not text:
        raise MultiaddrError(f"{proto.name} value is empty")
    if proto.kind == _PATH:
        if not text.startswith("/"):
            raise MultiaddrError(f"unix path {text!r} is not absolute")
    elif "/" in text:
        raise MultiaddrError(f"{proto.name} value {text!r} contains '/'")


def _path_to_string(path: str, last: bool) -> str:
    # go-style only where reading it back gives the same path: go's parser takes the whole rest
    # of the address, so a unix component followed by others is written js-style.
    if not last or path.endswith("/") or path[1:4].upper() == "%2F":
        return "/" + quote(path, safe="")
    return path


def _format_ip6(packed: bytes) -> str:
    """RFC 5952 text (what js and go write): the first longest run of two or more zero groups
    becomes '::'. Written by hand because `ipaddress` prints IPv4-mapped addresses differently
    across Python versions."""
    groups = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len = -1, 1
    i = 0
    while i < 8:
        if groups[i]:
            i += 1
            continue
        j = i
        while j < 8 and not groups[j]:
            j += 1
        if j - i > best_len:
            best_start, best_len = i, j - i
        i = j
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


# --- binary form -------------------------------------------------------------------------------


def _decode_bytes(data: bytes) -> tuple[_Component, ...]:
    if len(data) > MAX_MULTIADDR_BYTES:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_BYTES} bytes")
    out: list[_Component] = []
    pos = 0
    end = len(data)
    while pos < end:
        code, pos = _read_uvarint(data, pos, "protocol code")
        proto = _BY_CODE.get(code)
        if proto is None:
            raise MultiaddrError(f"unknown protocol code {code} in binary multiaddr")
        size = _FIXED_SIZE.get(proto.kind)
        if size is None:
            size, pos = _read_uvarint(data, pos, f"{proto.name} value length")
        if size > end - pos:
            raise MultiaddrError(f"binary multiaddr truncated inside the {proto.name} value")
        value = data[pos : pos + size]
        pos += size
        out.append(_component_from_bytes(proto, value))
    return tuple(out)


def _read_uvarint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        return decode_uvarint(data, pos)
    except VarintIncomplete:
        raise MultiaddrError(f"binary multiaddr truncated inside a {what}") from None
    except ProtocolError as e:
        raise MultiaddrError(f"bad {what} in binary multiaddr: {e}") from None


def _component_from_bytes(proto: _Protocol, value: bytes) -> _Component:
    kind = proto.kind
    if kind == _NONE:
        return _Component(proto, b"", None)
    if kind == _IP4:
        return _Component(proto, value, str(ipaddress.IPv4Address(value)))
    if kind == _IP6:
        return _Component(proto, value, _format_ip6(value))
    if kind == _PORT:
        return _Component(proto, value, str(int.from_bytes(value, "big")))
    if kind in (_TEXT, _PATH):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MultiaddrError(f"{proto.name} value is not UTF-8") from None
        _check_text(proto, text)
        return _Component(proto, value, text)
    if kind == _P2P:
        try:
            peer = PeerId.from_bytes(value)
        except InvalidKey as e:
            raise MultiaddrError(f"invalid p2p value: {e}") from None
        return _Component(proto, value, peer.to_base58())
    if kind == _CERTHASH:
        _check_multihash(value)
        return _Component(proto, value, multibase.encode(value, "base64url"))
    raise AssertionError(kind)


def _check_multihash(value: bytes) -> None:
    try:
        _code, pos = decode_uvarint(value)
        length, pos = decode_uvarint(value, pos)
    except (VarintIncomplete, ProtocolError):
        raise MultiaddrError("certhash is not a multihash") from None
    if len(value) - pos != length:
        raise MultiaddrError("certhash multihash length does not match its digest")


def _check_size(parts: list[_Component] | tuple[_Component, ...]) -> None:
    size = sum(len(p.encode()) for p in parts)
    if size > MAX_MULTIADDR_BYTES:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_BYTES} bytes")


# --- the public type ---------------------------------------------------------------------------


class Multiaddr:
    """An immutable multiaddr. Equal (and hashed) by its binary form."""

    __slots__ = ("_parts", "_bytes")

    def __init__(self, addr: str | bytes | bytearray | memoryview | Multiaddr) -> None:
        if isinstance(addr, Multiaddr):
            parts = addr._parts
        elif isinstance(addr, str):
            parts = _parse_string(addr)
        elif isinstance(addr, (bytes, bytearray, memoryview)):
            parts = _decode_bytes(bytes(addr))
        else:
            raise TypeError(f"cannot make a Multiaddr from {type(addr).__name__}")
        self._set(parts)

    def _set(self, parts: tuple[_Component, ...]) -> None:
        self._parts = parts
        self._bytes = b"".join(p.encode() for p in parts)

    @classmethod
    def _from_parts(cls, parts: tuple[_Component, ...]) -> Multiaddr:
        _check_size(parts)
        ma = cls.__new__(cls)
        ma._set(parts)
        return ma

    @classmethod
    def from_string(cls, text: str) -> Multiaddr:
        if not isinstance(text, str):
            raise TypeError("Multiaddr.from_string needs a str")
        return cls(text)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Multiaddr:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("Multiaddr.from_bytes needs bytes")
        return cls(data)

    def to_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        n = len(self._parts)
        return "".join(p.to_string(i == n - 1) for i, p in enumerate(self._parts)) or "/"

    def __repr__(self) -> str:
        return f"Multiaddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Multiaddr) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def components(self) -> list[tuple[str, str | None]]:
        return [(p.proto.name, p.text) for p in self._parts]

    def protocols(self) -> list[str]:
        return [p.proto.name for p in self._parts]

    def value_for(self, name: str) -> str | None:
        """The value of the first component named `name` (None if absent or valueless)."""
        for p in self._parts:
            if p.proto.name == name:
                return p.text
        return None

    def has(self, name: str) -> bool:
        return any(p.proto.name == name for p in self._parts)

    def encapsulate(self, other: Multiaddr | str) -> Multiaddr:
        return Multiaddr._from_parts(self._parts + Multiaddr(other)._parts)

    def __truediv__(self, other: Multiaddr | str) -> Multiaddr:
        return self.encapsulate(other)

    def decapsulate(self, what: Multiaddr | str) -> Multiaddr:
        """Everything before the last occurrence of a protocol (by name: `"p2p-circuit"` or
        `"/p2p-circuit"`) or of a multiaddr (its whole component sequence, values included).
        Returns the address unchanged when there is no such occurrence (as go-multiaddr does)."""
        if isinstance(what, str) and what.lstrip("/") in _BY_NAME and what.count("/") <= 1:
            name = _BY_NAME[what.lstrip("/")].name
            for i in range(len(self._parts) - 1, -1, -1):
                if self._parts[i].proto.name == name:
                    return Multiaddr._from_parts(self._parts[:i])
            return self
        if isinstance(what, str) and not what.startswith("/"):
            raise MultiaddrError(f"unknown protocol {what!r}")
        needle = Multiaddr(what)._parts
        if not needle:
            return self
        n = len(needle)
        for i in range(len(self._parts) - n, -1, -1):
            if self._parts[i : i + n] == needle:
                return Multiaddr._from_parts(self._parts[:i])
        return self

    def split_last(self, name: str) -> tuple[Multiaddr, Multiaddr] | None:
        """(before, after) the last component named `name`, without it; None if absent.
        `/ip4/…/p2p/R/p2p-circuit/webrtc/p2p/B` split at p2p-circuit gives the relay's address
        and `/webrtc/p2p/B`."""
        for i in range(len(self._parts) - 1, -1, -1):
            if self._parts[i].proto.name == name:
                return (Multiaddr._from_parts(self._parts[:i]),
                        Multiaddr._from_parts(self._parts[i + 1 :]))
        return None

    def relay_peer(self) -> PeerId | None:
        """For a circuit address `<relay>/p2p/R/p2p-circuit/...`: R, the relay's peer id; else
        None."""
        parts = self.split_last("p2p-circuit")
        return parts[0].peer_id() if parts is not None else None

    def peer_id(self) -> PeerId | None:
        """The peer id of the last /p2p component (for a circuit address, the destination)."""
        for p in reversed(self._parts):
            if p.proto.kind == _P2P:
                return PeerId.from_bytes(p.value)
        return None

    def without_peer_id(self) -> Multiaddr:
        """The address without a trailing /p2p/<id>."""
        if self._parts and self._parts[-1].proto.kind == _P2P:
            return Multiaddr._from_parts(self._parts[:-1])
        return self

    def with_peer_id(self, peer: PeerId | str) -> Multiaddr:
        """The address ending in /p2p/<peer>. Raises MultiaddrError if it already ends with a
        different peer id."""
        pid = peer if isinstance(peer, PeerId) else PeerId.from_string(peer)
        if self._parts and self._parts[-1].proto.kind == _P2P:
            if self._parts[-1].value == pid.to_bytes():
                return self
            raise MultiaddrError(f"{self} already ends with a different peer id than {pid}")
        comp = _Component(_BY_NAME["p2p"], pid.to_bytes(), pid.to_base58())
        return Multiaddr._from_parts(self._parts + (comp,))
