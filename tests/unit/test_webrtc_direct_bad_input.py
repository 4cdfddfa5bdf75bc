"""Bad input against the webrtc-direct listener, over real UDP on loopback: STUN floods, unknown
ufrags and addresses, failed DTLS, failed Noise, peers that go silent. Each costs a bounded
amount of memory (tables stay under their caps, failed clients leave nothing behind) and time
(handshakes end within their deadline), is logged (rate-limited), and a well-behaved client
connects and pings meanwhile. The attacker sends from 127.0.0.2, the good clients from
127.0.0.1, as two hosts would.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import tracemalloc
import weakref

import pytest
from OpenSSL import SSL

from p2prtc.errors import DialError
from p2prtc.host import Host
from p2prtc.transports.webrtc_direct import dialer as dialer_mod
from p2prtc.transports.webrtc_direct import ice as ice_mod
from p2prtc.transports.webrtc_direct import listener as listener_mod
from p2prtc.transports.webrtc_direct import stun
from p2prtc.transports.webrtc_direct.ice import random_ufrag
from p2prtc.transports.webrtc_direct.listener import WebRTCDirectListener

ATTACKER_IP = "127.0.0.2"
LOGGER = "p2prtc.transports.webrtc_direct"


@pytest.fixture
async def server(host_factory):
    host = await host_factory(listen=["/ip4/127.0.0.1/udp/0/webrtc-direct"])
    (listener,) = host.listeners(WebRTCDirectListener)
    host.wd = listener  # type: ignore[attr-defined]
    return host


def target(host) -> str:
    return str(host.wd.addrs[0].with_peer_id(host.peer_id))


# The flood, the server and this client share one event loop (and, under CI, two cores with
# everything else): a starved client would take the whole flood (~20 s) to get an answer, a
# served one takes milliseconds quiet and ~2 s with the machine at load 8-10.
PING_BOUND = 5.0


async def good_client_pings(host, host_factory) -> None:
    client = await host_factory(listen=[])
    conn = await client.dial(target(host))
    rtts = await client.ping_service.ping(conn, count=2)
    assert max(rtts) < PING_BOUND
    await client.close()


class RawClient(asyncio.DatagramProtocol):
    """A UDP socket that speaks exactly what a test tells it to."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.received.put_nowait(data)

    @classmethod
    async def open(cls, server, ip: str = ATTACKER_IP) -> RawClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            cls, local_addr=(ip, 0), remote_addr=("127.0.0.1", server.wd.port))
        return proto

    def send(self, data: bytes) -> None:
        self.transport.sendto(data)

    async def ice(self, ufrag: str | None = None) -> str:
        ufrag = ufrag or random_ufrag()
        checker = ice_mod.IceChecker(ufrag, ("127.0.0.1", 0))
        self.send(checker.request(0.0))
        reply = await asyncio.wait_for(self.received.get(), 5)
        checker.handle_stun(reply, 0.0)
        assert checker.succeeded
        return ufrag

    def close(self) -> None:
        self.transport.close()


def client_hello() -> bytes:
    conn = SSL.Connection(SSL.Context(SSL.DTLS_METHOD))
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(2048)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def settled(host) -> bool:
    return not host.wd.handshakes and not host.wd.connections and len(host.wd.agent) == 0


