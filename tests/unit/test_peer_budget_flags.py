"""`p2prtc listen/dial --max-connections-per-peer N --max-memory-per-peer BYTES`: the peer's
budgets (p2prtc.resources) for its relayed and WebRTC connections; without them, the defaults."""

from __future__ import annotations

from p2prtc.cli import build_parser, peer_budget_limits
from p2prtc.node import Node
from p2prtc.resources import DEFAULT_PEER, ResourceLimits

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def test_listen_and_dial_take_the_peer_budget_flags() -> None:
    parser = build_parser()
    for argv in (["dial", PEER], ["listen"]):
        args = parser.parse_args([*argv, "--max-memory-per-peer", "8M",
                                  "--max-connections-per-peer", "3"])
        limits = peer_budget_limits(args)
        assert limits is not None and limits.peer.memory == 8 << 20
        assert limits.peer.conns == limits.peer.conns_inbound == limits.peer.conns_outbound == 3
        assert limits.peer.streams == DEFAULT_PEER.streams  # the others keep their defaults
        assert limits.system == ResourceLimits().system
        assert peer_budget_limits(parser.parse_args(argv)) is None  # no flag: the defaults


async def test_a_node_starts_with_its_budgets() -> None:
    limits = ResourceLimits(peer=DEFAULT_PEER)
    async with Node(resources=limits, nat=False) as node:
        assert node.peer_id is not None
