"""ICE for webrtc-direct, sans-I/O: the server's ICE-lite responder and the client's checks.

webrtc-direct needs no candidate exchange: the client knows the server's one address from the
multiaddr, and the server learns the rest from the client's first Binding request (specs:
webrtc/webrtc-direct.md). v1: both sides use the client's random ufrag `libp2p+webrtc+v1/<random>`
as ufrag and password (the browser must munge its own SDP, which Chrome's WebRTC-NoSdpMangleUfrag
field trial forbids). v2 (libp2p/specs#715, go-libp2p 0.49): the client keeps its own random
ufrag and password and names the server's ufrag and password `libp2p+webrtc+v2/<client pwd>`,
so USERNAME is `libp2p+webrtc+v2/<client pwd>:<client ufrag>`. Either way the server (ICE-lite,
RFC 8445 2.5) takes its ufrag from USERNAME, uses it as the key (its password) to check
MESSAGE-INTEGRITY, and the client's address from the datagram; one port serves both versions,
told apart by the prefix (an unknown one is refused). Anyone can compute that key, so a valid
check proves only that the sender can receive at its address (the reply goes there): it is
cheap to produce, and every table here is bounded and expires.

`IceLiteAgent` is the server side: feed it each STUN datagram, send what it returns, and ask it
which session a non-STUN datagram belongs to. `IceChecker` is the client side: the Binding
requests (with USE-CANDIDATE) to send, and whether a response completes or keeps the check.
"""

from __future__ import annotations

import logging
import os
import random
import re
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import stun

log = logging.getLogger(__name__)

UFRAG_PREFIX = "libp2p+webrtc+v1/"
UFRAG_PREFIX_V2 = "libp2p+webrtc+v2/"
_UFRAG_ALPHABET = string.ascii_letters + string.digits
# ICE (RFC 8839 5.4): ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4-256 chars, pwd 22-256.
MAX_UFRAG_LEN = 256
MIN_UFRAG_LEN = len(UFRAG_PREFIX) + 8
MIN_ICE_UFRAG, MIN_ICE_PWD = 4, 22  # RFC 8839 5.4 (a v2 client's own ufrag, its password)

# Limits of the server's table (the spec asks for rate limiting: section 6 of "Browser to public
# Server"). A session record is a few hundred bytes until DTLS starts.
MAX_SESSIONS = 1024
MAX_SESSIONS_PER_IP = 64
# A session whose client stopped sending checks and never started DTLS is forgotten after this.
UNCONNECTED_TTL = 15.0
# New sessions per second (token bucket, per source IP and over all IPs).
NEW_SESSIONS_PER_S_PER_IP = 50.0
NEW_SESSIONS_BURST_PER_IP = 100.0
NEW_SESSIONS_PER_S = 400.0
NEW_SESSIONS_BURST = 800.0
# Addresses one session may send checks from (a browser checks from each of its interfaces).
MAX_ADDRS_PER_SESSION = 8
# An address belonging to a connected session is only given to another ufrag once it has been
# silent this long (a client that restarted on the same port), so a stray or forged check
# cannot take over a live connection.
ADDRESS_REUSE_IDLE = 10.0


def _random_ice(n: int = 32) -> str:
    rnd = random.SystemRandom()
    return "".join(rnd.choice(_UFRAG_ALPHABET) for _ in range(n))


def random_ufrag() -> str:
    return UFRAG_PREFIX + _random_ice()


_ICE_STRING = re.compile(r"[A-Za-z0-9+/]*")


def _ice_string(text: str, minimum: int) -> bool:
    return minimum <= len(text) <= MAX_UFRAG_LEN and _ICE_STRING.fullmatch(text) is not None


def ufrag_version(ufrag: str) -> int | None:
    """1 or 2 for a server ufrag a libp2p webrtc-direct client may send, else None."""
    if ufrag.startswith(UFRAG_PREFIX_V2):
        pwd = ufrag[len(UFRAG_PREFIX_V2):]
        return 2 if _ice_string(pwd, MIN_ICE_PWD) and len(ufrag) <= MAX_UFRAG_LEN else None
    if ufrag.startswith(UFRAG_PREFIX) and MIN_UFRAG_LEN <= len(ufrag) and _ice_string(ufrag, 0):
        return 1
    return None


