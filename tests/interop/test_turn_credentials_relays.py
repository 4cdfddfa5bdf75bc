"""`fetch_turn_credentials` against relays that do not speak /p2prtc/turn-credentials/1.0.0
(js-libp2p's circuitRelayServer, rust-libp2p's relay): None, refused in multistream-select
within one round trip, and the connection to the relay stays usable."""

from __future__ import annotations

import time

import pytest

from p2prtc.host import Host
from p2prtc.protocols.turn_credentials import FETCH_TIMEOUT, fetch_turn_credentials

from .relays import JsRelay, RustRelay


@pytest.fixture(params=["js", "rust"])
async def foreign_relay(request, node_peer_factory, rust_peer_factory):
    r = JsRelay(node_peer_factory) if request.param == "js" else RustRelay(rust_peer_factory)
    await r.start()
    yield r
    await r.stop()


async def test_no_credentials_from_js_and_rust_relays(foreign_relay):
    host = Host()
    try:
        conn = await host.dial(foreign_relay.addr("tcp"))
        t0 = time.monotonic()
        assert await fetch_turn_credentials(host, conn) is None
        assert time.monotonic() - t0 < FETCH_TIMEOUT / 5
        assert not conn.is_closed
        assert len(await host.ping_service.ping(conn)) == 1  # the connection still works
    finally:
        await host.close()
