"""The routing table: 256 k-buckets by XOR distance of SHA-256 keys (specs: kad-dht/README.md,
"Kademlia routing table"; Kademlia paper section 2.2). Sans-I/O: the service tells it which
peers are DHT servers, it answers who is closest."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from ..identity import PeerId
from ..multiaddr import Multiaddr

# specs: kad-dht/README.md ("k" = 20, the bucket size go and rust use).
K = 20
KEY_BITS = 256  # SHA-256


def kad_key(data: bytes) -> int:
    """The Kademlia key of a peer id's bytes or of a record/provider key: SHA-256, as an int."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def peer_key(peer: PeerId) -> int:
    return kad_key(peer.to_bytes())


def distance(a: int, b: int) -> int:
    return a ^ b


class RoutingTable:
    """k-buckets indexed by the common prefix length with our own key. A full bucket keeps its
    peers (the oldest are the likeliest to stay, as the paper argues) unless `remove` makes room,
    which the service does for peers that failed to answer."""

    def __init__(self, local: PeerId, k: int = K) -> None:
        self.local = local
        self.local_key = peer_key(local)
        self.k = k
        self._buckets: list[OrderedDict[PeerId, tuple[Multiaddr, ...]]] = [
            OrderedDict() for _ in range(KEY_BITS + 1)]

    def _bucket_index(self, peer: PeerId) -> int:
        d = distance(self.local_key, peer_key(peer))
        return KEY_BITS - d.bit_length()  # common prefix length, KEY_BITS for ourselves

    def add(self, peer: PeerId, addrs: Iterable[Multiaddr] = ()) -> bool:
        """Add or refresh a peer; False when its bucket is full (or it is us)."""
        if peer == self.local:
            return False
        bucket = self._buckets[self._bucket_index(peer)]
        if peer in bucket:
            bucket.move_to_end(peer)
            new = tuple(addrs)
            if new:
                bucket[peer] = new
            return True
        if len(bucket) >= self.k:
            return False
        bucket[peer] = tuple(addrs)
        return True

    def remove(self, peer: PeerId) -> None:
        self._buckets[self._bucket_index(peer)].pop(peer, None)

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, PeerId) and peer in self._buckets[self._bucket_index(peer)]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def peers(self) -> list[PeerId]:
        return [p for b in self._buckets for p in b]

    def addrs(self, peer: PeerId) -> tuple[Multiaddr, ...]:
        return self._buckets[self._bucket_index(peer)].get(peer, ())

    def closest(self, key: int, count: int | None = None,
                exclude: PeerId | None = None) -> list[PeerId]:
        """The `count` (default k) peers closest to `key`."""
        n = self.k if count is None else count
        peers = [p for p in self.peers() if p != exclude]
        peers.sort(key=lambda p: distance(key, peer_key(p)))
        return peers[:n]
