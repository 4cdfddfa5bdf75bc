"""/webrtc through each relay implementation (ours as the CLI, js-libp2p's in Node, rust-libp2p's):
Python<->Python, Python<->Chromium and Python<->Node (node-datachannel), each side dialing, with
the Python peers on each WebRTC engine (conftest `engine`), and aiortc<->wrtc through our relay.
The connection must be direct WebRTC, and survive the relay being stopped."""

from __future__ import annotations

import asyncio
import functools

import pytest

from p2prtc.host import default_transports
from p2prtc.identity import PeerId
from p2prtc.protocols.chat import ChatService
from p2prtc.transports.circuit import CircuitListener
from p2prtc.transports.webrtc.transport import WebRTCTransport

from ..conftest import ENGINES
from .relays import JsRelay, P2prtcRelay, RustRelay
from .test_core_js import echo_via

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("engine")]
MB = 1 << 20


@pytest.fixture(params=["p2prtc", "js", "rust"])
async def relay(request, node_peer_factory, rust_peer_factory):
    r = {"p2prtc": P2prtcRelay, "js": lambda: JsRelay(node_peer_factory),
         "rust": lambda: RustRelay(rust_peer_factory)}[request.param]()
    await r.start()
    yield r
    await r.stop()


async def py_peer(host_factory, relay=None, engine=None):
    host = await host_factory(listen=[], transports=[
        functools.partial(WebRTCTransport, ice_servers=[], engine=engine), *default_transports()])
    if relay is not None:
        await host.listen(f"{relay.addr('ws')}/p2p-circuit", "/webrtc")
        await host.listeners(CircuitListener)[0].reserved()
    return host


def webrtc_addr(host, via: str = "ws") -> str:
    """Our /webrtc address through the relay's WebSocket (browsers) or TCP address."""
    return str(next(a for a in host.listen_addrs
                    if a.has("webrtc") and a.has("ws") == (via == "ws")).with_peer_id(host.peer_id))


async def test_python_python(relay, host_factory):
    b = await py_peer(host_factory, relay)
    a = await py_peer(host_factory)
    inbox: asyncio.Queue = asyncio.Queue()
    ChatService(b, lambda p, t: inbox.put_nowait(("b", t)))
    chat_a = ChatService(a, lambda p, t: inbox.put_nowait(("a", t)))
    conn = await a.dial(webrtc_addr(b))
    assert conn.transport == "webrtc" and not conn.limited
    await relay.stop()
    await chat_a.send(b.peer_id, "over the direct path")
    assert await asyncio.wait_for(inbox.get(), 10) == ("b", "over the direct path")
    await echo_via(a, conn, 4 * MB)


@pytest.mark.parametrize("relay", ["p2prtc"], indirect=True)
async def test_python_python_across_engines(relay, host_factory, engine):
    """The listener on this test's engine, the dialer on the other one, and back."""
    other = next(e for e in ENGINES if e != engine)
    b = await py_peer(host_factory, relay, engine=engine)
    a = await py_peer(host_factory, engine=other)
    conn = await a.dial(webrtc_addr(b))
    assert conn.transport == "webrtc" and not conn.limited
    await echo_via(a, conn, 4 * MB)


async def test_browser_dials_python(relay, host_factory, browser_factory):
    b = await py_peer(host_factory, relay)
    page = await browser_factory()
    await page.dial(webrtc_addr(b))
    await relay.stop()
    r = await page.echo(peer=str(b.peer_id), bytes=MB)
    assert r["sha_received"] == r["sha_sent"]
    conn = b.best_connection(PeerId.from_string(page.peer_id))
    assert conn is not None and conn.transport == "webrtc"


async def test_python_dials_browser(relay, host_factory, browser_factory):
    page = await browser_factory()
    await page.dial(relay.addr("ws"))
    target = await page.wait_for_addr("/p2p-circuit/webrtc")
    a = await py_peer(host_factory)
    conn = await a.dial(target)
    assert conn.transport == "webrtc" and not conn.limited
    await relay.stop()
    await echo_via(a, conn, MB)


async def test_python_and_node_both_ways(relay, host_factory, node_peer_factory):
    node = await node_peer_factory(listen=["/p2p-circuit"], webrtc=True, name="js-webrtc")
    await node.dial(relay.addr("tcp"))
    node_addr = await node.wait_for_addr("/p2p-circuit/webrtc")
    a = await py_peer(host_factory)
    conn = await a.dial(node_addr)
    assert conn.transport == "webrtc" and not conn.limited
    await echo_via(a, conn, MB)

    b = await py_peer(host_factory, relay)
    dialed = await node.dial(webrtc_addr(b))
    assert "/webrtc" in dialed["remoteAddr"] and not dialed.get("limited")
    r = await node.echo(peer=str(b.peer_id), bytes=MB)
    assert r["sha_received"] == r["sha_sent"]
