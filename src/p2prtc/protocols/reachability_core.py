"""How confident we are that our direct addresses are publicly reachable, sans-I/O: AutoNAT v2
answers in, a verdict per address (and for the node) out.

The rules are go-libp2p's AutoNAT v2 client side (`p2p/host/basichost/
addrs_reachability_tracker.go`, its `probeManager` and `addrStatus`):
- each address keeps its last `MAX_RECENT_DIALS_WINDOW` (5) outcomes (a dial-back that reached
  us: success; a dial error: failure; a refusal or a dial-back error: no outcome);
  confidence = successes - failures; public once it is >= `MIN_CONFIDENCE` (2), private once
  <= -2, else unknown. So one server's word is never the verdict, and one odd answer after a
  run of the other kind does not flip it (from 5 successes it takes 4 failures);
- an address is probed until |confidence| reaches `TARGET_CONFIDENCE` (3), then again when its
  last outcome is older than `HIGH_CONFIDENCE_PROBE_INTERVAL` (1 h) or disagrees with the
  verdict; outcomes older than `MAX_PROBE_RESULT_TTL` (5 h) are forgotten;
- at most `MAX_RECENT_DIALS_PER_ADDR` (10) dials of an address per `RECENT_PROBE_INTERVAL`
  (10 min), and after `MAX_CONSECUTIVE_REFUSALS` (5) refusals it rests for the same 10 min;
- a probe names up to `MAX_ADDRS_PER_REQUEST` (10) addresses, the one that needs it first.
Not taken over: go's primary/secondary addresses (a ws address inheriting "public" from the TCP
port it shares): our transports share no port.

`ServerPicker` is go's autonatv2 client's choice of server: a random connected server not asked
within `SERVER_THROTTLE` (2 min), so successive probes go to different servers.

`Backoff` is the tracker's wait when it cannot probe (no server, persistent errors): 5 s
doubling to 5 min (go's backoffStartInterval, maxBackoffInterval).

Nothing here does I/O or reads a clock: callers pass `now` (seconds, monotonic).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..multiaddr import Multiaddr
from .autonat_core import CheckResult, Reachability

# go-libp2p p2p/host/basichost/addrs_reachability_tracker.go (constants of the same names):
TARGET_CONFIDENCE = 3  # targetConfidence: probe until |successes - failures| reaches it
MIN_CONFIDENCE = 2  # minConfidence: |successes - failures| for a public/private verdict
MAX_RECENT_DIALS_WINDOW = TARGET_CONFIDENCE + 2  # maxRecentDialsWindow: outcomes kept per addr
MAX_RECENT_DIALS_PER_ADDR = 10  # maxRecentDialsPerAddr: dials per RECENT_PROBE_INTERVAL
RECENT_PROBE_INTERVAL = 600.0  # recentProbeInterval (10 min)
MAX_CONSECUTIVE_REFUSALS = 5  # maxConsecutiveRefusals: then rest RECENT_PROBE_INTERVAL
HIGH_CONFIDENCE_PROBE_INTERVAL = 3600.0  # highConfidenceAddrProbeInterval (1 h)
MAX_PROBE_RESULT_TTL = MAX_RECENT_DIALS_WINDOW * HIGH_CONFIDENCE_PROBE_INTERVAL  # (5 h)
MAX_ADDRS_PER_REQUEST = 10  # maxAddrsPerRequest
MAX_TRACKED_ADDRS = 50  # maxTrackedAddrs (10 per transport, 5 transports)
NEW_ADDRS_PROBE_DELAY = 1.0  # newAddrsProbeDelay: first probe after an address change
REFRESH_INTERVAL = 300.0  # defaultReachabilityRefreshInterval (5 min): the steady-state check
BACKOFF_START = 5.0  # backoffStartInterval
MAX_BACKOFF = 300.0  # maxBackoffInterval (5 min)
MAX_CONSECUTIVE_ERRORS = 20  # maxConsecutiveErrors: then back off
PROBE_TIMEOUT = 30.0  # probeTimeout: one request, dial data included
# go-libp2p p2p/protocol/autonatv2/autonat.go defaultThrottlePeerDuration: a server is asked
# again only after this long.
SERVER_THROTTLE = 120.0


@dataclass
class AddrStatus:
    """What the servers said about one of our addresses."""

    addr: Multiaddr
    outcomes: list[tuple[float, bool]] = field(default_factory=list)  # (at, dialled back)
    dial_times: list[float] = field(default_factory=list)
    consecutive_refusals: int = 0
    last_refusal: float | None = None

    def counts(self) -> tuple[int, int]:
        ok = sum(1 for _, s in self.outcomes if s)
        return ok, len(self.outcomes) - ok

    @property
    def confidence(self) -> int:
        """successes - failures among the kept outcomes."""
        ok, failed = self.counts()
        return ok - failed

    def reachability(self) -> Reachability:
        c = self.confidence
        if c >= MIN_CONFIDENCE:
            return Reachability.PUBLIC
        if -c >= MIN_CONFIDENCE:
            return Reachability.PRIVATE
        return Reachability.UNKNOWN

    def remove_before(self, t: float) -> None:
        self.outcomes = [o for o in self.outcomes if o[0] >= t]

    def recent_dials(self, now: float) -> int:
        return sum(1 for t in self.dial_times if now - t <= RECENT_PROBE_INTERVAL)

    def required_probes(self, now: float) -> int:
        """How many more answers this address needs now (0: none)."""
        if self.consecutive_refusals >= MAX_CONSECUTIVE_REFUSALS:
            assert self.last_refusal is not None
            if now - self.last_refusal < RECENT_PROBE_INTERVAL:
                return 0
            self.consecutive_refusals, self.last_refusal = 0, None
        if self.recent_dials(now) >= MAX_RECENT_DIALS_PER_ADDR:
            return 0
        missing = TARGET_CONFIDENCE - abs(self.confidence)
        if missing > 0:
            return missing
        at, success = self.outcomes[-1]
        if now - at > HIGH_CONFIDENCE_PROBE_INTERVAL:
            return 1  # confident, but the last word is old
        verdict = self.reachability()
        if (verdict is Reachability.PUBLIC) != success:
            return 1  # the last answer disagrees with the verdict: ask again
        return 0

    def add_refusal(self, now: float) -> None:
        self.last_refusal = now
        self.consecutive_refusals += 1

    def add_outcome(self, now: float, reachability: Reachability) -> None:
        self.consecutive_refusals, self.last_refusal = 0, None
        self.dial_times = [t for t in self.dial_times if now - t < RECENT_PROBE_INTERVAL]
        self.dial_times.append(now)
        self.remove_before(now - MAX_PROBE_RESULT_TTL)
        if reachability is Reachability.UNKNOWN:
            return  # a dial-back error: dialled, but it tells nothing
        self.outcomes.append((now, reachability is Reachability.PUBLIC))
        del self.outcomes[:-MAX_RECENT_DIALS_WINDOW]


@dataclass(frozen=True)
class Confirmed:
    """Our tracked addresses by verdict."""

    reachable: tuple[Multiaddr, ...] = ()
    unreachable: tuple[Multiaddr, ...] = ()
    unknown: tuple[Multiaddr, ...] = ()

    @property
    def reachability(self) -> Reachability:
        """The node's: PUBLIC when an address is, PRIVATE when every one is, else UNKNOWN."""
        if self.reachable:
            return Reachability.PUBLIC
        if self.unreachable and not self.unknown:
            return Reachability.PRIVATE
        return Reachability.UNKNOWN