def is_valid_ufrag(ufrag: str) -> bool:
    return ufrag_version(ufrag) is not None


def normalize_addr(addr: Any) -> tuple[str, int]:
    """(host, port) of a datagram's source, without IPv6 flow info / scope id."""
    return (addr[0], addr[1])


@dataclass(eq=False)
class IceSession:
    """One client of the ICE-lite server, identified by its ufrag."""

    ufrag: str
    addr: tuple[str, int]  # where we send: the nominated address, else the last checked one
    created: float
    last_seen: float
    addrs: list[tuple[str, int]] = field(default_factory=list)
    nominated: bool = False
    # The I/O side's object for this client once DTLS has started (None before: cheap).
    connection: Any = None
    closed: bool = False

    @property
    def key(self) -> bytes:
        return self.ufrag.encode("ascii")

    @property
    def ip(self) -> str:
        return self.addr[0]


@dataclass
class StunResult:
    reply: bytes | None = None
    session: IceSession | None = None
    new: bool = False
    # Why the datagram was dropped, for the caller's (rate-limited) log; None if it was used.
    dropped: str | None = None


class _TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class IceLiteStats:
    checks: int = 0
    replies: int = 0
    sessions_created: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class IceLiteAgent:
    """The server's table of ICE sessions on one UDP socket (sans-I/O; `now` from the caller)."""

    def __init__(self, *, max_sessions: int = MAX_SESSIONS,
                 max_sessions_per_ip: int = MAX_SESSIONS_PER_IP,
                 unconnected_ttl: float = UNCONNECTED_TTL,
                 rate_per_ip: tuple[float, float] = (NEW_SESSIONS_PER_S_PER_IP, NEW_SESSIONS_BURST_PER_IP),
                 rate: tuple[float, float] = (NEW_SESSIONS_PER_S, NEW_SESSIONS_BURST)) -> None:
        self.max_sessions = max_sessions
        self.max_sessions_per_ip = max_sessions_per_ip
        self.unconnected_ttl = unconnected_ttl
        self.rate_per_ip = rate_per_ip
        self.rate = rate
        # ufrag -> session, oldest first (for eviction of unconnected sessions)
        self.sessions: OrderedDict[str, IceSession] = OrderedDict()
        self.by_addr: dict[tuple[str, int], IceSession] = {}
        self.per_ip: dict[str, int] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._bucket: _TokenBucket | None = None
        self.stats = IceLiteStats()

    # -- STUN ------------------------------------------------------------------------------

    def handle_stun(self, data: bytes, addr: tuple[str, int], now: float) -> StunResult:
        addr = normalize_addr(addr)
        try:
            msg = stun.parse(data)
        except stun.StunError as e:
            return self._drop(f"malformed STUN: {e}")
        if msg.msg_type == stun.BINDING_INDICATION:
            session = self.by_addr.get(addr)  # keepalive without credentials
            if session is not None:
                session.last_seen = now
                return StunResult(session=session)
            return self._drop("binding indication from an unknown address")
        if msg.msg_type != stun.BINDING_REQUEST:
            return self._drop(f"STUN message type 0x{msg.msg_type:04x} (an ICE-lite agent sends no requests)")
        self.stats.checks += 1
        username = msg.username
        if username is None:
            return self._drop("binding request without USERNAME")
        local, sep, remote = username.partition(":")
        version = ufrag_version(local) if sep else None
        if version is None or not _ice_string(remote, MIN_ICE_UFRAG):
            return self._drop("binding request whose ufrag is not a libp2p webrtc-direct one "
                              "(v1 or v2)")
        if stun.ATTR_FINGERPRINT not in msg.attrs:
            return self._drop("binding request without FINGERPRINT")
        # Short-term credentials: the key is our password, which webrtc-direct sets to our ufrag
        # (v1: the client's ufrag; v2: the prefix and the client's password).
        if not stun.verify_integrity(data, msg, local.encode("ascii")):
            return self._drop("binding request with a bad MESSAGE-INTEGRITY")
        session = self.sessions.get(local)
        new = False
        if session is None:
            refusal = self._admit(addr, now)
            if refusal is not None:
                return self._drop(refusal)
            session = IceSession(local, addr, now, now)
            self.sessions[local] = session
            self.per_ip[addr[0]] = self.per_ip.get(addr[0], 0) + 1
            self.stats.sessions_created += 1
            new = True
        if addr not in session.addrs:
            owner = self.by_addr.get(addr)
            if owner is not None and owner is not session:
                if not self._may_take_address(owner, now):
                    if new:
                        self._forget(session)
                    return self._drop("binding request for a new ufrag from the address of a live connection")
                self._release_addr(owner, addr)
            if len(session.addrs) >= MAX_ADDRS_PER_SESSION:
                return self._drop("binding request from too many addresses for one ufrag")
            session.addrs.append(addr)
            self.by_addr[addr] = session
        session.last_seen = now
        if msg.use_candidate:
            session.nominated = True
            session.addr = addr
        elif not session.nominated:
            session.addr = addr
        self.stats.replies += 1
        return StunResult(stun.binding_success(msg.txid, addr, session.key), session, new)

    def _drop(self, reason: str) -> StunResult:
        self.stats.drop(reason)
        return StunResult(dropped=reason)

    def _admit(self, addr: tuple[str, int], now: float) -> str | None:
        ip = addr[0]
        if self.per_ip.get(ip, 0) >= self.max_sessions_per_ip:
            if not self._evict_unconnected(ip=ip):
                return f"too many ICE sessions from {ip} ({self.max_sessions_per_ip})"
        if len(self.sessions) >= self.max_sessions:
            if not self._evict_unconnected():
                return f"ICE session table full ({self.max_sessions})"
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= 4 * self.max_sessions:
                self._buckets.clear()  # bounded memory; forgetting buckets only loosens limits
            bucket = self._buckets[ip] = _TokenBucket(*self.rate_per_ip, now)
        if not bucket.take(now):
            return f"new ICE sessions from {ip} arrive too fast"
        if self._bucket is None:
            self._bucket = _TokenBucket(*self.rate, now)
        if not self._bucket.take(now):
            return "new ICE sessions arrive too fast"
        return None

    def _evict_unconnected(self, ip: str | None = None) -> bool:
        """Forget the oldest session that never started DTLS (from `ip` if given)."""
        for session in self.sessions.values():
            if session.connection is None and (ip is None or session.ip == ip):
                self._forget(session)
                self.stats.drop("evicted an unconnected ICE session to make room")
                return True
        return False

    def _may_take_address(self, owner: IceSession, now: float) -> bool:
        return owner.connection is None or now - owner.last_seen > ADDRESS_REUSE_IDLE

    def _release_addr(self, owner: IceSession, addr: tuple[str, int]) -> None:
        if addr in owner.addrs:
            owner.addrs.remove(addr)
        if self.by_addr.get(addr) is owner:
            del self.by_addr[addr]

    # -- other datagrams -------------------------------------------------------------------

    def session_for(self, addr: tuple[str, int]) -> IceSession | None:
        """The session a non-STUN datagram from `addr` belongs to (None: drop it)."""
        return self.by_addr.get(normalize_addr(addr))

    # -- lifetime --------------------------------------------------------------------------

    def remove(self, session: IceSession) -> None:
        """The I/O side is done with this session (connection closed or failed)."""
        self._forget(session)

    def _forget(self, session: IceSession) -> None:
        if session.closed:
            return
        session.closed = True
        if self.sessions.get(session.ufrag) is session:
            del self.sessions[session.ufrag]
        for a in session.addrs:
            if self.by_addr.get(a) is session:
                del self.by_addr[a]
        n = self.per_ip.get(session.ip, 0) - 1
        if n > 0:
            self.per_ip[session.ip] = n
        else:
            self.per_ip.pop(session.ip, None)

    def expire(self, now: float) -> list[IceSession]:
        """Forget sessions that never started DTLS and went quiet; return them."""
        gone = [s for s in self.sessions.values()
                if s.connection is None and now - s.last_seen > self.unconnected_ttl]
        for s in gone:
            self._forget(s)
        return gone

    def __len__(self) -> int:
        return len(self.sessions)


