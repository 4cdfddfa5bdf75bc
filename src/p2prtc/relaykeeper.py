"""The relay keeper's decisions (sans-I/O): how many relay reservations a listening `Node` holds
and on which relays (issue 15).

Inputs: the relays `listen()` started with (given, or found in the DHT), what happened to each
(`reserved`, `down`: its reservation was lost or an attempt failed), what the DHT found
(`found`), whether a relay is needed at all (`set_wanted`: AutoNAT said public or not) and the
clock (`tick`). Outputs: `Reserve(addr)` (start keeping a reservation there), `Release(peer)`
(stop, and close the relay connection), `FindRelays(count)` (ask the DHT; answer with
`found`), and `Lost(peer)` (news for the user: a relay is gone past the grace). The node's
asyncio side (`Node._keeper_*`) turns host events into inputs and actions into calls.

Rules:
- The goal is as many relays as `listen()` started with (the given ones, or `RELAYS_FROM_DHT`).
- A relay whose reservation is down for `LOST_GRACE` no longer counts: with a DHT the keeper asks
  for relays it does not use yet and reserves on one per missing relay. The lost relay itself is
  kept (the circuit client goes on retrying it with its slow backoff, up to 60 s apart): it may
  come back. A relay found in the DHT that never granted a reservation within the grace is
  released and not picked again.
- Holding more than the goal (a lost relay came back) releases the newest relay found in the
  DHT; given relays are never released for that.
- Not wanted (publicly reachable): every relay is released. Wanted again: the given relays are
  reserved again, else as many as the goal are looked up in the DHT.
"""

from __future__ import annotations

from dataclasses import dataclass

from .transports.circuit import FAST_RETRY_WINDOW

# A relay unreachable this long is taken for gone and replaced: the circuit client retries a
# lost relay every FAST_RETRY for FAST_RETRY_WINDOW (30 s; transports/circuit.py) because it is
# usually restarting, and only then backs off. Replacing it sooner would move a listener off a
# relay that a restart brings back within seconds.
LOST_GRACE = FAST_RETRY_WINDOW


@dataclass(frozen=True)
class Reserve:
    """Start keeping a reservation on the relay at `addr` (`.../p2p/<relay id>`)."""

    addr: str
    reason: str


@dataclass(frozen=True)
class Release:
    """Stop keeping the reservation on relay `peer` (its listener closed, connection too)."""

    peer: str
    addr: str
    reason: str


@dataclass(frozen=True)
class FindRelays:
    """Ask the DHT for up to `count` relays; give the answer to `found()` (or `find_failed()`)."""

    count: int


@dataclass(frozen=True)
class Lost:
    """Relay `peer` has been down for the grace: it no longer counts towards the goal."""

    peer: str
    addr: str
    down_s: float


Action = Reserve | Release | FindRelays | Lost


@dataclass
class _Relay:
    peer: str
    addr: str
    given: bool
    order: int
    held: bool = False
    ever_held: bool = False
    down_since: float | None = None  # not held since (None: held, or never tried yet)
    reported_lost: bool = False

    def counts(self, now: float, grace: float) -> bool:
        """Held, or still has its chance (just started, or down for less than the grace)."""
        return self.held or self.down_since is None or now - self.down_since < grace


def peer_of(addr: str) -> str:
    """The relay's peer id: the last `/p2p/<id>` of its address."""
    head, sep, peer = addr.rpartition("/p2p/")
    if not sep or not peer or "/" in peer:
        raise ValueError(f"a relay address ends with /p2p/<relay id>: {addr}")
    return peer


