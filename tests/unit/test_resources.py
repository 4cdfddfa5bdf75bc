"""The resource manager's bookkeeping (p2prtc.resources): scopes, refusals with reasons, release."""

from __future__ import annotations

from p2prtc.identity import Identity
from p2prtc.resources import (
    DEFAULT_PEER,
    DEFAULT_SYSTEM,
    DEFAULT_TRANSIENT,
    ConnectionScope,
    Refusal,
    ResourceLimits,
    ResourceManager,
    ScopeLimits,
)


def conn(rm: ResourceManager, direction: str = "inbound", ip: str | None = "192.0.2.1"
         ) -> ConnectionScope:
    scope = rm.open_connection(direction, ip)  # type: ignore[arg-type]
    assert isinstance(scope, ConnectionScope), scope
    return scope


def used(rm: ResourceManager, scope: str, key: str) -> int:
    return next(u for s, k, u, _ in rm.usage() if s == scope and k == key)


def test_defaults_are_gos_scaled_to_16_gib_with_more_connections() -> None:
    # go DefaultLimits: base + 16 x increase
    assert DEFAULT_SYSTEM.conns == 4096 and DEFAULT_TRANSIENT.conns_inbound == 1024
    assert DEFAULT_SYSTEM.streams_inbound == 1024 + 1024 * 16
    assert DEFAULT_TRANSIENT.conns_outbound == 64 + 32 * 16
    assert DEFAULT_PEER.conns == 8 and DEFAULT_PEER.streams_inbound == 256


def test_connection_moves_from_transient_to_its_peer_and_back_to_nothing() -> None:
    rm = ResourceManager()
    c = conn(rm)
    assert used(rm, "transient", "conns_inbound") == 1
    assert used(rm, "system", "conns") == 1
    peer = Identity.generate().peer_id
    assert c.set_peer(peer) is None
    assert used(rm, "transient", "conns_inbound") == 0
    assert rm.peer_usage(peer)["conns_inbound"] == 1
    s = c.open_stream("inbound")
    assert not isinstance(s, Refusal)
    assert s.reserve_memory(1000) is None
    assert rm.peer_usage(peer)["memory"] == 1000 and used(rm, "system", "memory") == 1000
    s.release_memory(400)
    assert used(rm, "system", "memory") == 600
    c.close()
    c.close()  # idempotent
    assert all(u == 0 for _, _, u, _ in rm.usage())
    assert rm.peers == 0 and rm.pending_ips == 0


def test_per_peer_stream_budget_refuses_that_peer_only() -> None:
    rm = ResourceManager(ResourceLimits(peer=ScopeLimits(streams_inbound=2)))
    a, b = conn(rm), conn(rm)
    pa, pb = Identity.generate().peer_id, Identity.generate().peer_id
    assert a.set_peer(pa) is None and b.set_peer(pb) is None
    assert not isinstance(a.open_stream("inbound"), Refusal)
    kept = a.open_stream("inbound")
    assert not isinstance(kept, Refusal)
    refused = a.open_stream("inbound")
    assert isinstance(refused, Refusal)
    assert refused.scope == "peer" and refused.resource == "streams inbound"
    assert refused.reason == ("peer: cannot reserve streams inbound: resource limit exceeded "
                              "(2 in use, limit 2)")
    assert not isinstance(a.open_stream("outbound"), Refusal)  # other direction: own budget
    assert not isinstance(b.open_stream("inbound"), Refusal)   # another peer: unaffected
    kept.close()
    assert not isinstance(a.open_stream("inbound"), Refusal)   # freed by the close
    assert rm.refusals[("peer", "streams inbound")] == 1


def test_system_budget_is_shared_by_all() -> None:
    rm = ResourceManager(ResourceLimits(system=ScopeLimits(conns=2)))
    conn(rm, ip="192.0.2.1")
    conn(rm, "outbound", None)
    refused = rm.open_connection("inbound", "192.0.2.2")
    assert isinstance(refused, Refusal) and refused.scope == "system"
    assert refused.resource == "connections"
    assert used(rm, "transient", "conns") == 2  # the refused one took nothing