# -- client side -----------------------------------------------------------------------------

# RFC 8445 5.1.2: priority of a host candidate, component 1.
HOST_PRIORITY = (126 << 24) | (65535 << 8) | (256 - 1)
PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | (256 - 1)


class IceChecker:
    """The controlling agent's Binding requests to the server's one candidate.

    webrtc-direct servers are ICE-lite: they never check us, they only answer. We nominate the
    only pair at once (USE-CANDIDATE on every check, RFC 8445 8.1.1 aggressive-style), and keep
    checking afterwards as keepalive / consent freshness (RFC 7675).

    `IceChecker.v1(remote)` / `IceChecker.v2(remote)` make the credentials of either version;
    `ufrag` is the server's ufrag (and password) in both.
    """

    def __init__(self, ufrag: str, remote: tuple[str, int], *, local_ufrag: str | None = None,
                 local_pwd: str | None = None) -> None:
        self.ufrag = ufrag
        self.version = ufrag_version(ufrag)
        self.remote = remote
        self.key = ufrag.encode("ascii")  # the server's password: its ufrag
        local_ufrag = local_ufrag or ufrag  # v1: ours are the same as the server's
        # "<remote ufrag>:<local ufrag>" on our checks; the server's checks of us, if it sent
        # any, would carry the reverse and our password
        self.username = f"{ufrag}:{local_ufrag}"
        self._their_username = f"{local_ufrag}:{ufrag}"
        self._local_key = (local_pwd or ufrag).encode("ascii")
        self.tie_breaker = int.from_bytes(os.urandom(8), "big")
        self._pending: OrderedDict[bytes, float] = OrderedDict()
        self.succeeded = False
        self.last_success: float | None = None
        self.mapped_address: tuple[str, int] | None = None

    def request(self, now: float) -> bytes:
        txid = stun.new_transaction_id()
        self._pending[txid] = now
        while len(self._pending) > 16:
            self._pending.popitem(last=False)
        return stun.binding_request(txid, self.username, self.key, priority=PRFLX_PRIORITY,
                                    controlling=True, tie_breaker=self.tie_breaker,
                                    use_candidate=True)

    def handle_stun(self, data: bytes, now: float) -> bytes | None:
        """Feed a STUN datagram from the server; returns a reply to send, if any."""
        try:
            msg = stun.parse(data)
        except stun.StunError as e:
            log.debug("ignoring STUN datagram: %s", e)
            return None
        if msg.msg_type in (stun.BINDING_SUCCESS, stun.BINDING_ERROR):
            if msg.txid not in self._pending:
                return None
            if not stun.verify_integrity(data, msg, self.key):
                log.debug("ignoring a STUN response with a bad MESSAGE-INTEGRITY")
                return None
            del self._pending[msg.txid]
            if msg.msg_type == stun.BINDING_SUCCESS:
                self.succeeded = True
                self.last_success = now
                self.mapped_address = msg.xor_mapped_address()
            else:
                log.debug("server answered a check with error %s", msg.error_code())
            return None
        if msg.msg_type == stun.BINDING_REQUEST:
            # A full ICE server checks us too: answer with our credentials.
            if msg.username != self._their_username or not stun.verify_integrity(
                    data, msg, self._local_key):
                return None
            return stun.binding_success(msg.txid, self.remote, self._local_key)
        return None

    @classmethod
    def v1(cls, remote: tuple[str, int]) -> IceChecker:
        return cls(random_ufrag(), remote)

    @classmethod
    def v2(cls, remote: tuple[str, int]) -> IceChecker:
        """Our own random ufrag and password; the server's ufrag carries our password."""
        pwd = _random_ice()
        return cls(UFRAG_PREFIX_V2 + pwd, remote, local_ufrag=_random_ice(), local_pwd=pwd)
