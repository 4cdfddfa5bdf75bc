"""Relay resource limits and rate limiters.

Defaults are rust-libp2p's `relay::Config::default()` (libp2p-relay, behaviour.rs), so that
`p2prtc relay` is a drop-in for the rust relay-server: same reservations, same circuits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateLimit:
    """At most `limit` events per `period` seconds per key (token bucket, refilled evenly)."""

    limit: int
    period: float


@dataclass
class RelayLimits:
    max_reservations: int = 128
    max_reservations_per_peer: int = 4
    reservation_duration: float = 3600.0  # seconds
    max_circuits: int = 16
    max_circuits_per_peer: int = 4
    max_circuit_duration: float = 120.0  # seconds; 0 = unlimited
    max_circuit_bytes: int = 1 << 17  # 128 KiB per direction; 0 = unlimited
    reservation_rate_per_peer: RateLimit = field(default_factory=lambda: RateLimit(30, 120.0))
    reservation_rate_per_ip: RateLimit = field(default_factory=lambda: RateLimit(60, 60.0))
    circuit_rate_per_peer: RateLimit = field(default_factory=lambda: RateLimit(30, 120.0))
    circuit_rate_per_ip: RateLimit = field(default_factory=lambda: RateLimit(60, 60.0))
    # Inbound connections: not limited by rust's relay behaviour (its connection limits are a
    # separate behaviour); ours guards against one address opening connections in a loop.
    max_connections_per_ip: int = 256
    connection_rate_per_ip: RateLimit = field(default_factory=lambda: RateLimit(120, 10.0))

    def lift_circuit_limits(self) -> None:
        """For benchmarks and trusted set-ups: circuits with no duration or data limit."""
        self.max_circuit_duration = 0
        self.max_circuit_bytes = 0


class RateLimiter:
    """Token buckets per key; forgets keys whose bucket is full again (bounded memory)."""

    MAX_KEYS = 65536

    def __init__(self, rate: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have a bucket (the memory it holds)."""
        return len(self._buckets)

    def try_acquire(self, key: object) -> bool:
        now = self._clock()
        refill = self.rate.limit / self.rate.period
        tokens, last = self._buckets.pop(key, (float(self.rate.limit), now))
        tokens = min(float(self.rate.limit), tokens + (now - last) * refill)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._prune(now, refill)
        return ok

    def _prune(self, now: float, refill: float) -> None:
        # Oldest entries first: drop those that would be full by now, and any beyond the cap.
        while self._buckets:
            key, (tokens, last) = next(iter(self._buckets.items()))
            full = tokens + (now - last) * refill >= self.rate.limit
            if not full and len(self._buckets) <= self.MAX_KEYS:
                break
            self._buckets.popitem(last=False)
