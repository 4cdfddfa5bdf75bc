"""rust-libp2p's Kademlia (libp2p-kad 0.49, rust-libp2p 0.57) as a subprocess: the `kad`
command of the rust interop binary (tests/interop/rust/src/kad.rs), spoken to like GoKad:
one JSON command per stdin line, one reply per line."""

from __future__ import annotations

from .gokad import GoKad


class RustKad(GoKad):
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def argv(self, mode: str) -> list[str]:
        return [self.binary, "kad", "--mode", mode]
