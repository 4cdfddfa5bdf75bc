"""TURN server core (RFC 8656), sans-I/O: datagrams and stream frames in, actions out.

`TurnServer.client_datagram(data, five_tuple, now)` takes what a client sent (one UDP datagram, or
one frame of a TCP stream: see `StreamFramer`) and returns actions for the adapter
(`relay/turn_io.py`): `ToClient` (send on the client's 5-tuple), `ToPeer` (send from an
allocation's relayed socket), `OpenRelay` / `CloseRelay` (bind or close a relayed UDP socket).
`peer_datagram(allocation, data, peer, now)` takes what arrived on a relayed socket, `expire(now)`
ages allocations, permissions and channels, `client_closed(five)` ends a TCP client's allocation.
`now` is wall-clock seconds (`time.time()`): credential expiry is a Unix time.

Authentication is RFC 8489's long-term mechanism with TURN REST API credentials
(draft-uberti-behave-turn-rest-00, what coturn's `use-auth-secret` implements): the username is
`<unix expiry>:<peer id>`, the password base64(HMAC-SHA1(secret, username)); nothing is stored per
user, the server recomputes the password from its secret. Nonces are stateless too (an expiry and
an HMAC bound to the client's IP). No open relay: a peer can reach a client only from an IP address
the client named in CreatePermission or ChannelBind, and every refusal is counted by reason.

Supported: Allocate (UDP relays, IPv4 and, with REQUESTED-ADDRESS-FAMILY, IPv6: RFC 8656 and
RFC 6156; 440 for a family the adapter has no relay address of), Refresh (LIFETIME 0 deletes),
CreatePermission, ChannelBind, Send/Data indications, ChannelData; Binding requests on a TURN-only
socket; MESSAGE-INTEGRITY-SHA256 and PASSWORD-ALGORITHMS (RFC 8489 9.2). Not supported (answered
420 as unknown comprehension-required attributes): RESERVATION-TOKEN, EVEN-PORT's reservation
(R=1: 508; R=0, an even port, is done); USERHASH (400);
dual allocations (ADDITIONAL-ADDRESS-FAMILY gets IPv4 and ADDRESS-ERROR-CODE 440 for IPv6).
DONT-FRAGMENT is accepted and not acted on (the kernel's default path-MTU behaviour applies).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from ..transports.webrtc_direct import stun as codec
from ..transports.webrtc_direct.stun import StunError, StunMessage

log = logging.getLogger(__name__)

Addr = tuple[str, int]

# -- limits (named, with where they come from) ---------------------------------------------------
# RFC 8656 section 2 / 7.2: allocations last 10 minutes unless refreshed ("default lifetime").
DEFAULT_LIFETIME = 600
# RFC 8656 7.2 suggests at most 3600 s; coturn's max-allocate-lifetime default is 3600 too.
MAX_LIFETIME = 3600
# RFC 8656 9: a permission lasts 300 s (fixed, not negotiable).
PERMISSION_LIFETIME = 300
# RFC 8656 12: a channel binding lasts 10 minutes.
CHANNEL_LIFETIME = 600
# RFC 8656 12: after a binding expires, neither its number nor its peer may be bound to another
# for 5 minutes (late ChannelData must not reach the wrong peer): expired bindings linger this long.
CHANNEL_REBIND_GUARD = 300
# coturn's stale-nonce default: a nonce is good for 600 s, then 438 Stale Nonce.
NONCE_LIFETIME = 600
# Ours (coturn's total-quota and user-quota default to 0, unlimited). A browser makes one
# allocation per TURN URL per peer connection (udp + tcp: 2); 16 leaves room for 8 connections.
MAX_ALLOCATIONS = 1000
MAX_ALLOCATIONS_PER_PEER = 16
# Ours (coturn has no default byte quota; max-bps 0 = unlimited): one allocation may relay 1 GiB
# in all and 32 MiB/s, above a browser's direct data-channel throughput (~15 MB/s measured here).
MAX_ALLOCATION_BYTES = 1 << 30
MAX_ALLOCATION_BANDWIDTH = 32 << 20
# Ours: the peers one allocation talks to. ICE needs one per remote candidate address.
MAX_PERMISSIONS_PER_ALLOCATION = 64
MAX_CHANNELS_PER_ALLOCATION = 64
# Ours: peer addresses whose encoded XOR-PEER-ADDRESS an allocation keeps (Data indications).
MAX_CACHED_PEERS = 256
# The bandwidth bucket holds this many seconds of traffic (bursts of one ICE check round).
BANDWIDTH_BURST_SECONDS = 1.0
# A refusal of one kind is logged at most once per this many seconds (floods stay quiet).
LOG_INTERVAL = 10.0
# The realm when none is configured (coturn requires one; any string works for REST credentials).
DEFAULT_REALM = "p2prtc"
SOFTWARE = b"p2prtc"
# RFC 8489 9.2.1 / 14.11: every nonce carries the cookie with the "password algorithms" feature
# bit, and every 401/438 offers PASSWORD-ALGORITHMS: SHA-256 first (preferred), then MD5 (what
# RFC 5389 clients, aioice and libwebrtc use).
NONCE_PREFIX = codec.NONCE_COOKIE + base64.b64encode(
    codec.SECURITY_FEATURE_PASSWORD_ALGORITHMS.to_bytes(3, "big")).decode("ascii")
PASSWORD_ALGORITHMS_OFFER = struct.pack(">HHHH", codec.PASSWORD_ALGORITHM_SHA256, 0,
                                        codec.PASSWORD_ALGORITHM_MD5, 0)
# The first 401 of every allocation (REALM and NONCE for a client without them) is the normal
# start of the exchange, not a refusal: neither counted nor logged.
CHALLENGE = "challenge"

# Error codes (RFC 8489 14.8, RFC 8656 19).
BAD_REQUEST = 400
UNAUTHORIZED = 401
FORBIDDEN = 403
UNKNOWN_ATTRIBUTE = 420
ALLOCATION_MISMATCH = 437
STALE_NONCE = 438
ADDRESS_FAMILY_NOT_SUPPORTED = 440
WRONG_CREDENTIALS = 441
UNSUPPORTED_TRANSPORT = 442
PEER_ADDRESS_FAMILY_MISMATCH = 443
ALLOCATION_QUOTA_REACHED = 486
INSUFFICIENT_CAPACITY = 508
REASONS = {
    BAD_REQUEST: "Bad Request", UNAUTHORIZED: "Unauthorized", FORBIDDEN: "Forbidden",
    UNKNOWN_ATTRIBUTE: "Unknown Attribute", ALLOCATION_MISMATCH: "Allocation Mismatch",
    STALE_NONCE: "Stale Nonce", ADDRESS_FAMILY_NOT_SUPPORTED: "Address Family not Supported",
    WRONG_CREDENTIALS: "Wrong Credentials", UNSUPPORTED_TRANSPORT: "Unsupported Transport Protocol",
    PEER_ADDRESS_FAMILY_MISMATCH: "Peer Address Family Mismatch",
    ALLOCATION_QUOTA_REACHED: "Allocation Quota Reached",
    INSUFFICIENT_CAPACITY: "Insufficient Capacity",
}

# Comprehension-required attributes (0x0000-0x7FFF) we understand in requests; any other one is
# answered 420 (RFC 8489 6.3.1). USERHASH is not offered (no username anonymity): 400.
KNOWN_REQUIRED = frozenset({
    codec.ATTR_USERNAME, codec.ATTR_MESSAGE_INTEGRITY, codec.ATTR_REALM, codec.ATTR_NONCE,
    codec.ATTR_LIFETIME, codec.ATTR_REQUESTED_TRANSPORT, codec.ATTR_XOR_PEER_ADDRESS,
    codec.ATTR_CHANNEL_NUMBER, codec.ATTR_DATA, codec.ATTR_DONT_FRAGMENT,
    codec.ATTR_REQUESTED_ADDRESS_FAMILY, codec.ATTR_MESSAGE_INTEGRITY_SHA256,
    codec.ATTR_PRIORITY, codec.ATTR_USE_CANDIDATE, codec.ATTR_XOR_MAPPED_ADDRESS,
    codec.ATTR_PASSWORD_ALGORITHM, codec.ATTR_EVEN_PORT,
})


# -- TURN REST API credentials -------------------------------------------------------------------

def rest_username(peer: str, expiry: int) -> str:
    return f"{int(expiry)}:{peer}"


def rest_password(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), as coturn's use-auth-secret computes it."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_expiry(username: str) -> int | None:
    """The Unix expiry a REST username starts with, None if it does not start with one."""
    head, _, _ = username.partition(":")
    return int(head) if head.isdigit() and len(head) <= 12 else None


def peer_of(username: str) -> str:
    """Whom an allocation counts against: the part after the expiry (the peer id)."""
    _, sep, tail = username.partition(":")
    return tail if sep else username


# -- the 5-tuple and the actions -----------------------------------------------------------------

class FiveTuple(NamedTuple):
    """The client's side of the 5-tuple: transport ("udp"/"tcp"), client and server address.
    (A tuple, not a frozen dataclass: one is made per datagram, and tuples are made faster.)"""
    transport: str
    client: Addr
    server: Addr


# Actions: slotted dataclasses (one or two per relayed datagram; frozen ones are slower to make).
@dataclass(slots=True)
class ToClient:
    five: FiveTuple
    data: bytes


@dataclass(slots=True)
class ToPeer:
    allocation: int
    peer: Addr
    data: bytes


@dataclass(slots=True)
class OpenRelay:
    """Bind a relayed UDP socket for `allocation` (for a client that reached us on `server`),
    of IP version `family` (4 or 6), then call `relay_opened` with its address as peers see it,
    or `relay_failed`."""
    allocation: int
    server: Addr
    family: int = 4
    even: bool = False  # EVEN-PORT: an even port number


@dataclass(slots=True)
class CloseRelay:
    allocation: int
    five: FiveTuple  # whose it was (a TCP client's connection outlives it only briefly)


Action = ToClient | ToPeer | OpenRelay | CloseRelay


class ChannelRoute(NamedTuple):
    """A channel the core allows data on, until `until` (the earliest of the allocation's,
    the channel's and the permission's expiry) or until `TurnServer.generation` changes: what an
    adapter may forward without asking the core per datagram (`relay/turn_io.py`), counting
    every datagram with `TurnServer.account`."""
    allocation: Allocation
    five: FiveTuple
    peer: Addr
    channel: int
    until: float


@dataclass
class TurnLimits:
    max_allocations: int = MAX_ALLOCATIONS
    max_allocations_per_peer: int = MAX_ALLOCATIONS_PER_PEER
    max_lifetime: int = MAX_LIFETIME
    max_bytes: int = MAX_ALLOCATION_BYTES          # 0 = unlimited
    max_bandwidth: int = MAX_ALLOCATION_BANDWIDTH  # bytes/s, 0 = unlimited
    max_permissions: int = MAX_PERMISSIONS_PER_ALLOCATION
    max_channels: int = MAX_CHANNELS_PER_ALLOCATION


@dataclass
class TurnStats:
    """What the relay's metrics show (`relay/metrics.py`)."""
    allocations_active: int = 0
    allocations_total: int = 0
    bytes_relayed: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # reason -> count