async def test_stun_flood_is_bounded_and_others_get_in(server, host_factory, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    # one good connection before, one during the flood
    early = await host_factory(listen=[])
    early_conn = await early.dial(target(server))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    attacker = await RawClient.open(server)
    sent = 0

    async def flood():
        nonlocal sent
        # (random junk never starts like a DTLS ClientHello here: that case has its own tests)
        junk = [lambda: b"\x80" + os.urandom(59),
                lambda: stun.binding_request(stun.new_transaction_id(), "a:b", b"a", priority=1,
                                             controlling=True, tie_breaker=1, use_candidate=True),
                lambda: stun.binding_request(stun.new_transaction_id(), f"{random_ufrag()}:x",
                                             b"wrong key", priority=1, controlling=True,
                                             tie_breaker=1, use_candidate=True)]
        for i in range(12000):
            if i % 4 == 3:
                attacker.send(junk[i % 3]())
            else:  # perfectly valid checks, each for a new ufrag
                u = random_ufrag()
                attacker.send(stun.binding_request(stun.new_transaction_id(), f"{u}:{u}", u.encode(),
                                                   priority=1, controlling=True, tie_breaker=1,
                                                   use_candidate=True))
            sent += 1
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # let the server read (same event loop)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(flood(), good_client_pings(server, host_factory))
    await asyncio.sleep(0.2)
    elapsed = loop.time() - t0
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))

    agent = server.wd.agent
    assert agent.per_ip.get(ATTACKER_IP, 0) <= ice_mod.MAX_SESSIONS_PER_IP
    assert len(agent) <= ice_mod.MAX_SESSIONS
    assert not server.wd.handshakes  # STUN alone never builds a DTLS stack
    assert agent.stats.checks > 2000 and sum(agent.stats.dropped.values()) > 2000
    assert grown < 8 * 1024 * 1024, f"memory grew by {grown} bytes"
    assert elapsed < 30
    # the connection made before the flood still works
    assert max(await early.ping_service.ping(early_conn, count=2)) < PING_BOUND
    # logged, but rate-limited: a few lines, not thousands
    lines = [r for r in caplog.records if "dropped STUN" in r.getMessage()]
    assert 1 <= len(lines) < 20
    attacker.close()


