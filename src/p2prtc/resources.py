"""Resource budgets (a small cousin of go-libp2p's resource manager, p2p/host/resource-manager).

Sans-I/O bookkeeping: callers ask before they take a connection, a stream or buffer memory, and
give it back when done. A request over a budget gets a `Refusal` (which scope, which resource,
how much is in use, the limit) and nothing is taken; the caller ends only that stream or
connection with `refusal.reason`, and every other stream and peer goes on unaffected.

Scopes (go's names): `system` holds everything; `transient` holds connections whose peer is not
known yet (before the Noise handshake ends), with a count per remote IP on top (go's
`connLimiter`, 8 per IPv4 /32); each `peer` holds its connections and their streams and buffered
bytes once the handshake has named it. A connection's streams and memory count against its peer
(or the transient scope) and the system. go's service/protocol scopes are left out: our hosts
run few protocols, and their handlers bound their own work.

Limits of 0 mean "no limit". Defaults are go's `DefaultLimits` (limit_defaults.go) worked out the
way go's `AutoScale` does for a node given 16 GiB (BaseLimit + 16 x LimitIncrease), a dedicated
relay, except where a comment says why not: the system and transient connection counts are
larger (a relay's connections are inbound and cheap here), and memory is ours, since we count
only buffered stream bytes, not every allocation as go's muxers and transports do.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

from .errors import P2PError
from .identity import PeerId

Direction = Literal["inbound", "outbound"]

# go AutoScale's "GiB of memory given to libp2p" that our defaults are worked out for.
_SCALE = 16
_MiB = 1 << 20


@dataclass(frozen=True)
class ScopeLimits:
    """The budget of one scope (go's BaseLimit without FDs: asyncio sockets are conns)."""

    conns_inbound: int = 0
    conns_outbound: int = 0
    conns: int = 0
    streams_inbound: int = 0
    streams_outbound: int = 0
    streams: int = 0
    memory: int = 0  # bytes buffered in streams (received and not yet read)


# go System: Conns in/out/all 64/128/128 + 64/128/128 per GiB (1088/2176/2176 at 16 GiB);
# streams 1024/2048/2048 + the same per GiB. Connections here: 4096 each way and in all, as a
# relay's are nearly all inbound and cost ~40 KB each (bench/abuse.py: 4096 ~ 160 MB).
# Memory: 512 MiB of buffered stream data (go: 128 MiB + 1 GiB per GiB for all of libp2p's
# memory; ours counts only what streams buffer).
DEFAULT_SYSTEM = ScopeLimits(
    conns_inbound=4096, conns_outbound=4096, conns=4096,
    streams_inbound=1024 + 1024 * _SCALE, streams_outbound=2048 + 2048 * _SCALE,
    streams=2048 + 2048 * _SCALE,
    memory=512 * _MiB,
)
# go Transient: conns 32/64/64 + 16/32/32 per GiB (288/576/576 at 16 GiB), streams
# 128/256/256 + the same per GiB, memory 32 MiB + 128 MiB per GiB. Connections are transient
# only while they handshake (at most `UPGRADE_TIMEOUT`), and the per-IP budget keeps one address
# from taking many; but 18 addresses fill go's 288 (bench/abuse.py: new honest connections
# were refused then). 1024 takes 64 addresses, and a pending handshake costs a socket and a
# parked task. Memory: 64 MiB is plenty for what they buffer before a peer is known.
DEFAULT_TRANSIENT = ScopeLimits(
    conns_inbound=1024, conns_outbound=64 + 32 * _SCALE, conns=1024 + 64 + 32 * _SCALE,
    streams_inbound=128 + 128 * _SCALE, streams_outbound=256 + 256 * _SCALE,
    streams=256 + 256 * _SCALE,
    memory=64 * _MiB,
)
# go Peer: conns 8/8/8 (no increase), streams 256/512/512 + 128/256/256 per GiB, memory 64 MiB
# + 128 MiB per GiB. Here go's base only: 256 inbound streams as yamux's cap per connection,
# and 64 MiB (4 streams at yamux's 16 MiB window, or 256 at the initial 256 KiB).
DEFAULT_PEER = ScopeLimits(
    conns_inbound=8, conns_outbound=8, conns=8,
    streams_inbound=256, streams_outbound=512, streams=512,
    memory=64 * _MiB,
)
# A refusal is worth one log line per (scope, resource) per this many seconds, with a count of
# the others: under attack they come by the thousand per second (TURN logs its refusals so too).
REFUSAL_LOG_INTERVAL = 10.0
# go's connLimiter: 8 connections per IPv4 /32 (and per IPv6 /56), loopback unlimited. Ours
# counts connections still handshaking (established ones are the relay's
# `max_connections_per_ip`), so a NAT's many users are not refused, and allows 16.
DEFAULT_PENDING_PER_IP = 16


@dataclass
class ResourceLimits:
    system: ScopeLimits = DEFAULT_SYSTEM
    transient: ScopeLimits = DEFAULT_TRANSIENT
    peer: ScopeLimits = DEFAULT_PEER
    pending_per_ip: int = DEFAULT_PENDING_PER_IP
    # go exempts 127.0.0.0/8 and ::1 from its per-IP limit (a reverse proxy, local tests).
    exempt_loopback: bool = True

    @classmethod
    def unlimited(cls) -> ResourceLimits:
        none = ScopeLimits()
        return cls(system=none, transient=none, peer=none, pending_per_ip=0)


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused: scope ("system", "transient", "peer", "ip"), resource
    (e.g. "streams inbound"), what is in use, and the limit."""

    scope: str
    resource: str
    current: int
    limit: int

    @property
    def reason(self) -> str:
        return (f"{self.scope}: cannot reserve {self.resource}: resource limit exceeded "
                f"({self.current} in use, limit {self.limit})")

    def __str__(self) -> str:
        return self.reason


_CONN_KEYS: dict[Direction, str] = {"inbound": "conns_inbound", "outbound": "conns_outbound"}
_STREAM_KEYS: dict[Direction, str] = {"inbound": "streams_inbound",
                                      "outbound": "streams_outbound"}
_NAMES = {"conns_inbound": "connections inbound", "conns_outbound": "connections outbound",
          "conns": "connections", "streams_inbound": "streams inbound",
          "streams_outbound": "streams outbound", "streams": "streams", "memory": "memory"}
RESOURCES = tuple(f.name for f in fields(ScopeLimits))


class _Scope:
    def __init__(self, name: str, limits: ScopeLimits) -> None:
        self.name = name
        self.limits = limits
        self.used: dict[str, int] = dict.fromkeys(RESOURCES, 0)

    def check(self, amounts: dict[str, int]) -> Refusal | None:
        for key, n in amounts.items():
            limit = getattr(self.limits, key)
            if limit and n > 0 and self.used[key] + n > limit:
                return Refusal(self.name, _NAMES[key], self.used[key], limit)
        return None

    def add(self, amounts: dict[str, int], sign: int) -> None:
        for key, n in amounts.items():
            self.used[key] += sign * n

    @property
    def idle(self) -> bool:
        return not any(self.used.values())


def _reserve(chain: list[_Scope], amounts: dict[str, int]) -> Refusal | None:
    """All of `amounts` in every scope of `chain`, or nothing and the first refusal."""
    for scope in chain:
        refusal = scope.check(amounts)
        if refusal is not None:
            return refusal
    for scope in chain:
        scope.add(amounts, 1)
    return None


def _release(chain: list[_Scope], amounts: dict[str, int]) -> None:
    for scope in chain:
        scope.add(amounts, -1)


class ResourceManager:
    """Budgets of one host (a relay or a peer)."""

    def __init__(self, limits: ResourceLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or ResourceLimits()
        self._clock = clock
        self._log_next: dict[tuple[str, str], float] = {}
        self._log_skipped: Counter[tuple[str, str]] = Counter()
        self.system = _Scope("system", self.limits.system)
        self.transient = _Scope("transient", self.limits.transient)
        self._peers: dict[PeerId, _Scope] = {}
        self._pending_by_ip: dict[str, int] = {}
        # (scope, resource) -> count of refusals (scope "peer" for every peer: bounded labels)
        self.refusals: Counter[tuple[str, str]] = Counter()

    # -- connections

    def open_connection(self, direction: Direction, ip: str | None = None
                        ) -> ConnectionScope | Refusal:
        """A connection starts in the transient scope (its peer is not known yet)."""
        if ip is not None and direction == "inbound" and self._limits_ip(ip):
            n = self._pending_by_ip.get(ip, 0)
            if n >= self.limits.pending_per_ip:
                return self._refused(Refusal("ip", "connections handshaking from " + ip, n,
                                             self.limits.pending_per_ip))
        amounts = {_CONN_KEYS[direction]: 1, "conns": 1}
        refusal = _reserve([self.transient, self.system], amounts)
        if refusal is not None:
            return self._refused(refusal)
        pending_ip = None
        if ip is not None and direction == "inbound" and self._limits_ip(ip):
            self._pending_by_ip[ip] = self._pending_by_ip.get(ip, 0) + 1
            pending_ip = ip
        return ConnectionScope(self, direction, amounts, pending_ip)

    def open_peer_connection(self, direction: Direction, peer: PeerId
                             ) -> ConnectionScope | Refusal:
        """A connection whose peer is known before it exists (/webrtc: the relayed connection
        that signals it authenticated the peer): straight into the peer's scope."""
        scope = self.open_connection(direction)
        if isinstance(scope, Refusal):
            return scope
        refusal = scope.set_peer(peer)
        return scope if refusal is None else refusal

    def _limits_ip(self, ip: str) -> bool:
        if not self.limits.pending_per_ip:
            return False
        if self.limits.exempt_loopback:
            try:
                return not ipaddress.ip_address(ip).is_loopback
            except ValueError:
                return True
        return True

    def _peer_scope(self, peer: PeerId) -> _Scope:
        scope = self._peers.get(peer)
        if scope is None:
            scope = self._peers[peer] = _Scope("peer", self.limits.peer)
        return scope

    def _forget_if_idle(self, peer: PeerId) -> None:
        scope = self._peers.get(peer)
        if scope is not None and scope.idle:
            del self._peers[peer]

    def _end_pending(self, ip: str) -> None:
        n = self._pending_by_ip.get(ip, 0) - 1
        if n > 0:
            self._pending_by_ip[ip] = n
        else:
            self._pending_by_ip.pop(ip, None)

    def _refused(self, refusal: Refusal) -> Refusal:
        self.refusals[_key(refusal)] += 1
        return refusal

    def log_line(self, what: str, refusal: Refusal) -> str | None:
        """`what: reason`, to log now, or None when a line for this scope and resource was
        given within REFUSAL_LOG_INTERVAL (the next one says how many were left out)."""
        key, now = _key(refusal), self._clock()
        if now < self._log_next.get(key, 0.0):
            self._log_skipped[key] += 1
            return None
        self._log_next[key] = now + REFUSAL_LOG_INTERVAL
        skipped = self._log_skipped.pop(key, 0)
        more = (f" (and {skipped} more refusals like it in the last "
                f"{REFUSAL_LOG_INTERVAL:.0f} s)" if skipped else "")
        return f"{what}: {refusal.reason}{more}"

    # -- what metrics show

    @property
    def peers(self) -> int:
        """Peers holding anything."""
        return len(self._peers)

    @property
    def pending_ips(self) -> int:
        return len(self._pending_by_ip)

    def usage(self) -> list[tuple[str, str, int, int]]:
        """(scope, resource, in use, limit) for the system and transient scopes."""
        return [(s.name, key, s.used[key], getattr(s.limits, key))
                for s in (self.system, self.transient) for key in RESOURCES]

    def peer_usage(self, peer: PeerId) -> dict[str, int]:
        scope = self._peers.get(peer)
        return dict(scope.used) if scope is not None else dict.fromkeys(RESOURCES, 0)


def _key(refusal: Refusal) -> tuple[str, str]:
    # per-IP refusals name the address: counted and logged under one label
    return (refusal.scope,
            refusal.resource if refusal.scope != "ip" else "connections handshaking")


class ConnectionScope:
    """One connection's reservations; `close()` gives back all of them (idempotent)."""

    def __init__(self, manager: ResourceManager, direction: Direction,
                 conn_amounts: dict[str, int], pending_ip: str | None) -> None:
        self._rm = manager
        self.direction = direction
        self.peer: PeerId | None = None
        self._conn_amounts = conn_amounts
        self._pending_ip = pending_ip
        self._owner: _Scope = manager.transient
        self._streams: set[StreamScope] = set()
        self.memory = 0
        self.closed = False

    def _chain(self) -> list[_Scope]:
        return [self._owner, self._rm.system]

    def set_peer(self, peer: PeerId) -> Refusal | None:
        """The handshake named the peer: move from the transient scope into the peer's. On a
        refusal the connection's reservations are all given back (close it)."""
        if self.closed or self.peer is not None:
            return None
        rm = self._rm
        target = rm._peer_scope(peer)
        moving = dict(self._conn_amounts)
        moving["memory"] = self.memory
        for s in self._streams:
            for k, n in s.amounts().items():
                moving[k] = moving.get(k, 0) + n
        refusal = target.check(moving)
        if refusal is not None:
            rm._forget_if_idle(peer)
            self.close()
            return rm._refused(refusal)
        self._owner.add(moving, -1)
        target.add(moving, 1)
        self._owner = target
        self.peer = peer
        self._end_handshake()
        return None

    def _end_handshake(self) -> None:
        if self._pending_ip is not None:
            self._rm._end_pending(self._pending_ip)
            self._pending_ip = None

    def open_stream(self, direction: Direction) -> StreamScope | Refusal:
        if self.closed:
            return Refusal("connection", "streams (the connection has ended)", 0, 0)
        amounts = {_STREAM_KEYS[direction]: 1, "streams": 1}
        refusal = _reserve(self._chain(), amounts)
        if refusal is not None:
            return self._rm._refused(refusal)
        stream = StreamScope(self, amounts)
        self._streams.add(stream)
        return stream

    def log_line(self, what: str, refusal: Refusal) -> str | None:
        """See ResourceManager.log_line."""
        return self._rm.log_line(what, refusal)

    # memory: once per data frame or message received and per read, so without _reserve's dicts
    # (the same checks, in the same order: the owner, then the system)

    def reserve_memory(self, n: int) -> Refusal | None:
        if self.closed or n <= 0:
            return None
        owner, system = self._owner, self._rm.system
        for scope in (owner, system):
            limit, used = scope.limits.memory, scope.used["memory"]
            if limit and used + n > limit:
                return self._rm._refused(Refusal(scope.name, _NAMES["memory"], used, limit))
        owner.used["memory"] += n
        system.used["memory"] += n
        self.memory += n
        return None

    def release_memory(self, n: int) -> None:
        n = min(n, self.memory)
        if n > 0 and not self.closed:
            self._owner.used["memory"] -= n
            self._rm.system.used["memory"] -= n
            self.memory -= n

    def close(self) -> None:
        if self.closed:
            return
        for s in list(self._streams):
            s.close()
        self.release_memory(self.memory)
        _release(self._chain(), self._conn_amounts)
        self.closed = True
        self._end_handshake()
        if self.peer is not None:
            self._rm._forget_if_idle(self.peer)


class StreamScope:
    """One stream's reservation (a stream slot and the bytes buffered in it)."""

    def __init__(self, conn: ConnectionScope, amounts: dict[str, int]) -> None:
        self._conn = conn
        self._amounts = amounts
        self.memory = 0
        self.closed = False

    def amounts(self) -> dict[str, int]:
        return {**self._amounts, "memory": 0} if not self.closed else {}

    def log_line(self, what: str, refusal: Refusal) -> str | None:
        """See ResourceManager.log_line."""
        return self._conn.log_line(what, refusal)

    def reserve_memory(self, n: int) -> Refusal | None:
        if self.closed:
            return None
        refusal = self._conn.reserve_memory(n)
        if refusal is None:
            self.memory += n
        return refusal

    def release_memory(self, n: int) -> None:
        n = min(n, self.memory)
        if n > 0 and not self.closed:
            self._conn.release_memory(n)
            self.memory -= n

    def close(self) -> None:
        if self.closed:
            return
        self.release_memory(self.memory)
        conn = self._conn
        if not conn.closed:
            _release(conn._chain(), self._amounts)
        conn._streams.discard(self)
        self.closed = True



class ResourceLimitExceeded(P2PError):
    """A budget refused a connection or a stream; `refusal` says which and why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal
