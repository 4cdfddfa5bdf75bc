"""A dialer that abuses its direct /webrtc connection to a Python listener (issue 12.3), Python <->
Python on each engine: it opens many more streams than the listener takes (MAX_INBOUND_STREAMS)
and pushes far more than RECEIVE_BUFFER_LIMIT into a stream whose handler never reads. The
listener holds at most 256 of them and at most 4 MiB unread, resets the pushed stream with the
reason (the pusher's write fails: nothing is reported delivered), and keeps chatting with another
peer and on the same connection. The same against js-libp2p: tests/interop/test_webrtc_stream_limits.py.

The CI version floods 600 streams and pushes 24 MiB; `-m soak` runs 5,000 and 300 MB. Here the
abuser shares the listener's process and event loop, so the soak opens its 5,000 in waves of
FLOOD_WAVE: thousands of channel opens at once starve that one loop for both peers (on aiortc ICE
consent checks lapse and the connection fails after ~10 s; wrtc's dialer needs minutes to open
them). js opens all of them at once (tests/interop/test_webrtc_stream_limits.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter

import pytest

from p2prtc.errors import P2PError, StreamClosed, StreamReset
from p2prtc.protocols.chat import ChatService
from p2prtc.relay.server import RelayService
from p2prtc.transports.webrtc.muxer import MAX_INBOUND_STREAMS
from p2prtc.transports.webrtc.stream_core import RECEIVE_BUFFER_LIMIT

from ..netns import lab_ip
from .test_webrtc_python import listening_peer, webrtc_host

pytestmark = pytest.mark.usefixtures("engine")
MB = 1 << 20
SINK = "/test/sink/1.0.0"  # the handler never reads
FLOOD_WAVE = 600  # streams the abuser opens at once (see the module docstring)
# The listener's RSS may grow by this much while it is abused (peak, over its RSS before):
# what one stream may hold, the streams it accepts, and the engines' own buffers, with a
# margin for a loaded machine. Measured here: see the test's printed line.
RSS_GROWTH_BOUND = 96 * MB


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0"], echo=False)
    RelayService(host)
    return host


async def push(stream, total: int, on_step) -> tuple[int, Exception | None]:
    """Write `total` bytes in 1 MiB steps until a write fails; (bytes written, the error)."""
    block = os.urandom(MB)
    sent = 0
    try:
        while sent < total:
            await stream.write(block)
            sent += len(block)
            on_step()
    except (StreamReset, StreamClosed) as e:
        return sent, e
    return sent, None


async def open_sinks(host, conn, n: int) -> tuple[list, Counter[str]]:
    """Open n SINK streams, FLOOD_WAVE at once; (the ones negotiated, why the others failed)."""
    results: list = []
    for start in range(0, n, FLOOD_WAVE):
        wave = min(FLOOD_WAVE, n - start)
        results += await asyncio.gather(*(host.new_stream(conn, [SINK]) for _ in range(wave)),
                                        return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, (P2PError, OSError, TimeoutError)) for e in failed), failed[:3]
    return opened, Counter(f"{type(e).__name__}: {e}" for e in failed)


async def abuse_and_chat(relay, host_factory, caplog, *, streams: int, push_bytes: int) -> None:
    caplog.set_level(logging.INFO, "p2prtc.transports.webrtc")
    b, addr = await listening_peer(host_factory, relay)
    held: asyncio.Queue = asyncio.Queue()

    async def sink(stream) -> None:
        await held.put(stream)
        await stream.connection.wait_closed()  # never reads

    b.handle(SINK, sink)
    inbox: asyncio.Queue = asyncio.Queue()
    ChatService(b, lambda p, t: inbox.put_nowait((p, t)))

    a, c = await webrtc_host(host_factory), await webrtc_host(host_factory)
    chat_c = ChatService(c, lambda p, t: None)
    chat_a = ChatService(a, lambda p, t: None)
    conn = await a.dial(addr)
    assert conn.transport == "webrtc" and not conn.limited
    await a.ping_service.ping(conn)  # B has registered its side of the connection by now
    conn_b = next(x for x in b.connections(a.peer_id) if x.transport == "webrtc")
    muxer_b = conn_b.muxer
    rss0 = rss()
    peak = {"rss": rss0, "buffered": 0}

    def measure() -> None:
        peak["rss"] = max(peak["rss"], rss())
        peak["buffered"] = max(peak["buffered"], muxer_b.buffered)

    # 1. push into a stream nobody reads, while flooding the connection with streams
    t0 = time.perf_counter()
    pushed = await a.new_stream(conn, [SINK])
    victim = await asyncio.wait_for(held.get(), 10)
    (sent, error), (opened, why) = await asyncio.gather(
        push(pushed, push_bytes, measure), open_sinks(a, conn, streams))
    measure()
    took = time.perf_counter() - t0
    failed = sum(why.values())
    print(f"\n{streams} streams: {len(opened)} held, {failed} failed ({dict(why)}), "
          f"{muxer_b.refused_channels} refused by the listener; {sent / MB:.0f} MiB written "
          f"before {error!r}; listener peak unread {peak['buffered'] / MB:.2f} MiB, RSS "
          f"+{(peak['rss'] - rss0) / MB:.1f} MiB; {took:.1f} s")
    assert error is not None, f"{sent} bytes written into a stream nobody reads, no error"
    assert sent <= push_bytes and sent < RECEIVE_BUFFER_LIMIT + 16 * MB
    assert victim.reset_reason is not None and "unread" in victim.reset_reason, victim.reset_reason
    assert any("unread" in r.getMessage() and SINK in r.getMessage() for r in caplog.records)
    # every flood stream that got through is held; the listener refused the rest (or the
    # dialer gave up on them first: its own open/negotiation timeouts)
    assert len(opened) <= MAX_INBOUND_STREAMS and failed >= streams - MAX_INBOUND_STREAMS
    assert muxer_b.inbound_streams <= MAX_INBOUND_STREAMS and muxer_b.refused_channels > 0
    assert any("closing data channel" in r.getMessage() for r in caplog.records)
    assert peak["buffered"] <= RECEIVE_BUFFER_LIMIT
    growth = peak["rss"] - rss0
    assert growth < RSS_GROWTH_BOUND, f"RSS grew {growth / MB:.0f} MiB"

    # 2. the listener still chats: with another peer, and on the abused connection (our side
    # opens it; the dialer's own new streams wait for a free slot)
    await c.dial(addr)
    await chat_c.send(b.peer_id, "still there?")
    assert await asyncio.wait_for(inbox.get(), 20) == (c.peer_id, "still there?")
    await b.ping_service.ping(conn_b)
    for s in opened:
        s.reset()
    await chat_a.send(b.peer_id, "and on the same connection")
    assert await asyncio.wait_for(inbox.get(), 20) == (a.peer_id, "and on the same connection")
    assert not conn_b.is_closed and not conn.is_closed


async def test_stream_flood_and_unread_push_leave_the_listener_bounded(relay, host_factory, caplog):
    await abuse_and_chat(relay, host_factory, caplog, streams=600, push_bytes=24 * MB)


@pytest.mark.soak
async def test_soak_5000_streams_and_300_mb_unread(relay, host_factory, caplog):
    await abuse_and_chat(relay, host_factory, caplog, streams=5000, push_bytes=300 * MB)
