"""Identify's observed address is kept only from connections the peer dialed (issue 15.5): on
one we dialed, the peer sees our ephemeral source port, which a relay then put into its
reservations (`lab internet` found listeners advertising 7 undialable relay ports)."""

from __future__ import annotations


async def test_observed_addr_only_from_inbound_connections(host_factory):
    a = await host_factory()
    b = await host_factory(listen=())
    conn = await b.dial(a.addrs()[0].with_peer_id(a.peer_id))
    assert await b.identified(conn) is not None
    (inbound,) = [c for c in a.connections() if c.remote_peer == b.peer_id]
    assert await a.identified(inbound) is not None
    assert b.observed_addrs == []  # b dialed: a saw b's ephemeral port
    assert a.observed_addrs == [a.addrs()[0]]  # a was dialed: b saw its listening port
