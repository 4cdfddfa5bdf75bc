"""Fixtures shared by every test directory: p2prtc hosts, js-libp2p peers (Node 22, headless
Chromium) and rust-libp2p peers.

    async def test_example(js_installed, node_peer_factory, browser_factory):
        server = await node_peer_factory(listen=["/ip4/127.0.0.1/tcp/0/ws"])
        page = await browser_factory()            # started js-libp2p node in a Chromium page
        await page.dial(server.addr("ws"))
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from p2prtc.host import Host
from p2prtc.protocols.echo import ECHO, handle_echo
from p2prtc.transports.webrtc import engine_base

from .interop.jspeer import BrowserSession, NodePeer, install
from .interop.rustpeer import RustPeer, RustUnavailable, rust_binary


# Every /webrtc test runs its Python peers on each engine (engine_base.ENGINES); CI has both.
ENGINES = engine_base.ENGINES
# Tests that do not take the `engine` fixture run on aiortc, as before wrtc existed (outside the
# tests `auto` picks wrtc); P2PRTC_ENGINE=wrtc in the environment runs all of them on wrtc.
os.environ.setdefault(engine_base.ENV_VAR, "aiortc")


@pytest.fixture(params=ENGINES)
async def engine(request, monkeypatch) -> AsyncIterator[str]:
    """The WebRTC engine of this test's Python peers: in this process (WebRTCTransport(engine=...)
    or $P2PRTC_ENGINE) and in the subprocesses it starts ($P2PRTC_ENGINE). An engine that cannot
    run here fails the test (nothing skips in CI); wrtc's event mailbox must drop nothing."""
    name = request.param
    problem = engine_base.wrtc_problem() if name == "wrtc" else None
    if problem:
        pytest.fail(f"WebRTC engine wrtc unavailable: {problem}", pytrace=False)
    monkeypatch.setenv(engine_base.ENV_VAR, name)
    dropped = made = 0
    if name == "wrtc":
        from p2prtc.transports.webrtc import engine_wrtc
        dropped, made = engine_wrtc.mailbox_dropped(), engine_wrtc.connections_made
    yield name
    if name == "wrtc":
        moved = engine_wrtc.mailbox_dropped() - dropped
        assert moved == 0, f"wrtc's event mailbox dropped {moved} records"
        if not request.node.get_closest_marker("engine_in_subprocesses"):
            assert engine_wrtc.connections_made > made, "no wrtc peer connection was made"


@pytest.fixture
async def host_factory():
    """`await host_factory(listen=[...], echo=True, **Host kwargs)` -> a started p2prtc Host."""
    hosts: list[Host] = []

    async def make(listen=("/ip4/127.0.0.1/tcp/0",), echo: bool = True, **kwargs) -> Host:
        host = Host(**kwargs)
        hosts.append(host)
        if echo:
            host.handle(ECHO, handle_echo, allow_limited=True)
        if listen:
            await host.listen(*listen)
        return host

    yield make
    for host in reversed(hosts):
        await host.close()


@pytest.fixture(scope="session")
def js_installed() -> str:
    """Run tests/interop/js/install.sh once per session (a no-op when up to date); fail loudly."""
    try:
        return install()
    except Exception as e:  # noqa: BLE001 - turned into a test failure with the full output
        pytest.fail(f"installing the js-libp2p harness failed:\n{e}", pytrace=False)


@pytest.fixture
async def node_peer_factory(js_installed):
    """`await node_peer_factory(**NodePeer kwargs)` -> a started NodePeer; all stopped afterwards."""
    peers: list[NodePeer] = []

    async def make(**kwargs) -> NodePeer:
        kwargs.setdefault("name", f"js-node{len(peers) + 1}")
        peer = NodePeer(**kwargs)
        peers.append(peer)
        await peer.start()
        return peer

    yield make
    for peer in reversed(peers):
        await peer.stop()


@pytest.fixture
async def browser_factory(js_installed):
    """`await browser_factory(start=True, **BrowserPeer.start kwargs)` -> a BrowserPeer.

    All pages of one test share one Chromium (a context each); closed afterwards.
    """
    session: BrowserSession | None = None

    async def make(start: bool = True, name: str | None = None, **start_kwargs):
        nonlocal session
        if session is None:
            session = BrowserSession()
            try:
                await session.start()
            except BaseException:
                await session.close()
                session = None
                raise
        peer = await session.new_peer(name)
        if start:
            await peer.start(**start_kwargs)
        return peer

    yield make
    if session is not None:
        await session.close()


@pytest.fixture(scope="session")
def rust_built() -> str:
    """Path of the built rust interop binary (built once per session; minutes when cold)."""
    try:
        return rust_binary()
    except RustUnavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
async def rust_peer_factory(rust_built: str) -> AsyncIterator[Callable[..., Awaitable[RustPeer]]]:
    """`await rust_peer_factory(listen=[...], seed=N)` starts a peer (returns after `ready`);
    `await rust_peer_factory(mode="relay", websocket_port=0, no_limits=True)` starts a relay.
    Every process started is stopped when the test ends."""
    started: list[RustPeer] = []

    async def make(mode: str = "peer", *, start_timeout: float = 60, **kw: Any) -> RustPeer:
        if mode == "peer":
            proc = RustPeer.peer(rust_built, **kw)
        elif mode == "relay":
            proc = RustPeer.relay(rust_built, **kw)
        else:
            raise ValueError(f"mode must be 'peer' or 'relay', not {mode!r}")
        started.append(proc)
        await proc.start(timeout=start_timeout)
        return proc

    yield make
    for proc in reversed(started):
        await proc.stop()
