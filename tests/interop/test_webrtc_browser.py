"""Our /webrtc (private-to-private) against js-libp2p in headless Chromium, each side dialing in
turn, through our relay: the connection is direct WebRTC and 20 MB echo intact both ways."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from p2prtc.host import default_transports
from p2prtc.relay.limits import RelayLimits
from p2prtc.relay.server import RelayService
from p2prtc.transports.circuit import CircuitListener
from p2prtc.transports.webrtc.transport import WebRTCTransport

from ..netns import lab_ip
from .test_core_js import echo_via

# Python peers on each WebRTC engine (conftest `engine`)
pytestmark = [pytest.mark.interop, pytest.mark.browser, pytest.mark.usefixtures("engine")]
MB = 1 << 20


@pytest.fixture
async def relay(host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/tcp/0/ws"], echo=False)
    RelayService(host, RelayLimits())
    return host


def relay_addr(relay) -> str:
    return str(relay.listen_addrs[0].with_peer_id(relay.peer_id))


def ours_perf(host):
    from p2prtc.protocols.perf import PerfService

    return PerfService(host)


async def webrtc_peer(host_factory):
    host = await host_factory(listen=[], transports=[
        functools.partial(WebRTCTransport, ice_servers=[]), *default_transports()])
    return host


async def test_browser_dials_python_listener(relay, host_factory, browser_factory):
    ours = await webrtc_peer(host_factory)
    ours_perf(ours)
    await ours.listen(f"{relay_addr(relay)}/p2p-circuit", "/webrtc")
    await ours.listeners(CircuitListener)[0].reserved()
    target = next(a for a in ours.listen_addrs if a.has("webrtc")).with_peer_id(ours.peer_id)

    page = await browser_factory()
    dialed = await page.dial(str(target))
    assert dialed["peer"] == str(ours.peer_id)
    conns = [c for c in await page.connections() if c["peer"] == str(ours.peer_id)]
    direct = [c for c in conns if "/webrtc" in c["remoteAddr"] and not c.get("limited")]
    assert direct, f"browser has no direct WebRTC connection to us: {conns}"

    # 20 MB each way through /perf (js resets a stream whose unread buffer passes 4 MB, so a
    # 20 MB echo would measure js's echo loop, not the transport); integrity by a 2 MB echo.
    r = await page.perf(peer=str(ours.peer_id), upload_bytes=20 * MB, download_bytes=20 * MB)
    assert r["upload_bytes"] == r["download_bytes"] == 20 * MB  # js checks the count it got
    r = await page.echo(peer=str(ours.peer_id), bytes=2 * MB)
    assert r["bytes_received"] == 2 * MB and r["sha_received"] == r["sha_sent"]
    from p2prtc.identity import PeerId

    ours_conn = ours.best_connection(PeerId.from_string(page.peer_id))
    assert ours_conn.transport == "webrtc" and not ours_conn.limited


async def test_python_dials_browser_listener(relay, host_factory, browser_factory):
    page = await browser_factory()
    await page.dial(relay_addr(relay))
    target = await page.wait_for_addr("/p2p-circuit/webrtc")

    ours = await webrtc_peer(host_factory)
    conn = await ours.dial(target)
    assert conn.transport == "webrtc" and not conn.limited
    assert conn.details.candidate_pair.local in ("host", "srflx", "prflx")

    perf = await ours_perf(ours).run(conn, 20 * MB, 20 * MB)
    assert perf["downloaded"] == 20 * MB
    await echo_via(ours, conn, 2 * MB)
    rtts = await ours.ping_service.ping(conn, count=3)
    assert max(rtts) < 1.0
    conns = [c for c in await page.connections() if c["peer"] == str(ours.peer_id)]
    assert any("/webrtc" in c["remoteAddr"] and not c.get("limited") for c in conns), conns


# A browser that hangs up is noticed at once (SCTP/DTLS end), not after ICE gives up.
LEFT_WITHIN = 2.0  # s; ~10 ms seen here, the margin is for a loaded machine


async def test_browser_that_hangs_up_is_reported_as_left(relay, host_factory, browser_factory):
    from p2prtc.identity import PeerId

    ours = await webrtc_peer(host_factory)
    await ours.listen(f"{relay_addr(relay)}/p2p-circuit", "/webrtc")
    await ours.listeners(CircuitListener)[0].reserved()
    target = next(a for a in ours.listen_addrs if a.has("webrtc")).with_peer_id(ours.peer_id)
    page = await browser_factory()
    await page.dial(str(target))
    conn = next(c for c in ours.connections(PeerId.from_string(page.peer_id))
                if c.transport == "webrtc")
    t0 = time.perf_counter()
    await page.hangup(str(ours.peer_id))
    await asyncio.wait_for(conn.wait_closed(), 30)
    took = time.perf_counter() - t0
    assert conn.end_reason == "the peer left", conn.end_reason
    assert took < LEFT_WITHIN, f"took {took:.2f} s to notice"
