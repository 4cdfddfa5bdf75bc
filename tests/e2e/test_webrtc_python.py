"""Python <-> Python over /webrtc through our relay, end to end on real sockets (in the test
namespace): direct connection, chat after the relay stops, 20 MB files both ways, a reader that
pauses, a peer that vanishes, and a dial with no direct path."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import subprocess
import sys
import time

import pytest

from p2prtc.errors import DialError
from p2prtc.host import default_transports
from p2prtc.protocols.chat import ChatService
from p2prtc.protocols.filetransfer import FileService
from p2prtc.relay.server import RelayService
from p2prtc.transports.circuit import CircuitListener
from p2prtc.transports.webrtc.stream_core import RECEIVE_BUFFER_LIMIT
from p2prtc.transports.webrtc.transport import WebRTCTransport

from ..conftest import ENGINES
from ..netns import lab_ip

MB = 1 << 20

# Each test runs on both WebRTC engines (conftest `engine`: aiortc, wrtc).
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0"], echo=False)
    RelayService(host)
    return host


async def webrtc_host(host_factory, engine: str | None = None):
    host = await host_factory(listen=[], transports=[
        functools.partial(WebRTCTransport, ice_servers=[], engine=engine), *default_transports()])
    return host


async def listening_peer(host_factory, relay, engine: str | None = None):
    b = await webrtc_host(host_factory, engine)
    await b.listen(relay.listen_addrs[0].with_peer_id(relay.peer_id).encapsulate("/p2p-circuit"),
                   "/webrtc")
    await b.listeners(CircuitListener)[0].reserved()
    addr = next(a for a in b.listen_addrs if a.has("webrtc")).with_peer_id(b.peer_id)
    return b, addr


async def test_direct_chat_survives_relay_stop_and_files_both_ways(relay, host_factory, tmp_path):
    a = await webrtc_host(host_factory)
    b, addr = await listening_peer(host_factory, relay)
    inbox: dict[str, asyncio.Queue] = {"a": asyncio.Queue(), "b": asyncio.Queue()}
    chat_a = ChatService(a, lambda p, t: inbox["a"].put_nowait(t))
    chat_b = ChatService(b, lambda p, t: inbox["b"].put_nowait(t))
    received: dict[str, asyncio.Queue] = {"a": asyncio.Queue(), "b": asyncio.Queue()}
    files_a = FileService(a, tmp_path / "a", on_received=received["a"].put_nowait)
    files_b = FileService(b, tmp_path / "b", on_received=received["b"].put_nowait)

    t0 = time.perf_counter()
    conn = await a.dial(addr)
    assert conn.transport == "webrtc" and not conn.limited
    assert time.perf_counter() - t0 < 5
    assert conn.details.candidate_pair.local == "host"

    await relay.close()  # the relay goes away; the direct connection must not care
    await chat_a.send(b.peer_id, "hello B from A")
    assert await asyncio.wait_for(inbox["b"].get(), 10) == "hello B from A"
    await chat_b.send(a.peer_id, "hello A from B")
    assert await asyncio.wait_for(inbox["a"].get(), 10) == "hello A from B"

    for _sender, files, dest, who in ((a, files_a, b.peer_id, "b"), (b, files_b, a.peer_id, "a")):
        src = tmp_path / f"from-{who}.bin"
        src.write_bytes(os.urandom(20 * 1000 * 1000))
        sent = await files.send(dest, src)
        got = await asyncio.wait_for(received[who].get(), 60)
        assert got.sha256 == sent.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
        assert got.path.read_bytes() == src.read_bytes()
    assert all(c.transport == "webrtc" for c in a.connections(b.peer_id) if not c.is_closed)


async def read_all(stream) -> bytes:
    parts = []
    while chunk := await stream.read(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


async def test_paused_reader_loses_nothing(relay, host_factory):
    """Both directions at once: each side writes 4 MiB (waiting on the channel's bufferedAmount,
    BUFFERED_HIGH/LOW) while the other reads nothing; then both read everything. 4 MiB is all a
    stream holds unread (RECEIVE_BUFFER_LIMIT, js's; data channels have no flow control): one
    byte more resets it (tests/e2e/test_webrtc_stream_limits.py)."""
    a = await webrtc_host(host_factory)
    b, addr = await listening_peer(host_factory, relay)
    inbound: asyncio.Queue = asyncio.Queue()
    to_a, to_b = os.urandom(RECEIVE_BUFFER_LIMIT), os.urandom(RECEIVE_BUFFER_LIMIT)

    async def hold(stream):
        await stream.write(to_a)  # A reads nothing while this runs
        await stream.close_write()
        await inbound.put(stream)
        await stream.connection.wait_closed()

    b.handle("/test/hold/1.0.0", hold)
    conn = await a.dial(addr)
    stream = await a.new_stream(conn, ["/test/hold/1.0.0"])
    await stream.write(to_b)  # nobody reads on the other side while this runs
    await stream.close_write()
    far = await asyncio.wait_for(inbound.get(), 30)
    got_b, got_a = await read_all(far), await read_all(stream)
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(to_b).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(to_a).digest()


async def test_vanished_peer_ends_connection_with_reason(relay, host_factory, tmp_path):
    """B runs in another process and is killed: A notices within the ICE consent timeout."""
    b_proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc.testpeer", "--webrtc", "--listen", "/webrtc",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        import json

        ready = json.loads(await b_proc.stdout.readline())
        raddr = str(relay.listen_addrs[0].with_peer_id(relay.peer_id))
        b_proc.stdin.write((json.dumps({"id": 1, "cmd": "listen_relay", "addr": raddr}) + "\n").encode())
        while True:
            line = json.loads(await asyncio.wait_for(b_proc.stdout.readline(), 20))
            if line.get("id") == 1:
                assert line["ok"], line
                break
        a = await webrtc_host(host_factory)
        conn = await a.dial(f"{raddr}/p2p-circuit/webrtc/p2p/{ready['peerId']}")
        assert conn.transport == "webrtc"
        await a.ping_service.ping(conn)
        b_proc.kill()
        t0 = time.perf_counter()
        await asyncio.wait_for(conn.wait_closed(), 30)
        took = time.perf_counter() - t0
        assert took < 20, f"took {took:.1f} s to notice"
        # killed, it said nothing: not "the peer left" (that is a close, below)
        assert conn.close_reason == "ICE connection failed (peer unreachable)", conn.close_reason
    finally:
        if b_proc.returncode is None:
            b_proc.kill()
        await b_proc.wait()


# A peer that closes is noticed at once (SCTP/DTLS end), not after ICE gives up (~11 s on wrtc).
LEFT_WITHIN = 2.0  # s; ~10 ms seen here, the margin is for a loaded machine


@pytest.mark.parametrize("other", ENGINES)
@pytest.mark.parametrize("leaver", ["dialer", "listener"])
async def test_peer_that_closes_is_reported_as_left(relay, host_factory, engine, other, leaver):
    """The peer on this test's engine stays; the other one (on `other`) closes its host
    gracefully: the one that stays says "the peer left" within LEFT_WITHIN."""
    a = await webrtc_host(host_factory, engine=other if leaver == "dialer" else engine)
    b, addr = await listening_peer(host_factory, relay,
                                   engine=other if leaver == "listener" else engine)
    conn_a = await a.dial(addr)
    await a.ping_service.ping(conn_a)
    conn_b = next(c for c in b.connections(a.peer_id) if c.transport == "webrtc")
    gone, stays = (a, conn_b) if leaver == "dialer" else (b, conn_a)
    t0 = time.perf_counter()
    await gone.close()
    await asyncio.wait_for(stays.wait_closed(), 30)
    took = time.perf_counter() - t0
    assert stays.end_reason == "the peer left", stays.end_reason
    assert took < LEFT_WITHIN, f"took {took:.2f} s to notice"


async def test_no_direct_path_fails_fast_and_relay_keeps_working(relay, host_factory, udp_blocked):
    a = await webrtc_host(host_factory)
    b, addr = await listening_peer(host_factory, relay)
    b.handle("/test/ok/1.0.0", lambda s: s.close(), allow_limited=True)
    t0 = time.perf_counter()
    with pytest.raises(DialError) as err:
        await a.dial(addr)
    took = time.perf_counter() - t0
    assert took < 15, f"the dial took {took:.1f} s to fail"
    assert "no direct WebRTC connection" in str(err.value)
    # the process goes on: the relayed connection is still there and usable
    relayed = a.best_connection(b.peer_id, allow_limited=True)
    assert relayed is not None and relayed.limited
    rtt = await a.ping_service.ping(relayed)
    assert rtt[0] < 1
