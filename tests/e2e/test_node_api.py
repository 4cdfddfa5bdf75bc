"""The public API (`from p2prtc import Node`) end to end, in process, on real sockets in the
test namespace: two nodes meet through our relay and go direct; streams with half-close and
reset; the typed events; NoDirectPath and allow_relayed when UDP is blocked."""

from __future__ import annotations

import asyncio
import time

import pytest

import p2prtc
from p2prtc import (Connected, Disconnected, Listening, NegotiationFailed, NoDirectPath, Node,
                    Relayed, Reservation, StreamReset, api_events)
from p2prtc.relay.server import RelayService

from ..netns import lab_ip

ECHO = "/test/echo/1.0.0"


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0"], echo=False)
    RelayService(host)
    return str(host.listen_addrs[0].with_peer_id(host.peer_id))


async def echo(stream: p2prtc.Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def next_event(events, kind, timeout: float = 20.0, **match):
    async with asyncio.timeout(timeout):
        async for e in events:
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items()):
                return e
    raise AssertionError(f"events ended before {kind.__name__}")


def test_public_names():
    assert {"Node", "Connection", "Stream", "NoDirectPath", "DialError", "Connected"} <= set(
        p2prtc.__all__)
    assert issubclass(NoDirectPath, p2prtc.DialError)
    for name in p2prtc.__all__:
        assert getattr(p2prtc, name) is not None
    e = api_events.from_dict({"event": "connected", "t": 1.5, "peer": "p", "addr": "/a",
                              "transport": "webrtc", "direct": True, "path": "direct", "ms": 3.0,
                              "candidate_pair": None, "extra": 1})
    assert isinstance(e, Connected) and e.to_dict()["event"] == "connected" and e.t == 1.5


def test_identity_from_seed_and_key_file(tmp_path):
    assert Node(identity=7).peer_id == Node(identity=7).peer_id != Node(identity=8).peer_id
    key = tmp_path / "key"
    first = Node(identity=key).peer_id
    assert key.stat().st_mode & 0o777 == 0o600
    assert Node(identity=str(key)).peer_id == first.strip() and first.startswith("12D3KooW")
    with pytest.raises(TypeError):
        Node(identity=True)


async def test_listen_dial_streams_and_events(relay):
    async with Node(stun=[], turn="none") as a, Node(stun=[], turn="none") as b:
        b_events = b.events()
        a_events = a.events()
        b.handle(ECHO, echo)
        addrs = await b.listen(relay)
        assert addrs == b.addrs() and len(addrs) == 1
        assert addrs[0] == f"{relay}/p2p-circuit/webrtc/p2p/{b.peer_id}"
        res = await next_event(b_events, Reservation)
        assert res.relay == relay.rsplit("/", 1)[1] and res.expires > time.time()
        assert (await next_event(b_events, Listening)).addrs == addrs

        conn = await a.dial(addrs[0])
        assert conn.direct and conn.transport == "webrtc" and conn.path == "direct"
        assert conn.remote_peer == b.peer_id and not conn.limited
        assert conn.candidate_pair and conn.candidate_pair["local"] == "host"
        assert await a.dial(addrs[0]) is conn  # the existing connection
        # the relayed connection the upgrade ran over stays until the relay's limit ends it
        assert conn in a.connections() and {c.transport for c in a.connections()} <= {
            "webrtc", "relay"}
        await next_event(a_events, Relayed, peer=b.peer_id)
        connected = await next_event(a_events, Connected, peer=b.peer_id)
        assert connected.direct and connected.transport == "webrtc" and connected.ms > 0
        assert (await next_event(b_events, Connected, peer=a.peer_id)).direct

        stream = await conn.open_stream(ECHO)
        assert stream.protocol == ECHO and stream.remote_peer == b.peer_id
        await stream.write(b"hello ")
        await stream.write(b"world")
        await stream.close()  # half-close: the echo still comes back, then b"" (EOF)
        got = b""
        while data := await stream.read(65536):
            got += data
        assert got == b"hello world"
        assert await stream.read() == b""

        with pytest.raises(NegotiationFailed):
            await conn.open_stream("/nobody/speaks/this")
        assert await conn.open_stream(["/nobody/speaks/this", ECHO]) is not None

        # reset: the other side's read raises StreamReset
        seen: asyncio.Queue = asyncio.Queue()

        async def wait_reset(s: p2prtc.Stream) -> None:
            try:
                while await s.read():
                    pass
                seen.put_nowait("EOF")
            except StreamReset as e:
                seen.put_nowait(e)

        b.handle("/test/reset/1.0.0", wait_reset)
        s = await conn.open_stream("/test/reset/1.0.0")
        await s.write(b"x")
        s.reset()
        assert isinstance(await asyncio.wait_for(seen.get(), 10), StreamReset)

        await conn.close()
        gone = await next_event(b_events, Disconnected, peer=a.peer_id, transport="webrtc")
        assert gone.reason
        assert conn.closed and conn not in a.connections()
    # the iterators end with the nodes
    assert [e async for e in b_events if False] == []




async def test_no_direct_path_then_allow_relayed(relay, udp_blocked):
    async with Node(stun=[], turn="none") as a, Node(stun=[], turn="none") as b:
        b.handle(ECHO, echo, allow_relayed=True)
        addr = (await b.listen(relay))[0]
        t0 = time.perf_counter()
        with pytest.raises(NoDirectPath, match="no direct WebRTC connection"):
            await a.dial(addr)
        assert time.perf_counter() - t0 < 20
        assert a.connections() == []  # the relayed connection was closed

        events = a.events()
        conn = await a.dial(addr, allow_relayed=True)
        assert not conn.direct and conn.transport == "relay" and conn.path == "relay"
        assert conn.limited and conn.remote_peer == b.peer_id
        e = await next_event(events, Connected, peer=b.peer_id)
        assert e.transport == "relay" and not e.direct
        stream = await conn.open_stream(ECHO)
        await stream.write(b"over the relay")
        await stream.close()
        assert await stream.read_exactly(14) == b"over the relay"
        assert await stream.read() == b""


async def test_events_are_the_cli_json_events(relay):
    """A Node dials `p2prtc listen --json`: the CLI's events parse into the API's types with the
    same fields, and the Node's own events have the CLI's field names."""
    from .webpage import Cli

    cli = await Cli("listen", relay, "--json", name="listen").start()
    try:
        listening = await cli.wait_event("listening")
        reservation = next(e for e in cli.events if e["event"] == "reservation")
        async with Node(stun=[], turn="none") as a:
            events = a.events()
            conn = await a.dial(listening["addrs"][0])
            assert conn.direct
            mine = await next_event(events, Connected, peer=conn.remote_peer)
            theirs = await cli.wait_event("connected")
            for obj in (listening, reservation, theirs):
                parsed = api_events.from_dict(obj)
                assert parsed.to_dict().keys() == obj.keys(), obj
            assert mine.to_dict().keys() == theirs.keys()
            assert mine.transport == theirs["transport"] == "webrtc"
            await conn.close()
            gone = await cli.wait_event("disconnected")
            assert api_events.from_dict(gone).to_dict().keys() == gone.keys()
    finally:
        assert await cli.interrupt() == 0, cli.describe()