def test_handshakes_per_ip_and_loopback_exemption() -> None:
    rm = ResourceManager(ResourceLimits(pending_per_ip=2))
    first = conn(rm, ip="192.0.2.1")
    conn(rm, ip="192.0.2.1")
    refused = rm.open_connection("inbound", "192.0.2.1")
    assert isinstance(refused, Refusal) and refused.scope == "ip"
    assert "192.0.2.1" in refused.reason
    conn(rm, ip="192.0.2.9")  # another address is fine
    # a finished handshake no longer counts against its address
    assert first.set_peer(Identity.generate().peer_id) is None
    conn(rm, ip="192.0.2.1")
    for _ in range(5):  # loopback is exempt by default, as in go
        conn(rm, ip="127.0.0.1")
    strict = ResourceManager(ResourceLimits(pending_per_ip=1, exempt_loopback=False))
    conn(strict, ip="127.0.0.1")
    assert isinstance(strict.open_connection("inbound", "127.0.0.1"), Refusal)


def test_peer_connection_budget_refused_at_set_peer_gives_everything_back() -> None:
    rm = ResourceManager(ResourceLimits(peer=ScopeLimits(conns=1)))
    peer = Identity.generate().peer_id
    assert conn(rm).set_peer(peer) is None
    second = conn(rm)
    refusal = second.set_peer(peer)
    assert isinstance(refusal, Refusal) and refusal.scope == "peer"
    assert refusal.resource == "connections"
    assert second.closed
    assert used(rm, "system", "conns") == 1 and used(rm, "transient", "conns") == 0


def test_memory_budget_and_release_on_close() -> None:
    rm = ResourceManager(ResourceLimits(peer=ScopeLimits(memory=1000)))
    c = conn(rm)
    assert c.set_peer(Identity.generate().peer_id) is None
    s1, s2 = c.open_stream("inbound"), c.open_stream("inbound")
    assert not isinstance(s1, Refusal) and not isinstance(s2, Refusal)
    assert s1.reserve_memory(800) is None
    refusal = s2.reserve_memory(300)
    assert isinstance(refusal, Refusal) and refusal.resource == "memory"
    assert refusal.current == 800 and refusal.limit == 1000
    s1.close()  # its buffered bytes go back
    assert s2.reserve_memory(300) is None
    assert used(rm, "system", "memory") == 300


def test_transient_memory_follows_the_connection_to_its_peer() -> None:
    rm = ResourceManager()
    c = conn(rm)
    assert c.reserve_memory(100) is None
    assert used(rm, "transient", "memory") == 100
    peer = Identity.generate().peer_id
    assert c.set_peer(peer) is None
    assert used(rm, "transient", "memory") == 0 and rm.peer_usage(peer)["memory"] == 100
    c.close()
    assert used(rm, "system", "memory") == 0


def test_unlimited() -> None:
    rm = ResourceManager(ResourceLimits.unlimited())
    c = conn(rm)
    for _ in range(2000):
        assert not isinstance(c.open_stream("inbound"), Refusal)
    assert c.reserve_memory(1 << 40) is None


async def test_every_host_has_the_default_budgets() -> None:
    # peers (Node, listen/dial) get the same manager as the relay, with the defaults
    from p2prtc.host import Host

    host = Host()
    try:
        rm = host.upgrader.resources
        assert isinstance(rm, ResourceManager)
        assert rm.limits == ResourceLimits()
    finally:
        await host.close()


def test_refusal_log_lines_are_rate_limited_per_scope_and_resource() -> None:
    now = [0.0]
    rm = ResourceManager(ResourceLimits(pending_per_ip=1, exempt_loopback=False),
                         clock=lambda: now[0])
    conn(rm, ip="192.0.2.1")
    lines = []
    for _ in range(5):
        refusal = rm.open_connection("inbound", "192.0.2.1")
        assert isinstance(refusal, Refusal)
        lines.append(rm.log_line("inbound connection refused", refusal))
    assert lines[0] is not None and lines[0].startswith("inbound connection refused: ip: ")
    assert lines[1:] == [None] * 4
    now[0] = 11.0
    refusal = rm.open_connection("inbound", "192.0.2.1")
    assert isinstance(refusal, Refusal)
    line = rm.log_line("inbound connection refused", refusal)
    assert line is not None and "(and 4 more refusals like it in the last 10 s)" in line
    assert rm.refusals[("ip", "connections handshaking")] == 6  # every one counted