async def test_unknown_addresses_and_ufrags_are_dropped(server, host_factory, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    attacker = await RawClient.open(server)
    # ufrags that are not libp2p webrtc-direct ones, correctly signed
    for name in ("plain", "libp2p+webrtc+v2/abcdefghijkl", "x" * 300):
        attacker.send(stun.binding_request(stun.new_transaction_id(), f"{name}:{name}",
                                           name.encode(), priority=1, controlling=True,
                                           tie_breaker=1, use_candidate=True))
    for i in range(200):
        attacker.send(client_hello())  # DTLS from an address that never passed ICE
        attacker.send(os.urandom(100))
        if i % 10 == 0:
            await asyncio.sleep(0.001)
    await good_client_pings(server, host_factory)
    await wait_until(lambda: server.wd.stats.get("unknown_address", 0) >= 200)
    assert len(server.wd.agent) == 0 or server.wd.agent.per_ip.get(ATTACKER_IP) is None
    assert not server.wd.handshakes
    assert any("sent no valid ICE check" in r.getMessage() for r in caplog.records)
    assert any("ufrag" in r.getMessage() for r in caplog.records)
    assert attacker.received.empty()  # no STUN answer to ufrags we do not serve
    attacker.close()


async def test_failed_dtls_is_freed_at_once(server, host_factory, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    refs = []
    server.wd.on_new_client = lambda client: refs.append(weakref.ref(client.pc))
    attacker = await RawClient.open(server)
    await attacker.ice()
    hello = bytearray(client_hello())
    hello[20:] = os.urandom(len(hello) - 20)  # a ClientHello header with garbage inside
    attacker.send(bytes(hello))
    await wait_until(lambda: server.wd.stats.get("failed_dtls", 0) == 1)
    await wait_until(lambda: settled(server))
    assert len(refs) == 1
    await asyncio.sleep(0.1)
    gc.collect()
    assert refs[0]() is None, "a failed client's DTLS/SCTP stack was kept"
    assert any("failed the DTLS handshake" in r.getMessage() for r in caplog.records)
    await good_client_pings(server, host_factory)
    attacker.close()


async def test_silent_dtls_client_times_out(server, host_factory, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(listener_mod, "UPGRADE_TIMEOUT", 1.0)
    attacker = await RawClient.open(server)
    await attacker.ice()
    attacker.send(client_hello())  # then never answers the server's flight
    await wait_until(lambda: server.wd.handshakes)
    await good_client_pings(server, host_factory)  # meanwhile
    await wait_until(lambda: server.wd.stats.get("failed_dtls", 0) == 1, timeout=5)
    await wait_until(lambda: settled(server))
    assert any("timed out" in r.getMessage() for r in caplog.records)
    attacker.close()


async def test_clienthello_flood_is_capped_per_ip(server, host_factory, monkeypatch):
    monkeypatch.setattr(listener_mod, "MAX_HANDSHAKES_PER_IP", 4)
    monkeypatch.setattr(listener_mod, "UPGRADE_TIMEOUT", 2.0)
    attackers = [await RawClient.open(server) for _ in range(10)]
    for a in attackers:
        await a.ice()
        a.send(client_hello())
    await wait_until(lambda: server.wd.stats.get("handshakes_per_ip_full", 0) >= 6)
    assert len(server.wd.handshakes) == 4
    await good_client_pings(server, host_factory)  # another IP is not limited by them
    await wait_until(lambda: not server.wd.handshakes, timeout=6)
    for a in attackers:
        a.close()


async def test_failed_noise_is_logged_and_freed(server, host_factory, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    real = dialer_mod.authenticate

    async def wrong_prologue(pc, identity, **kw):
        kw["local_digest"] = bytes(32)  # not our certificate: the prologues differ
        return await real(pc, identity, **kw)

    monkeypatch.setattr(dialer_mod, "authenticate", wrong_prologue)
    client = await host_factory(listen=[])
    with pytest.raises(DialError, match="Noise"):
        await client.dial(target(server))
    await wait_until(lambda: server.wd.stats.get("failed_noise", 0) == 1)
    await wait_until(lambda: settled(server))
    assert any("failed the Noise handshake" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(dialer_mod, "authenticate", real)
    await good_client_pings(server, host_factory)


async def test_client_silent_after_dtls_times_out_in_noise(server, host_factory, monkeypatch):
    monkeypatch.setattr(listener_mod, "UPGRADE_TIMEOUT", 1.5)
    monkeypatch.setattr(dialer_mod, "DIAL_TIMEOUT", 3.0)

    async def never(pc, identity, **kw):
        await asyncio.Event().wait()

    monkeypatch.setattr(dialer_mod, "authenticate", never)
    client = await host_factory(listen=[])
    with pytest.raises(DialError):
        await client.dial(target(server))
    assert server.wd.stats.get("failed_noise", 0) == 1
    await wait_until(lambda: settled(server))


async def test_vanished_peer_is_closed_after_idle_timeout(server, host_factory, monkeypatch):
    monkeypatch.setattr(listener_mod, "IDLE_TIMEOUT", 1.0)
    client = await host_factory(listen=[])
    conn = await client.dial(target(server))
    await wait_until(lambda: server.wd.connections)
    # the peer disappears without a word: its socket closes, no SCTP ABORT, no DTLS alert
    conn.muxer.pc.go_silent()  # no more consent checks either
    await wait_until(lambda: settled(server), timeout=8)
    assert server.wd.stats.get("idle_closed", 0) == 1
    await good_client_pings(server, host_factory)


async def test_listener_close_frees_everything(host_factory):
    server = await host_factory(listen=["/ip4/127.0.0.1/udp/0/webrtc-direct"])
    (listener,) = server.listeners(WebRTCDirectListener)
    client = await host_factory(listen=[])
    conn = await client.dial(str(listener.addrs[0].with_peer_id(server.peer_id)))
    await listener.close()
    assert not listener.connections and not listener.handshakes
    await asyncio.wait_for(conn.wait_closed(), 10)  # the client hears about it (SCTP ABORT)


def test_port_in_use_is_an_oserror():
    async def main():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        try:
            h = Host()
            with pytest.raises(OSError):
                await h.listen(f"/ip4/127.0.0.1/udp/{s.getsockname()[1]}/webrtc-direct")
            await h.close()
        finally:
            s.close()

    asyncio.run(main())