class _Bucket:
    """Token bucket in bytes (bandwidth per allocation)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate * BANDWIDTH_BURST_SECONDS, 65536.0)
        self.tokens = self.capacity
        self.last = now

    def take(self, n: int, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


@dataclass
class Allocation:
    id: int
    five: FiveTuple
    username: str
    signer: Signer             # how its Allocate was signed: responses to it are signed so
    expires: float
    allocate_txid: bytes
    bucket: _Bucket
    relayed: Addr | None = None  # None while its socket is being opened
    allocate_response: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)   # peer IP -> expiry
    # number -> (peer, expiry); kept CHANNEL_REBIND_GUARD past expiry, unusable for data
    channels: dict[int, tuple[Addr, float]] = field(default_factory=dict)
    channel_of: dict[Addr, int] = field(default_factory=dict)
    xor_peer: dict[Addr, bytes] = field(default_factory=dict)  # XOR-PEER-ADDRESS attributes
    family: int = 4            # of the relayed address (RFC 8656 / RFC 6156: peers are too)
    allocate_extra: list[tuple[int, bytes]] = field(default_factory=list)
    bytes: int = 0

    @property
    def peer(self) -> str:
        return peer_of(self.username)


class _RateLimitedLog:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()

    def __call__(self, reason: str, detail: str, now: float) -> None:
        if now - self.last.get(reason, -LOG_INTERVAL) < LOG_INTERVAL:
            self.suppressed[reason] += 1
            return
        more = self.suppressed.pop(reason, 0)
        self.last[reason] = now
        log.info("TURN refused (%s): %s%s", reason, detail,
                 f" ({more} more like it in the last {LOG_INTERVAL:g} s)" if more else "")


class _Refused(Exception):
    """A request answered with an error response."""

    def __init__(self, code: int, reason: str, detail: str = "", *,
                 attrs: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(detail or reason)
        self.code = code
        self.reason = reason  # the metrics label
        self.detail = detail or REASONS.get(code, "")
        self.attrs = attrs or []


class TurnServer:
    """The state of one TURN server: allocations keyed by 5-tuple and by relayed socket id."""

    def __init__(self, secret: str, realm: str = DEFAULT_REALM, limits: TurnLimits | None = None,
                 stats: TurnStats | None = None, *, allow_loopback_peers: bool = False,
                 families: frozenset[int] = frozenset({4})) -> None:
        self.secret = secret
        self.realm = realm
        self.limits = limits or TurnLimits()
        self.stats = stats if stats is not None else TurnStats()
        self.allow_loopback_peers = allow_loopback_peers
        self.families = families  # the IP versions the adapter can bind relayed sockets for
        self.allocations: dict[int, Allocation] = {}
        self.by_five: dict[FiveTuple, Allocation] = {}
        self.per_peer: Counter[str] = Counter()
        self._next_id = 1
        self._nonce_key = os.urandom(16)
        self._txid_prefix = os.urandom(4)
        self._indications = 0
        self._log = _RateLimitedLog()
        # Bumped whenever a route may appear or go other than by expiring (an allocation is
        # removed or opened, a permission or channel made): adapters drop cached routes then.
        self.generation = 0

    # -- inputs ----------------------------------------------------------------------------------

    def client_datagram(self, data: bytes, five: FiveTuple, now: float) -> list[Action]:
        """One datagram (UDP) or frame (TCP) from a client."""
        n = len(data)
        if n > codec.MAX_TURN_MESSAGE_SIZE:
            return self._drop("oversized", f"{n}-byte datagram from {five.client[0]}", now)
        if n >= 4 and 0x40 <= data[0] <= 0x4F:  # ChannelData (codec.looks_like_channel_data)
            return self._client_channel_data(data, five, now)
        try:
            msg = codec.parse(data, codec.MAX_TURN_MESSAGE_SIZE)
        except StunError as e:
            return self._drop("garbage", f"from {five.client[0]}: {e}", now)
        method, cls = codec.method_of(msg.msg_type), codec.class_of(msg.msg_type)
        if cls == codec.CLASS_INDICATION:
            if method == codec.METHOD_SEND:
                return self._send_indication(msg, five, now)
            return []
        if cls != codec.CLASS_REQUEST:
            return []  # responses: we send no requests
        if method == codec.METHOD_BINDING:
            return [ToClient(five, codec.build(codec.BINDING_SUCCESS, msg.txid, [
                (codec.ATTR_XOR_MAPPED_ADDRESS, codec.xor_address_value(five.client, msg.txid)),
                (codec.ATTR_SOFTWARE, SOFTWARE)]))]
        handler = {
            codec.METHOD_ALLOCATE: self._allocate,
            codec.METHOD_REFRESH: self._refresh,
            codec.METHOD_CREATE_PERMISSION: self._create_permission,
            codec.METHOD_CHANNEL_BIND: self._channel_bind,
        }.get(method)
        signer: Signer | None = None
        try:
            if handler is None:
                raise _Refused(BAD_REQUEST, "unknown-method", f"method 0x{method:03x}")
            username, signer = self._authenticate(data, msg, five, now)
            unknown = [t for t, _ in msg.attr_list if t < 0x8000 and t not in KNOWN_REQUIRED]
            if unknown:
                raise _Refused(UNKNOWN_ATTRIBUTE, "unknown-attribute",
                               ", ".join(f"0x{t:04x}" for t in unknown),
                               attrs=[(codec.ATTR_UNKNOWN_ATTRIBUTES,
                                       b"".join(struct.pack(">H", t) for t in unknown[:16]))])
            return handler(msg, five, username, signer, now)
        except _Refused as r:
            if r.reason != CHALLENGE:
                self._refuse(r.reason, f"{r.code} {r.detail} for {five.transport} "
                             f"{five.client[0]}:{five.client[1]}", now)
            attrs = [(codec.ATTR_ERROR_CODE, codec.error_code_value(r.code, r.detail[:128]))]
            attrs += r.attrs
            if r.code in (UNAUTHORIZED, STALE_NONCE):
                attrs += self._challenge(five, now)
                signer = None  # 401 and 438 are not signed (RFC 8489 9.2.4)
            response = _build(codec.message_type(method, codec.CLASS_ERROR), msg.txid,
                              attrs + [(codec.ATTR_SOFTWARE, SOFTWARE)], signer)
            return [ToClient(five, response)]

    def relay_opened(self, allocation: int, relayed: Addr, now: float) -> list[Action]:
        """The relayed socket of a pending allocation is bound: answer the Allocate."""
        a = self.allocations.get(allocation)
        if a is None or a.relayed is not None:
            return []
        a.relayed = relayed
        self.generation += 1
        txid = a.allocate_txid
        a.allocate_response = _build(codec.message_type(codec.METHOD_ALLOCATE,
                                                        codec.CLASS_SUCCESS), txid, [
            (codec.ATTR_XOR_RELAYED_ADDRESS, codec.xor_address_value(relayed, txid)),
            (codec.ATTR_LIFETIME, struct.pack(">I", max(0, round(a.expires - now)))),
            (codec.ATTR_XOR_MAPPED_ADDRESS, codec.xor_address_value(a.five.client, txid)),
            *a.allocate_extra,
            (codec.ATTR_SOFTWARE, SOFTWARE),
        ], a.signer)
        log.debug("TURN allocation %d for %s: relayed %s:%d", a.id, a.username, *relayed)
        return [ToClient(a.five, a.allocate_response)]

    def relay_failed(self, allocation: int, now: float) -> list[Action]:
        """No relayed socket could be bound (port range exhausted): 508."""
        a = self.allocations.get(allocation)
        if a is None or a.relayed is not None:
            return []
        self._remove(a)
        self._refuse("no-relay-port", f"no relayed port for {a.username}", now)
        return [ToClient(a.five, _build(
            codec.message_type(codec.METHOD_ALLOCATE, codec.CLASS_ERROR), a.allocate_txid,
            [(codec.ATTR_ERROR_CODE, codec.error_code_value(INSUFFICIENT_CAPACITY,
                                                            "no relayed port available")),
             (codec.ATTR_SOFTWARE, SOFTWARE)], a.signer))]

    def peer_datagram(self, allocation: int, data: bytes, peer: Addr, now: float) -> list[Action]:
        """A datagram from `peer` arrived on the relayed socket of `allocation`."""
        a = self.allocations.get(allocation)
        if a is None or a.relayed is None or a.expires <= now:
            return []
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            return self._drop("peer-without-permission",
                              f"{peer[0]}:{peer[1]} -> allocation of {a.username}", now)
        if not self.account(a, len(data), now):
            return []
        channel = a.channel_of.get(peer)
        if channel is not None and a.channels[channel][1] > now:
            return [ToClient(a.five, codec.channel_data(channel, data,
                                                        pad=a.five.transport == "tcp"))]
        return [ToClient(a.five, self._data_indication(a, peer, data))]

    def _data_indication(self, a: Allocation, peer: Addr, data: bytes) -> bytes:
        """A Data indication, assembled directly (one per relayed datagram without a channel).
        An IPv4 XOR-PEER-ADDRESS does not depend on the transaction id, so each IPv4 peer's
        attribute is made once (IPv6 ones per indication); the transaction id of an
        indication is only a debugging aid (RFC 8489 6): a random prefix and a counter."""
        self._indications += 1
        txid = self._txid_prefix + self._indications.to_bytes(8, "big")
        attr = a.xor_peer.get(peer)
        if attr is None:
            value = codec.xor_address_value(peer, txid)
            attr = _ATTR_HEAD.pack(codec.ATTR_XOR_PEER_ADDRESS, len(value)) + value
            if a.family == 4:  # an IPv6 one is XORed with the transaction id too
                if len(a.xor_peer) >= MAX_CACHED_PEERS:
                    a.xor_peer.clear()
                a.xor_peer[peer] = attr
        n = len(data)
        pad = -n % 4
        return b"".join((
            codec.HEADER.pack(DATA_INDICATION, len(attr) + 4 + n + pad, codec.MAGIC_COOKIE,
                              txid),
            attr, _ATTR_HEAD.pack(codec.ATTR_DATA, n), data, _PADDING[pad]))

    def expire(self, now: float) -> list[Action]:
        """Drop what has expired: allocations (closing their sockets), permissions, channels."""
        actions: list[Action] = []
        for a in list(self.allocations.values()):
            if a.expires <= now:
                log.debug("TURN allocation %d of %s expired", a.id, a.username)
                actions += self._remove(a)
                continue
            for ip in [ip for ip, t in a.permissions.items() if t <= now]:
                del a.permissions[ip]
            for ch in [ch for ch, (_, t) in a.channels.items()
                       if t + CHANNEL_REBIND_GUARD <= now]:
                peer, _ = a.channels.pop(ch)
                a.channel_of.pop(peer, None)
        return actions

    def channel_route(self, five: FiveTuple, channel: int, now: float) -> ChannelRoute | None:
        """Where ChannelData on `channel` from `five` may go without the core, None when it
        needs the core (no allocation, channel or permission: the core refuses it)."""
        a = self.by_five.get(five)
        if a is None or a.relayed is None:
            return None
        bound = a.channels.get(channel)
        if bound is None:
            return None
        peer, channel_expires = bound
        permission_expires = a.permissions.get(peer[0])
        if permission_expires is None:
            return None
        until = min(a.expires, channel_expires, permission_expires)
        return ChannelRoute(a, five, peer, channel, until) if until > now else None

    def send_route(self, five: FiveTuple, peer: Addr, now: float) -> ChannelRoute | None:
        """Where a Send indication's DATA from `five` to `peer` may go without the core (a
        permission for the peer's IP; `channel` 0), else None (the core refuses it)."""
        a = self.by_five.get(five)
        if a is None or a.relayed is None:
            return None
        permission_expires = a.permissions.get(peer[0])
        if permission_expires is None:
            return None
        until = min(a.expires, permission_expires)
        return ChannelRoute(a, five, peer, 0, until) if until > now else None

    def peer_route(self, allocation: int, peer: Addr, now: float) -> ChannelRoute | None:
        """Where datagrams from `peer` to `allocation`'s relayed address may go as ChannelData
        without the core (the client has a channel to it), else None."""
        a = self.allocations.get(allocation)
        if a is None or a.relayed is None:
            return None
        channel = a.channel_of.get(peer)
        permission_expires = a.permissions.get(peer[0])
        if channel is None or permission_expires is None:
            return None
        until = min(a.expires, a.channels[channel][1], permission_expires)
        return ChannelRoute(a, a.five, peer, channel, until) if until > now else None

    def client_closed(self, five: FiveTuple) -> list[Action]:
        """A TCP client's connection ended: its allocation goes with it (RFC 8656 3.1)."""
        a = self.by_five.get(five)
        return self._remove(a) if a is not None else []

    def has_allocation(self, five: FiveTuple) -> bool:
        return five in self.by_five

    def has_allocation_id(self, allocation: int) -> bool:
        return allocation in self.allocations

    # -- authentication --------------------------------------------------------------------------

    def _challenge(self, five: FiveTuple, now: float) -> list[tuple[int, bytes]]:
        return [(codec.ATTR_REALM, self.realm.encode("utf-8")),
                (codec.ATTR_NONCE, self._nonce(five.client[0], now).encode("ascii")),
                (codec.ATTR_PASSWORD_ALGORITHMS, PASSWORD_ALGORITHMS_OFFER)]

    def _nonce(self, client_ip: str, now: float) -> str:
        expiry = int(now) + NONCE_LIFETIME
        mac = hmac.new(self._nonce_key, f"{expiry}:{client_ip}".encode(), hashlib.sha256)
        return f"{NONCE_PREFIX}{expiry:x}-{mac.hexdigest()[:24]}"

    def _nonce_ok(self, nonce: str, client_ip: str, now: float) -> bool:
        if not nonce.startswith(NONCE_PREFIX):
            return False
        head, _, mac = nonce[len(NONCE_PREFIX):].partition("-")
        try:
            expiry = int(head, 16)
        except ValueError:
            return False
        good = hmac.new(self._nonce_key, f"{expiry}:{client_ip}".encode(), hashlib.sha256)
        return hmac.compare_digest(mac, good.hexdigest()[:24]) and now < expiry

    def _authenticate(self, data: bytes, msg: StunMessage, five: FiveTuple,
                      now: float) -> tuple[str, Signer]:
        """(username, how to sign the answer) of a request with valid credentials, else
        _Refused (RFC 8489 9.2.4, in its order)."""
        sha256 = msg.integrity_sha256_offset is not None
        if msg.integrity_offset is None and not sha256:
            raise _Refused(UNAUTHORIZED, CHALLENGE, "credentials required")
        username = msg.username
        realm = codec.text_attr(msg, codec.ATTR_REALM)
        nonce = codec.text_attr(msg, codec.ATTR_NONCE)
        if username is None or realm is None or nonce is None:
            raise _Refused(BAD_REQUEST, "bad-request", "MESSAGE-INTEGRITY without "
                           "USERNAME, REALM and NONCE")
        if not self._nonce_ok(nonce, five.client[0], now):
            raise _Refused(STALE_NONCE, "stale-nonce")
        algorithm = password_algorithm(msg)  # our nonces all offer PASSWORD-ALGORITHMS
        if realm != self.realm:
            raise _Refused(UNAUTHORIZED, "wrong-realm", f"realm {realm[:40]!r}")
        expiry = rest_expiry(username)
        if expiry is None:
            raise _Refused(UNAUTHORIZED, "unknown-user", "username is not <expiry>:<peer id>")
        key = codec.long_term_key(username, self.realm, rest_password(self.secret, username),
                                  algorithm)
        if sha256:  # RFC 8489 9.2.4: MESSAGE-INTEGRITY-SHA256 when present, else M-I
            if not codec.verify_integrity_sha256(data, msg, key):
                raise _Refused(UNAUTHORIZED, "bad-integrity-sha256",
                               "bad MESSAGE-INTEGRITY-SHA256")
        elif not codec.verify_integrity(data, msg, key):
            raise _Refused(UNAUTHORIZED, "bad-integrity", "bad MESSAGE-INTEGRITY")
        if expiry <= now:
            raise _Refused(UNAUTHORIZED, "expired-credentials",
                           f"credentials expired {int(now) - expiry} s ago")
        return username, Signer(key, sha256)

    # -- requests --------------------------------------------------------------------------------

    def _allocate(self, msg: StunMessage, five: FiveTuple, username: str, signer: Signer,
                  now: float) -> list[Action]:
        existing = self.by_five.get(five)
        if existing is not None:
            if existing.allocate_txid == msg.txid:  # a retransmission: the same answer again
                return [ToClient(five, existing.allocate_response)] if existing.relayed else []
            raise _Refused(ALLOCATION_MISMATCH, "allocation-mismatch",
                           "this 5-tuple already has an allocation")
        transport = msg.attrs.get(codec.ATTR_REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            raise _Refused(BAD_REQUEST, "bad-request", "REQUESTED-TRANSPORT missing")
        if transport[0] != codec.TRANSPORT_UDP:
            raise _Refused(UNSUPPORTED_TRANSPORT, "unsupported-transport",
                           f"transport {transport[0]} (only UDP relays)")
        family, extra = self._families(msg)
        even = msg.attrs.get(codec.ATTR_EVEN_PORT)
        if even is not None and (len(even) != 1 or even[0] & 0x80):  # RFC 8656 14.6: R bit
            raise _Refused(INSUFFICIENT_CAPACITY, "even-port-reservation",
                           "EVEN-PORT with R: port reservations are not offered")
        peer = peer_of(username)
        if self.per_peer[peer] >= self.limits.max_allocations_per_peer:
            raise _Refused(ALLOCATION_QUOTA_REACHED, "quota-per-peer",
                           f"{self.limits.max_allocations_per_peer} allocations per peer")
        if len(self.allocations) >= self.limits.max_allocations:
            raise _Refused(ALLOCATION_QUOTA_REACHED, "quota-total",
                           f"{self.limits.max_allocations} allocations in all")
        lifetime = self._lifetime(msg, allocate=True)
        a = Allocation(id=self._next_id, five=five, username=username, signer=signer,
                       expires=now + lifetime, allocate_txid=msg.txid,
                       bucket=_Bucket(self.limits.max_bandwidth, now), family=family)
        a.allocate_extra = extra
        self._next_id += 1
        self.allocations[a.id] = a
        self.by_five[five] = a
        self.per_peer[peer] += 1
        self.stats.allocations_active = len(self.allocations)
        self.stats.allocations_total += 1
        return [OpenRelay(a.id, five.server, family, even is not None)]

    def _families(self, msg: StunMessage) -> tuple[int, list[tuple[int, bytes]]]:
        """The relayed address's IP version for an Allocate (RFC 8656 7.2: REQUESTED-ADDRESS-
        FAMILY, IPv4 by default; 440 for one we cannot relay), and attributes its success
        response adds: a dual allocation (ADDITIONAL-ADDRESS-FAMILY IPv6) is not made, so it gets
        IPv4 and an ADDRESS-ERROR-CODE 440 for IPv6, as 7.2 has a server do without IPv6."""
        requested = msg.attrs.get(codec.ATTR_REQUESTED_ADDRESS_FAMILY)
        additional = msg.attrs.get(codec.ATTR_ADDITIONAL_ADDRESS_FAMILY)
        if requested is not None and additional is not None:
            raise _Refused(BAD_REQUEST, "bad-request",
                           "REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together")
        if additional is not None:
            if len(additional) != 4 or additional[0] != codec.FAMILY_IPV6:
                raise _Refused(BAD_REQUEST, "bad-request", "ADDITIONAL-ADDRESS-FAMILY not IPv6")
            if 4 not in self.families:
                raise _Refused(ADDRESS_FAMILY_NOT_SUPPORTED, "address-family",
                               "no IPv4 relayed addresses here")
            return 4, [(codec.ATTR_ADDRESS_ERROR_CODE, struct.pack(
                ">BBBB", codec.FAMILY_IPV6, 0, ADDRESS_FAMILY_NOT_SUPPORTED // 100,
                ADDRESS_FAMILY_NOT_SUPPORTED % 100) + b"no dual allocations")]
        if requested is None:
            family = 4
        elif len(requested) == 4 and requested[0] in (codec.FAMILY_IPV4, codec.FAMILY_IPV6):
            family = 4 if requested[0] == codec.FAMILY_IPV4 else 6
        else:
            raise _Refused(ADDRESS_FAMILY_NOT_SUPPORTED, "address-family",
                           "REQUESTED-ADDRESS-FAMILY is neither IPv4 nor IPv6")
        if family not in self.families:
            raise _Refused(ADDRESS_FAMILY_NOT_SUPPORTED, "address-family",
                           f"no IPv{family} relayed addresses here")
        return family, []

    def _lifetime(self, msg: StunMessage, *, allocate: bool) -> int:
        raw = msg.attrs.get(codec.ATTR_LIFETIME)
        if raw is None:
            return DEFAULT_LIFETIME
        if len(raw) != 4:
            raise _Refused(BAD_REQUEST, "bad-request", "LIFETIME is not 4 bytes")
        asked: int = struct.unpack(">I", raw)[0]
        if allocate:  # RFC 8656 7.2: less than the default gets the default
            asked = max(asked, DEFAULT_LIFETIME)
        return min(asked, self.limits.max_lifetime)

    def _own_allocation(self, five: FiveTuple, username: str) -> Allocation:
        a = self.by_five.get(five)
        if a is None or a.relayed is None:
            raise _Refused(ALLOCATION_MISMATCH, "allocation-mismatch", "no allocation")
        if a.username != username:
            raise _Refused(WRONG_CREDENTIALS, "wrong-credentials",
                           "not the username that made the allocation")
        return a

    def _success(self, msg: StunMessage, five: FiveTuple, signer: Signer,
                 attrs: list[tuple[int, bytes]] | None = None) -> list[Action]:
        return [ToClient(five, _build(
            codec.message_type(codec.method_of(msg.msg_type), codec.CLASS_SUCCESS), msg.txid,
            (attrs or []) + [(codec.ATTR_SOFTWARE, SOFTWARE)], signer))]

    def _refresh(self, msg: StunMessage, five: FiveTuple, username: str, signer: Signer,
                 now: float) -> list[Action]:
        a = self._own_allocation(five, username)
        family = msg.attrs.get(codec.ATTR_REQUESTED_ADDRESS_FAMILY)
        want = codec.FAMILY_IPV4 if a.family == 4 else codec.FAMILY_IPV6
        if family is not None and (len(family) != 4 or family[0] != want):
            raise _Refused(PEER_ADDRESS_FAMILY_MISMATCH, "peer-family",
                           f"the allocation is IPv{a.family}")  # RFC 8656 8.2
        lifetime = self._lifetime(msg, allocate=False)
        actions = self._success(msg, five, signer, [(codec.ATTR_LIFETIME,
                                                  struct.pack(">I", lifetime))])
        if lifetime == 0:
            log.debug("TURN allocation %d deleted by %s", a.id, username)
            return actions + self._remove(a)
        a.expires = now + lifetime
        return actions

    def _peer_addresses(self, msg: StunMessage, a: Allocation) -> list[Addr]:
        addrs = codec.xor_addresses(msg, codec.ATTR_XOR_PEER_ADDRESS)
        if not addrs or any(x is None for x in addrs):
            raise _Refused(BAD_REQUEST, "bad-request", "XOR-PEER-ADDRESS missing or malformed")
        out = []
        for addr in addrs:
            assert addr is not None
            ip = ipaddress.ip_address(addr[0])
            if ip.version != a.family:  # RFC 8656 9.1 / 11.2
                raise _Refused(PEER_ADDRESS_FAMILY_MISMATCH, "peer-family",
                               f"{ip} on an IPv{a.family} allocation")
            if (ip.is_multicast or ip.is_unspecified or ip == _BROADCAST
                    or (ip.is_reserved and not ip.is_loopback)  # ::1 is in IPv6's ::/8
                    or (ip.is_loopback and not self.allow_loopback_peers)
                    or (isinstance(ip, ipaddress.IPv6Address)
                        and (ip.ipv4_mapped is not None or ip.is_link_local
                             or ip.is_site_local))):
                raise _Refused(FORBIDDEN, "forbidden-peer", f"peer address {ip}")
            out.append(addr)
        return out

    def _permit(self, a: Allocation, ips: set[str], now: float) -> None:
        new = [ip for ip in ips if ip not in a.permissions]
        if len(a.permissions) + len(new) > self.limits.max_permissions:
            raise _Refused(INSUFFICIENT_CAPACITY, "too-many-permissions",
                           f"{self.limits.max_permissions} permissions per allocation")
        for ip in ips:
            a.permissions[ip] = now + PERMISSION_LIFETIME
        if new:
            self.generation += 1

    def _create_permission(self, msg: StunMessage, five: FiveTuple, username: str, signer: Signer,
                           now: float) -> list[Action]:
        a = self._own_allocation(five, username)
        peers = self._peer_addresses(msg, a)
        self._permit(a, {ip for ip, _ in peers}, now)
        return self._success(msg, five, signer)

    def _channel_bind(self, msg: StunMessage, five: FiveTuple, username: str, signer: Signer,
                      now: float) -> list[Action]:
        a = self._own_allocation(five, username)
        raw = msg.attrs.get(codec.ATTR_CHANNEL_NUMBER)
        if raw is None or len(raw) != 4:
            raise _Refused(BAD_REQUEST, "bad-request", "CHANNEL-NUMBER missing")
        (channel,) = struct.unpack_from(">H", raw)
        if not codec.CHANNEL_MIN <= channel <= codec.CHANNEL_MAX:
            raise _Refused(BAD_REQUEST, "bad-request", f"channel number 0x{channel:04x}")
        peers = self._peer_addresses(msg, a)
        if len(peers) != 1:
            raise _Refused(BAD_REQUEST, "bad-request", "ChannelBind names one peer")
        peer = peers[0]
        bound = a.channels.get(channel)
        if bound is not None and bound[0] != peer:
            raise _Refused(BAD_REQUEST, "bad-request", "channel bound to another peer")
        other = a.channel_of.get(peer)
        if other is not None and other != channel:
            raise _Refused(BAD_REQUEST, "bad-request", "peer bound to another channel")
        if bound is None and len(a.channels) >= self.limits.max_channels:
            raise _Refused(INSUFFICIENT_CAPACITY, "too-many-channels",
                           f"{self.limits.max_channels} channels per allocation")
        self._permit(a, {peer[0]}, now)
        a.channels[channel] = (peer, now + CHANNEL_LIFETIME)
        a.channel_of[peer] = channel
        self.generation += 1
        return self._success(msg, five, signer)

    # -- data from the client --------------------------------------------------------------------

    def _send_indication(self, msg: StunMessage, five: FiveTuple, now: float) -> list[Action]:
        a = self.by_five.get(five)
        if a is None or a.relayed is None:
            return self._drop("no-allocation", f"Send from {five.client[0]}", now)
        peers = codec.xor_addresses(msg, codec.ATTR_XOR_PEER_ADDRESS)
        data = msg.attrs.get(codec.ATTR_DATA)
        if len(peers) != 1 or peers[0] is None or data is None:
            return self._drop("bad-indication", f"Send from {five.client[0]}", now)
        peer = peers[0]
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            return self._drop("send-without-permission",
                              f"{a.username} -> {peer[0]}:{peer[1]}", now)
        if not self.account(a, len(data), now):
            return []
        return [ToPeer(a.id, peer, data)]

    def _client_channel_data(self, data: bytes, five: FiveTuple, now: float) -> list[Action]:
        a = self.by_five.get(five)
        if a is None or a.relayed is None:
            return self._drop("no-allocation", f"ChannelData from {five.client[0]}", now)
        channel, length = _CHANNEL_HEAD.unpack_from(data)  # codec.parse_channel_data, inlined
        if 4 + length > len(data):
            return self._drop("garbage", f"from {five.client[0]}: ChannelData length runs "
                              "past the datagram", now)
        payload = data[4:4 + length]
        bound = a.channels.get(channel)  # only valid numbers are ever bound
        if bound is None or bound[1] <= now:
            return self._drop("unknown-channel", f"0x{channel:04x} from {a.username}", now)
        peer = bound[0]
        exp = a.permissions.get(peer[0])
        if exp is None or exp <= now:
            return self._drop("send-without-permission",
                              f"{a.username} -> {peer[0]}:{peer[1]}", now)
        if not self.account(a, len(payload), now):
            return []
        return [ToPeer(a.id, peer, payload)]

    # -- bookkeeping -----------------------------------------------------------------------------

    def try_account(self, a: Allocation, n: int, now: float) -> bool:
        """Count `n` relayed bytes if they fit the allocation's limits; False (nothing counted,
        no refusal): they do not all fit (an adapter then counts datagram by datagram)."""
        limits = self.limits
        if limits.max_bytes and a.bytes + n > limits.max_bytes:
            return False
        if limits.max_bandwidth and not a.bucket.take(n, now):
            return False
        a.bytes += n
        self.stats.bytes_relayed += n
        return True

    def account(self, a: Allocation, n: int, now: float) -> bool:
        """Count `n` relayed bytes against the allocation's limits; False: drop them (counted
        and logged as a refusal)."""
        limits = self.limits
        if limits.max_bytes and a.bytes + n > limits.max_bytes:
            self._drop("byte-limit", f"allocation of {a.username} relayed "
                       f"{a.bytes} bytes", now)
            return False
        if limits.max_bandwidth and not a.bucket.take(n, now):
            self._drop("bandwidth-limit", f"allocation of {a.username} over "
                       f"{self.limits.max_bandwidth} B/s", now)
            return False
        a.bytes += n
        self.stats.bytes_relayed += n
        return True

    def _remove(self, a: Allocation) -> list[Action]:
        if self.allocations.pop(a.id, None) is None:
            return []
        self.generation += 1
        if self.by_five.get(a.five) is a:
            del self.by_five[a.five]
        self.per_peer[a.peer] -= 1
        if self.per_peer[a.peer] <= 0:
            del self.per_peer[a.peer]
        self.stats.allocations_active = len(self.allocations)
        return [CloseRelay(a.id, a.five)]

    def _refuse(self, reason: str, detail: str, now: float) -> None:
        self.stats.refusals[reason] += 1
        self._log(reason, detail, now)

    def _drop(self, reason: str, detail: str, now: float) -> list[Action]:
        self._refuse(reason, detail, now)
        return []


_BROADCAST = ipaddress.ip_address("255.255.255.255")


class Signer(NamedTuple):
    """How a response is signed: with the request's long-term key, by MESSAGE-INTEGRITY-SHA256
    when the request used it, else MESSAGE-INTEGRITY (RFC 8489 9.2.4)."""
    key: bytes
    sha256: bool = False


def _build(msg_type: int, txid: bytes, attrs: list[tuple[int, bytes]],
           signer: Signer | None) -> bytes:
    if signer is None:
        return codec.build(msg_type, txid, attrs)
    if signer.sha256:
        return codec.build(msg_type, txid, attrs, integrity_sha256_key=signer.key)
    return codec.build(msg_type, txid, attrs, integrity_key=signer.key)


def password_algorithm(msg: StunMessage) -> int:
    """RFC 8489 9.2.4 under a nonce that offered PASSWORD-ALGORITHMS: neither attribute means
    MD5; both: the list must be the one offered and the choice one of it; else 400."""
    offered = msg.attrs.get(codec.ATTR_PASSWORD_ALGORITHMS)
    chosen = msg.attrs.get(codec.ATTR_PASSWORD_ALGORITHM)
    if offered is None and chosen is None:
        return codec.PASSWORD_ALGORITHM_MD5
    if offered != PASSWORD_ALGORITHMS_OFFER or chosen is None or len(chosen) != 4:
        raise _Refused(BAD_REQUEST, "bad-password-algorithm",
                       "PASSWORD-ALGORITHMS/PASSWORD-ALGORITHM do not match the offer")
    algorithm, params = struct.unpack(">HH", chosen)
    if params or algorithm not in (codec.PASSWORD_ALGORITHM_MD5,
                                   codec.PASSWORD_ALGORITHM_SHA256):
        raise _Refused(BAD_REQUEST, "bad-password-algorithm",
                       f"PASSWORD-ALGORITHM 0x{algorithm:04x} was not offered")
    return int(algorithm)


_COOKIE = struct.pack(">I", codec.MAGIC_COOKIE)
_ATTR_HEAD = struct.Struct(">HH")
_CHANNEL_HEAD = codec.CHANNEL_HEADER
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")
DATA_INDICATION = codec.message_type(codec.METHOD_DATA, codec.CLASS_INDICATION)


class StreamFramer:
    """Splits a TURN-over-TCP byte stream into STUN messages and ChannelData frames
    (RFC 8656 12.5: ChannelData is padded to 4 bytes over TCP). Raises StunError on a frame that
    is neither; buffers at most one frame."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= 4:
            length = codec.stream_frame_length(bytes(self._buf[:4]))
            if length is None:
                raise StunError("not STUN or ChannelData on a TURN stream")
            if self._buf[0] < 0x40:  # STUN: the magic cookie tells it from garbage (TLS, HTTP)
                if len(self._buf) < 8:
                    break
                if self._buf[4:8] != _COOKIE:
                    raise StunError("not STUN (no magic cookie) on a TURN stream")
            if len(self._buf) < length:
                break
            frames.append(bytes(self._buf[:length]))
            del self._buf[:length]
        return frames