class ReachabilityTracker:
    """The addresses we ask about and what the answers were (go's probeManager)."""

    def __init__(self) -> None:
        self.statuses: dict[Multiaddr, AddrStatus] = {}
        self.in_progress: dict[Multiaddr, int] = {}
        self.consecutive_errors = 0

    @property
    def addrs(self) -> list[Multiaddr]:
        return list(self.statuses)

    def update_addrs(self, addrs: Iterable[Multiaddr]) -> bool:
        """Track these addresses (what we knew of ones still there is kept); True when the set
        changed. At most `MAX_TRACKED_ADDRS`."""
        wanted = list(dict.fromkeys(a.without_peer_id() for a in addrs))[:MAX_TRACKED_ADDRS]
        if wanted == list(self.statuses):
            return False
        self.statuses = {a: self.statuses.get(a) or AddrStatus(a) for a in wanted}
        return True

    def next_probe(self, now: float) -> list[Multiaddr]:
        """The addresses of the next request, the one to be dialled first; [] when none needs a
        probe now. Call `start_probe` before asking and `complete_probe` after."""
        first = next((a for a, s in self.statuses.items()
                      if s.required_probes(now) > self.in_progress.get(a, 0)), None)
        if first is None:
            return []
        rest = [a for a, s in self.statuses.items() if a != first and s.required_probes(now)]
        return [first, *rest][:MAX_ADDRS_PER_REQUEST]

    def start_probe(self, probe: Sequence[Multiaddr]) -> None:
        if probe:
            self.in_progress[probe[0]] = self.in_progress.get(probe[0], 0) + 1

    def complete_probe(self, probe: Sequence[Multiaddr], result: CheckResult | None,
                       now: float) -> None:
        """One request done: `result` None when it failed (no answer, the stream broke, the
        server rejected it: not a word about our addresses)."""
        if not probe:
            return
        first = probe[0]
        left = self.in_progress.get(first, 0) - 1
        if left > 0:
            self.in_progress[first] = left
        else:
            self.in_progress.pop(first, None)
        if result is None or result.status in ("rejected", "internal-error"):
            self.consecutive_errors += 1
            return
        self.consecutive_errors = 0
        first_status = self.statuses.get(first)
        if result.status == "refused" or result.addr is None:
            if first_status is not None:
                first_status.add_refusal(now)  # go: only the first address counts as refused
            return
        dialled = result.addr.without_peer_id()
        if dialled != first and first_status is not None:
            first_status.add_refusal(now)
        status = self.statuses.get(dialled)
        if status is not None:
            status.add_outcome(now, result.reachability)

    @property
    def failing(self) -> bool:
        """Too many requests in a row failed: back off (go's errTooManyConsecutiveFailures)."""
        return self.consecutive_errors > MAX_CONSECUTIVE_ERRORS

    def confirmed(self, now: float) -> Confirmed:
        reachable: list[Multiaddr] = []
        unreachable: list[Multiaddr] = []
        unknown: list[Multiaddr] = []
        for a, s in self.statuses.items():
            s.remove_before(now - MAX_PROBE_RESULT_TTL)
            verdict = s.reachability()
            (reachable if verdict is Reachability.PUBLIC
             else unreachable if verdict is Reachability.PRIVATE else unknown).append(a)
        return Confirmed(tuple(reachable), tuple(unreachable), tuple(unknown))


