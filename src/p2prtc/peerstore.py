"""What we know about other peers: addresses, protocols, agent, keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .identity import PeerId, PublicKey
from .multiaddr import Multiaddr

# Addresses kept per peer; older ones are dropped first.
MAX_ADDRS_PER_PEER = 32
MAX_PROTOCOLS_PER_PEER = 256


@dataclass
class PeerInfo:
    peer_id: PeerId
    addrs: list[Multiaddr] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    agent_version: str | None = None
    protocol_version: str | None = None
    public_key: PublicKey | None = None
    observed_addr: Multiaddr | None = None  # how the peer sees us
    identified_at: float | None = None


class PeerStore:
    def __init__(self) -> None:
        self._peers: dict[PeerId, PeerInfo] = {}

    def get(self, peer: PeerId) -> PeerInfo:
        info = self._peers.get(peer)
        if info is None:
            info = self._peers[peer] = PeerInfo(peer)
        return info

    def peek(self, peer: PeerId) -> PeerInfo | None:
        return self._peers.get(peer)

    def add_addrs(self, peer: PeerId, addrs: list[Multiaddr]) -> None:
        info = self.get(peer)
        for a in addrs:
            a = a.without_peer_id()
            if a in info.addrs:
                info.addrs.remove(a)
            info.addrs.insert(0, a)
        del info.addrs[MAX_ADDRS_PER_PEER:]

    def update_identify(self, peer: PeerId, *, protocols: list[str] | None = None,
                        agent_version: str | None = None, protocol_version: str | None = None,
                        public_key: PublicKey | None = None, addrs: list[Multiaddr] | None = None,
                        observed_addr: Multiaddr | None = None) -> PeerInfo:
        info = self.get(peer)
        if protocols is not None:
            info.protocols = list(dict.fromkeys(protocols))[:MAX_PROTOCOLS_PER_PEER]
        if agent_version is not None:
            info.agent_version = agent_version
        if protocol_version is not None:
            info.protocol_version = protocol_version
        if public_key is not None:
            info.public_key = public_key
        if addrs is not None:
            self.add_addrs(peer, addrs)
        if observed_addr is not None:
            info.observed_addr = observed_addr
        info.identified_at = time.monotonic()
        return info

    def forget(self, peer: PeerId) -> None:
        self._peers.pop(peer, None)

    def __len__(self) -> int:
        return len(self._peers)
