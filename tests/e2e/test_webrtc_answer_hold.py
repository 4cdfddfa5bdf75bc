"""The answerer's hold (engine_wrtc.ANSWER_HOLD): our connectivity checks wait for the offerer's
only when the offerer's stack needs it (transport.needs_answer_hold, from its identify agent);
set_answer_hold(False) ends a wait at once. test_webrtc_relays' both_ways tests show the hold
still keeps js-libp2p in Node (node-datachannel) connecting."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.transports.webrtc import engine as aiortc_engine
from p2prtc.transports.webrtc import engine_wrtc
from p2prtc.transports.webrtc.transport import needs_answer_hold

from .test_webrtc_python import listening_peer, relay, webrtc_host  # noqa: F401 (fixture)

NODE = "js-libp2p/2.8.8 node/22.12.0"
CHROMIUM = ("js-libp2p/2.8.8 browser/Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) HeadlessChrome/131.0.6778.33 Safari/537.36")
FIREFOX = "js-libp2p/2.8.8 browser/Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.mark.parametrize(("agent", "hold"), [
    ("p2prtc/0.1.0", False), (CHROMIUM, False), (NODE, True), (FIREFOX, True),
    ("js-libp2p/2.8.8 deno/2.1.0", True), ("rust-libp2p/0.54", True), ("", True), (None, True)])
def test_who_is_held(agent, hold):
    assert needs_answer_hold(agent) is hold


async def _answerer_with_remote_candidate(monkeypatch):
    """A wrtc answerer (hold of 30 s) and a host candidate of its offerer, which cannot check
    (it never gets the answer)."""
    monkeypatch.setattr(engine_wrtc, "ANSWER_HOLD", 30.0)
    offerer = engine_wrtc.WrtcPeerConnection([])
    answerer = engine_wrtc.WrtcPeerConnection([])
    offerer.create_channel("init")
    await answerer.accept_offer(await offerer.create_offer())
    async with asyncio.timeout(10):
        async for cand in offerer.local_candidates():
            assert cand is not None
            return offerer, answerer, cand
    raise AssertionError("unreachable")


async def test_set_answer_hold_false_ends_the_wait(monkeypatch):
    offerer, answerer, cand = await _answerer_with_remote_candidate(monkeypatch)
    try:
        adding = asyncio.ensure_future(answerer.add_candidate(cand))
        with pytest.raises(TimeoutError):  # held (the offerer never checks)
            await asyncio.wait_for(asyncio.shield(adding), 0.5)
        answerer.set_answer_hold(False)
        await asyncio.wait_for(adding, 5)
    finally:
        await offerer.close()
        await answerer.close()


async def test_no_hold_told_before_the_candidate(monkeypatch):
    offerer, answerer, cand = await _answerer_with_remote_candidate(monkeypatch)
    try:
        answerer.set_answer_hold(False)
        await asyncio.wait_for(answerer.add_candidate(cand), 5)
    finally:
        await offerer.close()
        await answerer.close()


@pytest.mark.parametrize("engine", ["aiortc", "wrtc"], indirect=True)
async def test_python_offerer_is_not_held(relay, host_factory, engine, monkeypatch):  # noqa: F811
    """A p2prtc dialer: the listener's peer connection is told no hold (from identify)."""
    told: list[bool] = []
    for cls in (aiortc_engine.PeerConnection, engine_wrtc.WrtcPeerConnection):
        original = cls.set_answer_hold

        def spy(self, hold: bool, original=original) -> None:
            told.append(hold)
            original(self, hold)
        monkeypatch.setattr(cls, "set_answer_hold", spy)
    a = await webrtc_host(host_factory, engine)
    b, addr = await listening_peer(host_factory, relay, engine)
    conn = await a.dial(addr)
    assert conn.transport == "webrtc"
    assert told == [False]
