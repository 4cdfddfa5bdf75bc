"""`/p2prtc/nat/1.0.0` against js-libp2p, which does not speak it: over the limited relayed
connection a real /webrtc dial would use, our exchange answers "unknown" in about one round trip
and the connection stays usable; the dial's NAT check then never rules anything out."""

from __future__ import annotations

import time

import pytest

from p2prtc.nat import APD, NatBehaviour, NatDetector
from p2prtc.protocols import natinfo
from p2prtc.protocols.natinfo import NatInfoService

from .relays import P2prtcRelay
from .test_core_js import echo_via

pytestmark = pytest.mark.interop
KB = 1024
SYMMETRIC = NatBehaviour(APD, APD, ("203.0.113.2", 5000), "203.0.113.10:3478")


@pytest.fixture
async def relay():
    r = await P2prtcRelay().start()
    yield r
    await r.stop()


async def test_js_peer_does_not_speak_natinfo(relay, node_peer_factory, host_factory):
    listener = await node_peer_factory(listen=["/p2p-circuit"], circuit=True, name="js-listener")
    await listener.dial(relay.addr("tcp"))
    circuit_addr = await listener.wait_for_addr("/p2p-circuit")
    ours = await host_factory(listen=[])
    svc = NatInfoService(ours)
    svc.start(NatDetector.known(SYMMETRIC))
    conn = await ours.dial(circuit_addr)
    assert conn.limited
    t0 = time.monotonic()
    assert await natinfo.exchange(conn, SYMMETRIC) is None
    t1 = time.monotonic()
    assert await svc.check(conn) is None  # a symmetric NAT here, nothing known there: go ahead
    # js refuses in multistream-select: a round trip on loopback, nowhere near our timeout.
    assert t1 - t0 < 0.5 and time.monotonic() - t1 < 0.5, (t1 - t0, time.monotonic() - t1)
    assert svc.peers == {}
    await echo_via(ours, conn, 16 * KB)  # the relayed connection is fine
