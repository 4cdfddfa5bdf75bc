"""Budgets (p2prtc.resources) on WebRTC, Python <-> Python on real sockets in the test namespace:
a peer's data-channel streams count in its memory budget at the listener, its WebRTC
connections in its connection budget. Over a budget only the offending stream or connection is
refused, with the reason in the listener's log; the peer's other streams lose nothing, and other
peers chat on as before. /webrtc runs on both engines; webrtc-direct on its own stack.

Run inside the test namespace:
    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_webrtc_budgets.py -q
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import replace

import pytest

from p2prtc.errors import DialError, StreamClosed, StreamReset
from p2prtc.host import Host
from p2prtc.protocols.chat import ChatService
from p2prtc.relay.server import RelayService
from p2prtc.resources import DEFAULT_PEER, ResourceLimits, ResourceManager
from p2prtc.transports.circuit import CircuitListener
from p2prtc.transports.webrtc.stream_core import RECEIVE_BUFFER_LIMIT
from p2prtc.transports.webrtc.transport import WebRTCTransport
from p2prtc.transports.webrtc_direct.transport import WebRTCDirectTransport

from ..netns import lab_ip
from .test_webrtc_python import webrtc_host

MB = 1 << 20
SINK = "/test/sink/1.0.0"  # reads only once the test says so
# The listener's budget for one peer's unread bytes in these tests (default 64 MiB): three
# streams of PUSH each, every one under the 4 MiB a stream may hold, pass it with the third.
PEER_MEMORY = 6 * MB
PUSH = 5 * MB // 2
assert PUSH < RECEIVE_BUFFER_LIMIT and 2 * PUSH < PEER_MEMORY < 3 * PUSH


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0"], echo=False)
    RelayService(host)
    return host


def budget(host: Host, **peer: int) -> ResourceManager:
    """Give `host` budgets whose per-peer scope differs from the defaults by `peer`."""
    rm = ResourceManager(ResourceLimits(peer=replace(DEFAULT_PEER, **peer)))
    host.upgrader.resources = rm
    return rm


async def listener_with(host_factory, relay, **peer: int):
    b = await webrtc_host(host_factory)
    rm = budget(b, **peer)
    await b.listen(relay.listen_addrs[0].with_peer_id(relay.peer_id).encapsulate("/p2p-circuit"),
                   "/webrtc")
    await b.listeners(CircuitListener)[0].reserved()
    addr = next(a for a in b.listen_addrs if a.has("webrtc")).with_peer_id(b.peer_id)
    return b, addr, rm


async def read_all(stream) -> bytes:
    parts = []
    while chunk := await stream.read(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


async def push(stream, total: int) -> Exception | None:
    """Write `total` bytes in 256 KiB steps; the error that stopped it, if any."""
    block = os.urandom(256 * 1024)
    try:
        for _ in range(total // len(block)):
            await stream.write(block)
    except (StreamReset, StreamClosed) as e:
        return e
    return None


@pytest.mark.usefixtures("engine")
async def test_peer_memory_budget_resets_the_stream_that_passes_it(relay, host_factory, caplog):
    caplog.set_level(logging.INFO, "p2prtc")
    b, addr, rm = await listener_with(host_factory, relay, memory=PEER_MEMORY)
    go = asyncio.Event()
    results: asyncio.Queue = asyncio.Queue()

    async def sink(stream) -> None:
        await go.wait()  # hold everything unread until the pushes are over
        try:
            await results.put(hashlib.sha256(await read_all(stream)).hexdigest())
        except StreamReset as e:
            await results.put(e)

    b.handle(SINK, sink)
    inbox: asyncio.Queue = asyncio.Queue()
    ChatService(b, lambda p, t: inbox.put_nowait((p, t)))
    a, c = await webrtc_host(host_factory), await webrtc_host(host_factory)
    chat_a, chat_c = ChatService(a, lambda p, t: None), ChatService(c, lambda p, t: None)
    conn = await a.dial(addr)
    assert conn.transport == "webrtc" and not conn.limited

    # two streams of 2.5 MiB each, held unread at B, and finished: within A's 6 MiB
    hashes = []
    for _ in range(2):
        stream = await a.new_stream(conn, [SINK])
        data = os.urandom(PUSH)
        await stream.write(data)
        await stream.close_write()
        hashes.append(hashlib.sha256(data).hexdigest())
    # a third passes the budget: B resets it (the others are kept)
    third = await a.new_stream(conn, [SINK])
    error = await push(third, RECEIVE_BUFFER_LIMIT - MB // 2)
    if error is None:  # the writes were all taken before B's reset came back (wrtc may)
        with pytest.raises(StreamReset):
            await asyncio.wait_for(third.read(), 10)
    line = next(r.getMessage() for r in caplog.records
                if "peer: cannot reserve memory" in r.getMessage())
    assert "reset" in line and f"limit {PEER_MEMORY}" in line, line
    held = rm.peer_usage(a.peer_id)["memory"]
    assert held <= PEER_MEMORY, held

    # another peer chats as before, and so does A on the same connection
    await c.dial(addr)
    await chat_c.send(b.peer_id, "still there?")
    assert await asyncio.wait_for(inbox.get(), 20) == (c.peer_id, "still there?")
    await chat_a.send(b.peer_id, "and me?")
    assert await asyncio.wait_for(inbox.get(), 20) == (a.peer_id, "and me?")

    # B's application reads: the two kept streams lost nothing; the third says why it ended
    go.set()
    got = [await asyncio.wait_for(results.get(), 20) for _ in range(3)]
    resets = [g for g in got if isinstance(g, StreamReset)]
    assert len(resets) == 1 and "peer: cannot reserve memory" in str(resets[0]), got
    assert sorted(g for g in got if isinstance(g, str)) == sorted(hashes)
    assert rm.peer_usage(a.peer_id)["memory"] == 0  # given back as it was read
    assert rm.refusals[("peer", "memory")] >= 1
    assert not conn.is_closed


@pytest.mark.usefixtures("engine")
async def test_peer_connection_budget_refuses_one_more_webrtc_connection(relay, host_factory,
                                                                         caplog):
    caplog.set_level(logging.INFO, "p2prtc")
    # A's relayed connection (the signaling's) and one WebRTC connection: two
    b, addr, rm = await listener_with(host_factory, relay, conns=2, conns_inbound=2)
    a, c = await webrtc_host(host_factory), await webrtc_host(host_factory)
    first = await a.dial(addr)
    assert first.transport == "webrtc"
    with pytest.raises(DialError, match="refused the WebRTC upgrade"):
        await a.transport(WebRTCTransport).dial(addr)  # a second one, past the host's reuse
    line = next(r.getMessage() for r in caplog.records
                if "inbound WebRTC connection" in r.getMessage() and "refused" in r.getMessage())
    assert "peer: cannot reserve connections" in line and "limit 2" in line, line
    assert sum(n for (scope, what), n in rm.refusals.items()
               if scope == "peer" and what.startswith("connections")) == 1
    # A's first connection and another peer are unaffected
    await a.ping_service.ping(first)
    other = await c.dial(addr)
    assert other.transport == "webrtc"
    await c.ping_service.ping(other)
    assert rm.peer_usage(a.peer_id)["conns"] == 2


async def test_webrtc_direct_connections_count_in_the_peer_budget(host_factory, caplog):
    caplog.set_level(logging.INFO, "p2prtc")
    server = await host_factory(listen=[])
    rm = budget(server, conns=1, conns_inbound=1)
    (listen_addr,) = await server.listen(f"/ip4/{lab_ip()}/udp/0/webrtc-direct")
    addr = listen_addr.with_peer_id(server.peer_id)
    a, c = await host_factory(listen=[]), await host_factory(listen=[])
    first = await a.dial(addr)
    assert first.transport == "webrtc-direct"
    try:  # the server refuses it once Noise names A: the dial fails, or its connection ends
        second = await a.transport(WebRTCDirectTransport).dial(addr)
        await asyncio.wait_for(second.wait_closed(), 10)
    except DialError:
        pass
    line = next(r.getMessage() for r in caplog.records
                if "webrtc-direct: connection of" in r.getMessage())
    assert "peer: cannot reserve connections" in line and "limit 1" in line, line
    await a.ping_service.ping(first)
    await c.ping_service.ping(await c.dial(addr))
    assert rm.peer_usage(a.peer_id)["conns"] == 1
