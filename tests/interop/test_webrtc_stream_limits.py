"""js-libp2p abusing its direct /webrtc connection to our listener (issue 12.3), in Node
(node-datachannel) and in Chromium, our listener on each engine: js opens far more streams than we
take (MAX_INBOUND_STREAMS) and pushes far more than RECEIVE_BUFFER_LIMIT into a stream whose
handler never reads. Our listener holds at most 256 streams and 4 MiB unread, resets the pushed
stream with the reason (js's write fails: STOP_SENDING, then RESET_STREAM), and keeps chatting: a
Python peer chats with it, it pings js on the abused connection, and js's next stream (once it
lets its flood go) carries 1 MiB on the same connection.

CI floods 600 streams and pushes 24 MiB; `-m soak` runs 5,000 and 300 MB (Python <-> Python:
tests/e2e/test_webrtc_stream_limits.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from p2prtc.identity import PeerId
from p2prtc.protocols.chat import ChatService
from p2prtc.relay.limits import RelayLimits
from p2prtc.relay.server import RelayService
from p2prtc.transports.webrtc.muxer import MAX_INBOUND_STREAMS
from p2prtc.transports.webrtc.stream_core import RECEIVE_BUFFER_LIMIT

from ..e2e.test_webrtc_python import listening_peer, webrtc_host
from ..netns import lab_ip

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("engine")]
MB = 1 << 20
SINK = "/test/sink/1.0.0"  # our handler never reads
READ = "/test/read/1.0.0"  # our handler reads everything
# Our listener's RSS may grow by this much while js abuses it (peak over its RSS before; the
# test process also holds the relay and the chatting peer). Measured: see the printed line.
RSS_GROWTH_BOUND = 96 * MB
SAMPLE_EVERY = 0.02  # s; how often the listener's buffers and RSS are measured (not a wait)
# What a flood stream may hold unread besides the pushed one: its first message (js sends the
# multistream-select lines in one write) before the sink handler that never reads has it
FIRST_BYTES_SLACK = 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0/ws"], echo=False)
    RelayService(host, RelayLimits())
    return host


@pytest.fixture(params=["node", pytest.param("browser", marks=pytest.mark.browser)])
async def js_peer(request, node_peer_factory, browser_factory):
    if request.param == "node":
        return await node_peer_factory(webrtc=True, name="js-abuser")
    return await browser_factory(name="browser-abuser")


async def abuse(relay, host_factory, js, caplog, engine: str, *, streams: int,
                push_bytes: int) -> None:
    caplog.set_level(logging.INFO, "p2prtc.transports.webrtc")
    b, addr = await listening_peer(host_factory, relay)
    held: asyncio.Queue = asyncio.Queue()

    async def sink(stream) -> None:
        await held.put(stream)
        await stream.connection.wait_closed()  # never reads

    b.handle(SINK, sink)
    got: asyncio.Queue = asyncio.Queue()

    async def read_all(stream) -> None:
        n = 0
        while chunk := await stream.read():
            n += len(chunk)
        await got.put((stream.connection, n))

    b.handle(READ, read_all)
    inbox: asyncio.Queue = asyncio.Queue()
    ChatService(b, lambda p, t: inbox.put_nowait((p, t)))

    dialed = await js.dial(str(addr))
    assert "/webrtc" in dialed["remoteAddr"] and not dialed.get("limited"), dialed
    await js.ping(peer=str(b.peer_id))  # over the direct connection: ours is registered by now
    js_id = PeerId.from_string(js.peer_id)
    conn_b = next(c for c in b.connections(js_id) if c.transport == "webrtc")
    muxer_b = conn_b.muxer
    rss0 = rss()
    peak = {"rss": rss0, "buffered": 0, "stream": 0, "inbound": 0}
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss())
            peak["buffered"] = max(peak["buffered"], muxer_b.buffered)
            peak["stream"] = max([peak["stream"], *(st.buffered for st in muxer_b.streams)])
            peak["inbound"] = max(peak["inbound"], muxer_b.inbound_streams)
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
            except TimeoutError:
                pass

    sampler = asyncio.ensure_future(sample())
    t0 = time.perf_counter()
    # the push first (its stream must get through: a stream refused at the cap takes its data to
    # nowhere), then the flood while it pushes
    pushing = asyncio.ensure_future(js.push(str(b.peer_id), protocol=SINK, bytes=push_bytes))
    victim = await asyncio.wait_for(held.get(), 30)
    flood = await js.flood(str(b.peer_id), protocol=SINK, streams=streams)
    pushed = await pushing
    took = time.perf_counter() - t0
    stop.set()
    await sampler

    growth = peak["rss"] - rss0
    print(f"\n{js.name}: {streams} streams: {flood['opened']} held, {flood['failed']} failed "
          f"({flood['errors']}), {muxer_b.refused_channels} refused by the listener; js wrote "
          f"{pushed['sent'] / MB:.1f} MiB before {pushed['error']!r}; listener peak unread "
          f"{peak['buffered'] / MB:.2f} MiB, peak inbound {peak['inbound']}, RSS "
          f"+{growth / MB:.1f} MiB; {took:.1f} s")
    # the pushed stream was reset, with the reason on our side, and js's write failed (on wrtc
    # js may have written everything before our reset reaches it: WRTC_SENDER below; js's close()
    # then resolves when the channel closes, with no error; so may node-datachannel on aiortc,
    # whose own send buffer took the rest of the 24 MiB in one CI run under load)
    if engine == "aiortc" and js.name != "js-abuser":
        assert pushed["error"] is not None, f"js wrote {pushed['sent']} bytes unread, no error"
    assert victim.reset_reason is not None and "unread" in victim.reset_reason, victim.reset_reason
    assert any("unread" in r.getMessage() and SINK in r.getMessage() for r in caplog.records)
    # the flood: at most MAX_INBOUND_STREAMS held, the rest refused (or given up on by js
    # itself), in a few log lines
    assert flood["opened"] <= MAX_INBOUND_STREAMS and flood["failed"] >= streams - MAX_INBOUND_STREAMS
    assert peak["inbound"] <= MAX_INBOUND_STREAMS and muxer_b.refused_channels > 0
    refusals = [r for r in caplog.records if "closing data channel" in r.getMessage()]
    assert 0 < len(refusals) <= 16
    # each stream within its bound; the connection's total adds the flood streams' first bytes
    # (a CI run: 10 of them beside a full 4 MiB)
    assert peak["stream"] <= RECEIVE_BUFFER_LIMIT
    assert peak["buffered"] <= RECEIVE_BUFFER_LIMIT + MAX_INBOUND_STREAMS * FIRST_BYTES_SLACK
    assert growth < RSS_GROWTH_BOUND, f"RSS grew {growth / MB:.0f} MiB"

    # still chatting: another peer, our side of the abused connection, then js's next stream
    c = await webrtc_host(host_factory)
    chat_c = ChatService(c, lambda p, t: None)
    await c.dial(addr)
    await chat_c.send(b.peer_id, "still there?")
    assert await asyncio.wait_for(inbox.get(), 20) == (c.peer_id, "still there?")
    await b.ping_service.ping(conn_b)
    await js.release()
    r = await js.push(str(b.peer_id), protocol=READ, bytes=MB)  # on the direct connection
    assert r["error"] is None, r
    assert await asyncio.wait_for(got.get(), 20) == (conn_b, MB)
    assert not conn_b.is_closed
    assert any("/webrtc" in x["remoteAddr"] and not x.get("limited") and x["peer"] == str(b.peer_id)
               for x in await js.connections())


async def test_js_stream_flood_and_unread_push_leave_the_listener_bounded(
        relay, host_factory, js_peer, caplog, engine):
    await abuse(relay, host_factory, js_peer, caplog, engine, streams=600, push_bytes=24 * MB)


# WRTC_SENDER: on wrtc the listener's stream layer keeps its bounds (the stream is reset at 4 MiB,
# 256 held), but libwebrtc takes (and acknowledges) every message at once and hands it to wrtc's
# mailbox, so nothing pushes back on a sender faster than our event loop: js goes on writing at
# ~65 MB/s until its channel closes, and what arrives meanwhile is held below us: in the soak,
# RSS +296 MiB with Node, +372 MiB with Chromium (whose 5,000 channel opens also hold the pushed
# data back from our stream until the push is over). aiortc's SCTP runs on our loop (its window
# pushes back) and drops data on a reset stream: +33 MiB.
WRTC_SOAK = "wrtc holds a fast sender's data below the stream layer (see WRTC_SENDER)"


@pytest.mark.soak
async def test_js_soak_5000_streams_and_300_mb_unread(relay, host_factory, js_peer, caplog,
                                                      engine, request):
    if engine == "wrtc":
        request.applymarker(pytest.mark.xfail(reason=WRTC_SOAK, strict=False))
    await abuse(relay, host_factory, js_peer, caplog, engine, streams=5000, push_bytes=300 * MB)
