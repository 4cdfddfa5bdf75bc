"""Trickle ICE: our offer and answer leave at once whatever the STUN servers do, server-reflexive
candidates follow as ICE_CANDIDATE messages, and a STUN server that never answers is reported once.

Python <-> Python through our relay (in process), and a js-libp2p peer in Node dialing and being
dialed by a Python peer whose STUN server is a black hole (the seed's relays serve no STUN).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from p2prtc.protocols.stun import start_stun_server
from p2prtc.relay.server import RelayService
from p2prtc.transports.webrtc import engine
from p2prtc.transports.webrtc.transport import WebRTCTransport

from ..netns import lab_ip

# What the issue asks: the SDP leaves within 100 ms; dial to direct < 1 s without a STUN answer.
SDP_DEADLINE_MS = 100
DIRECT_DEADLINE_S = 1.0


@pytest.fixture
def black_hole():
    """A UDP port on the namespace's address that swallows STUN requests (`stun:` URL)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((lab_ip(), 0))
    yield f"stun:{lab_ip()}:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0"], echo=False)
    RelayService(host)
    return host


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(engine, "_unanswered_reported", set())


async def webrtc_host(host_factory, ice_servers):
    host = await host_factory(listen=[])
    host.add_transport(WebRTCTransport(host, ice_servers=ice_servers), first=True)
    warnings: list[str] = []
    host.events.on("warning", warnings.append)
    return host, warnings


async def listening_peer(host_factory, relay, ice_servers):
    b, warnings = await webrtc_host(host_factory, ice_servers)
    await b.listen("/webrtc")
    await b.listen_via_relay(relay.listen_addrs[0].with_peer_id(relay.peer_id), 20)
    addr = next(a for a in b.listen_addrs if a.has("webrtc")).with_peer_id(b.peer_id)
    return b, addr, warnings


async def test_sdp_leaves_at_once_when_stun_never_answers(relay, host_factory, black_hole, caplog):
    caplog.set_level(logging.WARNING, logger="p2prtc.transports.webrtc.engine")
    a, warn_a = await webrtc_host(host_factory, [black_hole])
    b, addr, warn_b = await listening_peer(host_factory, relay, [black_hole])
    upgraded = asyncio.ensure_future(b.events.wait_for(
        "connection", lambda c: c.transport == "webrtc", timeout=10))

    t0 = time.perf_counter()
    conn = await a.dial(addr)
    took = time.perf_counter() - t0
    (inbound,) = await upgraded
    assert conn.transport == "webrtc" and not conn.limited
    assert conn.details["offer_ms"] < SDP_DEADLINE_MS, conn.details
    assert inbound.details["answer_after_offer_ms"] < SDP_DEADLINE_MS, inbound.details
    assert took < DIRECT_DEADLINE_S, f"dial to direct took {took:.2f} s: {conn.details}"

    # Both sides tell the user, once, which STUN server failed them (the process-wide warning is
    # given by whichever side's gathering ends first; the other logs it at debug level).
    await a.events.wait_for("warning", timeout=engine.STUN_TIMEOUT + 5) if not warn_a + warn_b \
        else None
    texts = warn_a + warn_b
    assert len(texts) == 1 and black_hole in texts[0], texts
    logged = [r.getMessage() for r in caplog.records if black_hole in r.getMessage()]
    assert len(logged) == 1, logged

    # A second dial does not repeat the warning.
    await conn.close()
    await inbound.close()
    again = await a.dial(addr)
    assert again.transport == "webrtc"
    await asyncio.sleep(0)  # let the connection's own tasks start (not synchronisation)
    assert len(warn_a + warn_b) == 1


async def test_server_reflexive_candidates_trickle_after_the_offer():
    """The offer carries host candidates only; the srflx candidate from a STUN server that
    answers comes out of local_candidates() afterwards, as RTCIceCandidate.toJSON(), then None."""
    server = await start_stun_server(lab_ip(), 0)
    port = min(server.addresses.values())[1]  # the primary socket (the only one here)
    pc = engine.PeerConnection([f"stun:{lab_ip()}:{port}"])
    try:
        pc.create_channel("init")
        t0 = time.perf_counter()
        sdp = await pc.create_offer()
        assert (time.perf_counter() - t0) * 1000 < SDP_DEADLINE_MS
        assert "typ host" in sdp and "typ srflx" not in sdp
        # more candidates follow: a peer that saw end-of-candidates would ignore them
        assert "a=end-of-candidates" not in sdp
        trickled = [c async for c in pc.local_candidates()]
        assert trickled[-1] is None
        srflx = [c for c in trickled[:-1] if " typ srflx " in c["candidate"]]
        assert srflx, trickled
        assert all(c["candidate"].startswith("candidate:") and c["sdpMid"] == "0"
                   and c["sdpMLineIndex"] == 0 for c in trickled[:-1])
        assert f" {lab_ip()} " in srflx[0]["candidate"]  # what our STUN server saw
        assert "srflx" in pc.local_candidate_types()
    finally:
        await pc.close()
        server.close()


@pytest.mark.interop
async def test_node_js_peer_both_ways_without_stun_answers(relay, host_factory, node_peer_factory,
                                                            black_hole):
    """js-libp2p (Node, node-datachannel) takes our trickled candidates and our SDP-at-once."""
    relay_addr = str(relay.listen_addrs[0].with_peer_id(relay.peer_id))
    node = await node_peer_factory(listen=["/p2p-circuit"], webrtc=True, name="js-webrtc")
    await node.dial(relay_addr)
    node_addr = await node.wait_for_addr("/p2p-circuit/webrtc")
    a, _ = await webrtc_host(host_factory, [black_hole])
    t0 = time.perf_counter()
    conn = await a.dial(node_addr)
    took = time.perf_counter() - t0
    assert conn.transport == "webrtc" and not conn.limited
    assert took < DIRECT_DEADLINE_S, f"Python -> Node took {took:.2f} s"

    b, addr, _ = await listening_peer(host_factory, relay, [black_hole])
    t0 = time.perf_counter()
    dialed = await node.dial(str(addr))
    took = time.perf_counter() - t0
    assert "/webrtc" in dialed["remoteAddr"] and not dialed.get("limited"), dialed
    assert took < DIRECT_DEADLINE_S + 0.5, f"Node -> Python took {took:.2f} s"
