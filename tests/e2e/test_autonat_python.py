"""AutoNAT v2, our client against our server in one process (loopback): the happy path, a
server over its rate limit, and a peer sending garbage (only its stream ends)."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.connection import Connection
from p2prtc.events import ConnectionClosed, ConnectionOpened

from p2prtc.errors import P2PError
from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.autonat import AutoNATService, ServerConfig
from p2prtc.protocols.autonat_core import (DIAL_REQUEST, RateLimiter, Reachability,
                                           ServerPolicy)
from p2prtc.wire.varint import encode_uvarint


def tcp(host) -> Multiaddr:
    return next(a for a in host.listen_addrs if a.has("tcp"))


async def pair(host_factory, limiter: RateLimiter | None = None):
    server_host = await host_factory()
    server = AutoNATService(server_host, server=ServerConfig(
        policy=ServerPolicy(allow_private=True), limiter=limiter if limiter is not None else RateLimiter()))
    client_host = await host_factory()
    client = AutoNATService(client_host)
    conn = await client_host.dial(tcp(server_host).with_peer_id(server_host.peer_id))
    return server, client, client_host, conn


async def test_our_client_and_server(host_factory):
    server, client, client_host, conn = await pair(host_factory)
    opened: list[Connection] = []
    closed = asyncio.Event()
    client_host.events.on(ConnectionOpened, lambda e: opened.append(e.connection))
    client_host.events.on(ConnectionClosed, lambda e: e.connection in opened and closed.set())
    result = await client.check(conn, [tcp(client_host)])
    assert (result.status, result.dial_status) == ("ok", "ok")
    assert result.reachability is Reachability.PUBLIC and server.served == 1
    # the dial-back came on a new inbound connection, which the server closes again
    assert [c.direction for c in opened] == ["inbound"]
    await asyncio.wait_for(closed.wait(), 5)
    assert not conn.is_closed


async def test_rate_limited(host_factory):
    server, client, client_host, conn = await pair(host_factory, RateLimiter(per_peer_rpm=1))
    assert (await client.check(conn, [tcp(client_host)])).status == "ok"
    assert (await client.check(conn, [tcp(client_host)])).status == "rejected"
    assert server.served == 2


async def test_garbage_ends_only_that_stream(host_factory):
    server, client, client_host, conn = await pair(host_factory)
    stream = await client_host.new_stream(conn, [DIAL_REQUEST])
    await stream.write(encode_uvarint(50_000))  # over the 8 KiB message limit
    with pytest.raises((P2PError, OSError)):
        data = await stream.read()
        assert data == b"", data  # a reset reads as an error, or an empty read
        raise P2PError("stream ended")
    result = await client.check(conn, [tcp(client_host)])
    assert result.status == "ok" and not conn.is_closed