K = TypeVar("K", bound=Hashable)


class ServerPicker(Generic[K]):
    """A random server among those not asked within `throttle` seconds (go's autonatv2
    client)."""

    def __init__(self, throttle: float = SERVER_THROTTLE, *,
                 rng: random.Random | None = None) -> None:
        self.throttle = throttle
        self.asked: dict[K, float] = {}
        self._rng = rng or random.Random()

    def pick(self, servers: Iterable[K], now: float) -> K | None:
        free = [s for s in servers if now - self.asked.get(s, -self.throttle - 1.0)
                >= self.throttle]
        if not free:
            return None
        chosen = self._rng.choice(free)
        self.asked[chosen] = now
        return chosen

    def free_at(self, servers: Iterable[K]) -> float | None:
        """When the first of `servers` may be asked again (None: there are none)."""
        times = [self.asked.get(s, float("-inf")) + self.throttle for s in servers]
        return min(times) if times else None


class Backoff:
    """`BACKOFF_START` doubling to `MAX_BACKOFF` while probing is impossible; reset once it
    works (go's newBackoffInterval)."""

    def __init__(self, start: float = BACKOFF_START, maximum: float = MAX_BACKOFF) -> None:
        self.start = start
        self.maximum = maximum
        self.current = 0.0

    def next(self) -> float:
        self.current = self.start if self.current <= 0 else min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> None:
        self.current = 0.0
