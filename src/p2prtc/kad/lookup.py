"""The iterative lookup (specs: kad-dht/README.md, "Peer routing"; Kademlia paper 2.3) as a
state machine: ask for peers to query, feed back answers or failures, until the k closest peers
seen have all answered. The service runs at most `alpha` queries at once."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..identity import PeerId
from ..multiaddr import Multiaddr
from .messages import KadPeer
from .table import K, distance, peer_key

# specs: kad-dht/README.md ("alpha" = 3, the concurrency of go and rust).
ALPHA = 3


class PeerState(enum.Enum):
    WAITING = "waiting"     # known, not asked yet
    IN_FLIGHT = "in-flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class _Candidate:
    peer: KadPeer
    distance: int
    state: PeerState = PeerState.WAITING


class Lookup:
    """Closest peers to `target` (a Kademlia key, `table.kad_key`)."""

    def __init__(self, target: int, seeds: Iterable[KadPeer], *, local: PeerId | None = None,
                 k: int = K, alpha: int = ALPHA) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.local = local
        self._peers: dict[PeerId, _Candidate] = {}
        self.stopped = False
        self._add(seeds)

    def _add(self, peers: Iterable[KadPeer]) -> None:
        for p in peers:
            if p.peer_id == self.local:
                continue
            known = self._peers.get(p.peer_id)
            if known is None:
                self._peers[p.peer_id] = _Candidate(p, distance(self.target, peer_key(p.peer_id)))
            elif p.addrs and not known.peer.addrs:
                known.peer = KadPeer(p.peer_id, p.addrs)

    def _ranked(self) -> list[_Candidate]:
        return sorted((c for c in self._peers.values() if c.state is not PeerState.FAILED),
                      key=lambda c: c.distance)

    def in_flight(self) -> int:
        return sum(1 for c in self._peers.values() if c.state is PeerState.IN_FLIGHT)

    def next_queries(self) -> list[KadPeer]:
        """Peers to ask now (marked in flight): waiting ones among the k closest, up to alpha
        queries outstanding."""
        if self.stopped:
            return []
        room = self.alpha - self.in_flight()
        out: list[KadPeer] = []
        for c in self._ranked()[:self.k]:
            if room <= 0:
                break
            if c.state is PeerState.WAITING:
                c.state = PeerState.IN_FLIGHT
                out.append(c.peer)
                room -= 1
        return out

    def on_response(self, peer: PeerId, closer: Iterable[KadPeer]) -> None:
        c = self._peers.get(peer)
        if c is not None:
            c.state = PeerState.SUCCEEDED
        self._add(closer)

    def on_failure(self, peer: PeerId) -> None:
        c = self._peers.get(peer)
        if c is not None:
            c.state = PeerState.FAILED

    def stop(self) -> None:
        """End early (e.g. a GET_VALUE found its record)."""
        self.stopped = True

    @property
    def done(self) -> bool:
        """Stopped, or every one of the k closest non-failed peers has answered."""
        if self.stopped:
            return True
        return all(c.state is PeerState.SUCCEEDED for c in self._ranked()[:self.k])

    def closest(self) -> list[KadPeer]:
        """The k closest peers that answered."""
        return [c.peer for c in self._ranked() if c.state is PeerState.SUCCEEDED][:self.k]

    def addrs_of(self, peer: PeerId) -> tuple[Multiaddr, ...]:
        c = self._peers.get(peer)
        return c.peer.addrs if c else ()
