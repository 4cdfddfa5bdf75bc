"""Budgets of `p2prtc relay` (p2prtc.resources) as a peer meets them: over a budget, the offending
connection or stream is refused with a reason (the relay's log line and its metrics say which
scope and resource), and every other peer goes on as before.

Run inside the test namespace: scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_budgets.py -q
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from p2prtc.connection import Connection
from p2prtc.errors import DialError, P2PError
from p2prtc.host import Host
from p2prtc.identity import Identity
from p2prtc.protocols.ping import PING

RELAY_IP = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((RELAY_IP, 0))
        return int(s.getsockname()[1])


class Relay:
    """`p2prtc relay -v` on loopback with the given flags; its stderr lines are kept."""

    def __init__(self, proc: asyncio.subprocess.Process, addr: str, metrics_port: int) -> None:
        self.proc = proc
        self.addr = addr
        self.metrics_port = metrics_port
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace"))
            self._new.set()

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                hit = next((l for l in self.lines if regex.search(l)), None)
                if hit is not None:
                    return hit
                self._new.clear()
                await self._new.wait()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{RELAY_IP}:{self.metrics_port}/metrics") as r:
                return await r.text()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def relay_with() -> AsyncIterator:
    relays: list[Relay] = []

    async def start(*flags: str) -> Relay:
        metrics_port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2prtc", "relay", "-v", "--listen-ip", RELAY_IP,
            "--port", "0", "--stun-port", "0", "--metrics-port", str(metrics_port), *flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.startswith(b"Listening on "), line
        relay = Relay(proc, line.decode().split(" ", 2)[2].strip(), metrics_port)
        relays.append(relay)
        return relay

    yield start
    for r in relays:
        await r.stop()


async def ping_ok(conn: Connection) -> None:
    stream = await conn.new_stream([PING])
    await stream.write(b"x" * 32)
    assert len(await stream.read(32)) == 32
    await stream.close()


async def test_per_peer_connection_budget_refuses_that_peer_only(relay_with) -> None:
    relay = await relay_with("--max-connections-per-peer", "1")
    me = Identity.generate()
    first, second, other = Host(me), Host(me), Host()
    try:
        conn = await first.dial(relay.addr)
        with pytest.raises(DialError):
            await second.dial(relay.addr)  # the same peer id, a second connection
        line = await relay.wait_log(r"peer: cannot reserve connections")
        assert "resource limit exceeded (1 in use, limit 1)" in line, line
        # the peer's first connection and any other peer are unaffected
        await ping_ok(conn)
        await ping_ok(await other.dial(relay.addr))
        assert re.search(r'p2prtc_relay_resource_refusals_total\{scope="peer",'
                         r'resource="connections[a-z ]*"\} 1\b', await relay.metrics())
    finally:
        for h in (first, second, other):
            await h.close()


async def test_handshakes_per_ip_budget_refuses_that_address_only(relay_with) -> None:
    relay = await relay_with("--max-pending-connections-per-ip", "3", "--limit-loopback")
    host, port = relay.addr.split("/")[2], int(relay.addr.split("/")[4])
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []

    async def half_open(src: str) -> socket.socket:
        s = socket.socket()
        s.setblocking(False)
        s.bind((src, 0))
        await loop.sock_connect(s, (host, port))
        return s

    honest = Host()
    try:
        for _ in range(3):  # connect, never send: each holds a handshake slot of 127.0.0.2
            held.append(await half_open("127.0.0.2"))
        async with asyncio.timeout(10):  # refused: reset by the relay at once, nothing read
            try:
                extra = await half_open("127.0.0.2")
                held.append(extra)
                assert await loop.sock_recv(extra, 1) == b""
            except ConnectionResetError:
                pass
        line = await relay.wait_log(r"ip: cannot reserve connections handshaking from 127\.0\.0\.2")
        assert "limit 3" in line, line
        # another address is unaffected, and so are the first three (still open)
        await ping_ok(await honest.dial(relay.addr))
        assert re.search(r'p2prtc_relay_resource_refusals_total\{scope="ip",'
                         r'resource="connections handshaking"\} 1\b', await relay.metrics())
    finally:
        for s in held:
            s.close()
        await honest.close()


async def test_per_peer_stream_budget_refuses_that_peers_new_streams_only(relay_with) -> None:
    relay = await relay_with("--max-streams-per-peer", "16")
    greedy, other = Host(), Host()
    try:
        conn = await greedy.dial(relay.addr)
        kept = []
        refused: P2PError | None = None
        for _ in range(40):  # ping streams held open: the 17th (or sooner: identify) is refused
            try:
                kept.append(await conn.new_stream([PING]))
            except P2PError as e:
                refused = e
                break
        assert refused is not None and 0 < len(kept) <= 16, (refused, len(kept))
        line = await relay.wait_log(r"peer: cannot reserve streams")
        assert "limit 16" in line, line
        assert not conn.is_closed  # only the stream was refused
        await ping_ok(await other.dial(relay.addr))  # another peer is unaffected
        for s in kept:
            s.reset()
        # once its streams are gone the peer may open more (yamux keeps frames in order: the
        # relay has read the resets before the new stream's SYN)
        await ping_ok(conn)
        assert re.search(r'p2prtc_relay_resource_refusals_total\{scope="peer",'
                         r'resource="streams[a-z ]*"\} [1-9]', await relay.metrics())
    finally:
        await greedy.close()
        await other.close()


async def test_per_peer_memory_budget_resets_the_stream_that_overflows_it(relay_with) -> None:
    # Ping streams whose echoes we never read: once our window is full the relay's ping handler
    # stops reading, and what we push piles up in the relay's buffers, up to its 256 KiB
    # window per stream; two such streams pass a 300 KiB budget.
    relay = await relay_with("--max-memory-per-peer", "300K")
    greedy, other = Host(), Host()
    pushers: list[asyncio.Task[None]] = []
    try:
        conn = await greedy.dial(relay.addr)
        streams = [await conn.new_stream([PING]) for _ in range(2)]

        async def push(stream) -> None:
            chunk = b"\0" * 32 * 1024
            for _ in range(40):  # 1.25 MiB: more than both windows hold
                await stream.write(chunk)

        pushers = [asyncio.ensure_future(push(s)) for s in streams]
        line = await relay.wait_log(r"stream \d+ reset: peer: cannot reserve memory", 30)
        assert "limit 307200" in line, line
        done, _ = await asyncio.wait(pushers, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done and isinstance(next(iter(done)).exception(), P2PError)  # the reset stream
        assert not conn.is_closed
        await ping_ok(await other.dial(relay.addr))  # another peer is unaffected
        assert re.search(r'p2prtc_relay_resource_refusals_total\{scope="peer",'
                         r'resource="memory"\} [1-9]', await relay.metrics())
    finally:
        for t in pushers:
            t.cancel()
        await greedy.close()
        await other.close()
