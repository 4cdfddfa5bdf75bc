"""The WebSocket listener's HTTP phase is bounded (transports/ws_admission.py): a client that
never finishes its upgrade request (slowloris) is closed after WS_UPGRADE_TIMEOUT, and a TCP
connection over the per-IP handshake budget is closed before anything is read; a normal peer
on the same listener connects meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.host import Host
from p2prtc.protocols.ping import PING
from p2prtc.resources import ResourceLimits, ResourceManager
from p2prtc.transports import ws_admission


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def test_slowloris_is_closed_and_the_budget_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_admission, "WS_UPGRADE_TIMEOUT", 0.5)
    server, client = Host(), Host()
    server.upgrader.resources = ResourceManager(
        ResourceLimits(pending_per_ip=2, exempt_loopback=False))
    try:
        addr = (await server.listen("/ip4/127.0.0.1/tcp/0/ws"))[0]
        port = int(addr.value_for("tcp") or 0)
        src = ("127.0.0.2", 0)
        slow = [await asyncio.open_connection("127.0.0.1", port, local_addr=src)
                for _ in range(2)]
        for _, w in slow:
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
        over_r, _ = await asyncio.open_connection("127.0.0.1", port, local_addr=src)
        assert await _closed_within(over_r, 5)  # third from that address: refused at once
        # another address gets through while the two hold their slots
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        stream = await conn.new_stream([PING])
        await stream.write(b"p" * 32)
        assert len(await stream.read(32)) == 32
        for r, _ in slow:  # the deadline closes the slow ones
            assert await _closed_within(r, 5)
        rm = server.upgrader.resources
        assert rm.refusals[("ip", "connections handshaking")] == 1
        assert next(u for s, k, u, _ in rm.usage() if s == "transient" and k == "conns") == 0
        for _, w in slow:
            w.close()
    finally:
        await client.close()
        await server.close()