class RelayKeeper:
    """See the module docstring. `discovery`: the node has a DHT to find relays in."""

    def __init__(self, relays: list[str], *, given: bool, discovery: bool,
                 grace: float = LOST_GRACE, now: float = 0.0,
                 goal: int | None = None) -> None:
        self.grace = grace
        self.discovery = discovery
        self.goal = 0
        self.wanted = True
        self._given: list[str] = []
        self._relays: dict[str, _Relay] = {}
        self._shunned: set[str] = set()  # found relays that never worked, not picked again
        self._finding = False
        self._next_find = 0.0  # no lookup before this (one per grace at most while short)
        self._order = 0
        self.track(relays, given=given, now=now, goal=goal)

    def track(self, relays: list[str], *, given: bool, now: float,
              goal: int | None = None) -> None:
        """Keep these relays too (another `listen()`): the goal grows by `goal`, default one
        per relay not kept yet. Say what became of each with `reserved`/`down`."""
        new = [a for a in dict.fromkeys(relays) if peer_of(a) not in self._relays]
        self.goal += len(new) if goal is None else goal
        for addr in new:
            self._add(addr, given, now)
            if given:
                self._given.append(addr)

    # -- state -----------------------------------------------------------------------------

    def relays(self) -> list[str]:
        """The addresses of the relays kept now (held, trying, or lost and retried)."""
        return [r.addr for r in self._relays.values()]

    def held(self) -> list[str]:
        return [r.peer for r in self._relays.values() if r.held]

    def knows(self, peer: str) -> bool:
        return peer in self._relays

    def short(self, now: float) -> bool:
        """Fewer relays count (held, or still within their grace) than the goal."""
        return self.wanted and self._counting(now) < self.goal

    def next_deadline(self, now: float) -> float | None:
        """When `tick` has something to decide next (a grace ending), if anything."""
        if not self.wanted:
            return None
        ends = [r.down_since + self.grace for r in self._relays.values()
                if r.down_since is not None and not r.reported_lost]
        if (self.discovery and not self._finding and self._next_find > now
                and self._counting(now) < self.goal):
            ends.append(self._next_find)
        return min(ends) if ends else None

    # -- inputs ----------------------------------------------------------------------------

    def reserved(self, peer: str, now: float) -> list[Action]:
        r = self._relays.get(peer)
        if r is None:
            return []
        r.held, r.ever_held, r.down_since, r.reported_lost = True, True, None, False
        return self.tick(now)

    def down(self, peer: str, now: float) -> list[Action]:
        """Its reservation was lost, or an attempt failed (the circuit client retries)."""
        r = self._relays.get(peer)
        if r is None:
            return []
        r.held = False
        if r.down_since is None:
            r.down_since = now
        return self.tick(now)

    def found(self, addrs: list[str], now: float) -> list[Action]:
        """The DHT's answer to `FindRelays`: reserve on unused relays, one per missing relay."""
        self._finding = False
        if not self.wanted:
            return []
        out: list[Action] = []
        self._next_find = now + self.grace  # unless it filled the goal, ask again then
        for addr in addrs:
            missing = self.goal - self._counting(now)
            if missing <= 0:
                break
            peer = peer_of(addr)
            if peer in self._relays or peer in self._shunned:
                continue
            self._add(addr, False, now)
            out.append(Reserve(addr, "found in the DHT" if not self._lost_any()
                               else "found in the DHT to replace a lost relay"))
        return out

    def find_failed(self, now: float) -> list[Action]:
        """The DHT lookup failed: `tick` asks again one grace later."""
        self._finding = False
        self._next_find = now + self.grace
        return []

    def set_wanted(self, wanted: bool, now: float) -> list[Action]:
        """False: publicly reachable, no relay needed; True: private or unknown again."""
        if wanted == self.wanted:
            return []
        self.wanted = wanted
        if not wanted:
            out: list[Action] = [Release(r.peer, r.addr, "publicly reachable")
                                 for r in self._relays.values()]
            self._relays.clear()
            self._finding = False
            return out
        if self._given:
            for addr in self._given:
                self._add(addr, True, now)
            return [Reserve(a, "no longer publicly reachable") for a in self._given]
        self._finding = self.discovery
        self._next_find = 0.0
        return [FindRelays(self.goal)] if self.discovery else []

    def tick(self, now: float) -> list[Action]:
        """Decide what the clock and the state call for (after each input, and at
        `next_deadline()`)."""
        if not self.wanted:
            return []
        out: list[Action] = []
        for r in list(self._relays.values()):
            if r.held or r.down_since is None or now - r.down_since < self.grace:
                continue
            if not r.given and not r.ever_held:
                del self._relays[r.peer]
                self._shunned.add(r.peer)
                out.append(Release(r.peer, r.addr, f"no reservation within {self.grace:.0f} s"))
            elif not r.reported_lost:
                r.reported_lost = True
                out.append(Lost(r.peer, r.addr, round(now - r.down_since, 1)))
        held = [r for r in self._relays.values() if r.held]
        if len(held) > self.goal:
            spare = sorted((r for r in held if not r.given), key=lambda r: -r.order)
            for r in spare[:len(held) - self.goal]:
                del self._relays[r.peer]
                out.append(Release(r.peer, r.addr, "a lost relay came back: more than "
                                   f"the {self.goal} wanted"))
        missing = self.goal - self._counting(now)
        if missing > 0 and self.discovery and not self._finding and now >= self._next_find:
            self._finding = True
            # the DHT returns relays we know too: ask for enough to have `missing` new ones
            out.append(FindRelays(missing + len(self._relays) + len(self._shunned)))
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _add(self, addr: str, given: bool, now: float) -> None:
        peer = peer_of(addr)
        if peer not in self._relays:
            self._order += 1
            self._relays[peer] = _Relay(peer, addr, given, self._order)

    def _counting(self, now: float) -> int:
        return sum(r.counts(now, self.grace) for r in self._relays.values())

    def _lost_any(self) -> bool:
        return any(r.reported_lost for r in self._relays.values())
