"""Several relays (issue 15, point 1): a listener reserves on relays of different kinds (our
`p2prtc relay`, the seed's rust-libp2p relay-server and js relay.js) and lists an address
through each; a dialer given both addresses races them, the first direct connection wins and
the other attempt is cancelled without leaving a circuit behind; killing one relay leaves the
listener reachable through the other.

Run inside the test namespace:
    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_several_relays.py -q
"""

from __future__ import annotations

import asyncio
import time

import pytest

from p2prtc import Node, api_events

from ..interop.relays import JsRelay, RustRelay
from ..netns import lab_ip
from .test_relay_leak import relay_metrics
from .webpage import AppPage, Cli, chromium, free_port

pytestmark = pytest.mark.interop

STEP = 30.0  # seconds for one step (a reservation, a dial) on a loaded machine
# our relay frees a circuit as soon as either side's stream ends; this bounds how long the
# metrics may lag behind the dialer's close
METRICS_SETTLE = 10.0


async def our_relay(*extra: str) -> tuple[Cli, str, int]:
    """`p2prtc relay` with metrics; returns it, its TCP address and its metrics port (its
    listening addresses are in `relay.addrs`)."""
    ip = lab_ip()
    metrics_port = free_port(ip)
    relay = await Cli("relay", "--port", str(free_port(ip)), "--listen-ip", ip, "--stun-port", "0",
                      "--metrics-port", str(metrics_port), "--json", *extra,
                      name="our relay").start()
    relay.addrs = (await relay.wait_event("listening", STEP))["addrs"]
    addr = next(a for a in relay.addrs if "/ws/" not in a)
    return relay, addr, metrics_port


async def circuits_become(ip: str, port: int, want: int) -> dict[str, float]:
    """Our relay's metrics once `circuits_active` is `want` (no event to wait on: its /metrics
    is read until then, at most METRICS_SETTLE)."""
    deadline = time.monotonic() + METRICS_SETTLE
    while True:
        values = await relay_metrics(ip, port)
        if values["p2prtc_relay_circuits_active"] == want:
            return values
        assert time.monotonic() < deadline, values
        await asyncio.sleep(0.05)


def relay_of(addr: str) -> str:
    """The relay peer id of a `/p2p/R/p2p-circuit/...` address."""
    return addr.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[1]


def through(addrs: list[str], relay_addr: str) -> str:
    found = [a for a in addrs if a.startswith(relay_addr + "/p2p-circuit/webrtc/")]
    assert len(found) == 1, (relay_addr, addrs)
    return found[0]


class EventLog:
    """Every event of a Node, kept in `seen` from now on; `until(check)` waits on them."""

    def __init__(self, node: Node) -> None:
        self.seen: list[api_events.Event] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.ensure_future(self._collect(node.events()))

    async def _collect(self, events) -> None:
        async for e in events:
            async with self._changed:
                self.seen.append(e)
                self._changed.notify_all()

    async def until(self, check, what: str, timeout: float = STEP):
        """check()'s first non-None value, looked at now and after each event."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: check() is not None)
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout} s: {self.seen}") from None
        return check()

    def about(self, peer: str) -> list[api_events.Event]:
        return [e for e in self.seen if getattr(e, "peer", None) == peer]

    async def close(self) -> None:
        await self._task  # the node is closed: its events have ended


async def test_race_through_our_relay_and_rusts(rust_peer_factory):
    """In process: a Node listens on our relay and on rust's relay-server (as upstream runs
    it), another dials both addresses at once (attempt_delay 0). One direct connection; the
    losing attempt's relayed connection is closed on both sides and no relay keeps a circuit
    for it (our relay's metrics); the listener reports no failure for the cancelled upgrade."""
    relay, ours, metrics_port = await our_relay()
    rust = await RustRelay(rust_peer_factory, upstream=True).start()
    try:
        async with Node(stun=[], turn="none") as lis, Node(stun=[], turn="none") as dialer:
            lis_log, dialer_log = EventLog(lis), EventLog(dialer)
            addrs = await lis.listen(ours, rust.addr("tcp"))
            targets = [through(addrs, ours), through(addrs, rust.addr("tcp"))]
            assert set(map(relay_of, targets)) == {relay_of(ours + "/p2p-circuit"),
                                                   relay_of(rust.addr("tcp") + "/p2p-circuit")}

            conn = await dialer.dial(targets, attempt_delay=0)
            assert conn.direct and conn.transport == "webrtc"
            # the dialer closed the loser's relayed connection before returning
            relayed = [c for c in dialer.connections() if c.transport == "relay"]
            assert len(relayed) == 1, relayed
            winner = relay_of(relayed[0].remote_addr)

            def settled():
                mine = [c for c in lis.connections()
                        if c.remote_peer == dialer.peer_id and c.transport == "relay"]
                return mine if len(mine) == 1 and relay_of(mine[0].remote_addr) == winner \
                    else None

            await lis_log.until(settled, "the loser's relayed connection to close")
            await lis_log.until(lambda: next((e for e in lis_log.about(dialer.peer_id)
                                              if isinstance(e, api_events.Connected)), None),
                                "the listener's connected event")
            want = 1 if winner == relay_of(ours + "/p2p-circuit") else 0
            after = await circuits_become(lab_ip(), metrics_port, want)
            # one direct connection up on each side (two upgrades that finish together give
            # two, and the race closes one); the loser's relayed connection ended as
            # `relayed-closed`, never as a disconnection
            # (the duplicate's Disconnected may still be on its way: wait for it)
            for log, peer in ((dialer_log, lis.peer_id), (lis_log, dialer.peer_id)):
                def one_up(log=log, peer=peer):
                    mine = log.about(peer)
                    up = [e for e in mine if isinstance(e, api_events.Connected)]
                    down = [e for e in mine if isinstance(e, api_events.Disconnected)]
                    return mine if len(up) - len(down) == 1 else None

                mine = await log.until(one_up, "exactly one direct connection up")
                assert {e.transport for e in mine
                        if isinstance(e, (api_events.Connected, api_events.Disconnected))} \
                    == {"webrtc"}, mine
            relayed_in = sum(isinstance(e, api_events.Relayed) for e in lis_log.seen)
            print(f"[several relays] winner {'ours' if want else 'rust'}; the listener saw "
                  f"{relayed_in} relayed connections from the dialer; our relay: "
                  f"{after['p2prtc_relay_circuits_total']:.0f} circuits made, {want} left")

            # the direct connection carries streams; the listener said nothing failed
            lis.handle("/test/echo/1.0.0", _echo)
            stream = await conn.open_stream("/test/echo/1.0.0")
            await stream.write(b"ping")
            await stream.close()
            assert await stream.read_exactly(4) == b"ping"
            await lis.close()
            await lis_log.close()
            errors = [e for e in lis_log.seen if isinstance(e, api_events.Error)]
            assert errors == [], errors
    finally:
        await rust.stop()
        await relay.close()


async def _echo(stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def test_cli_listens_on_two_relays_and_survives_one(clis, node_peer_factory):
    """`p2prtc listen OURS JS` lists an address through each relay; `p2prtc dial A B` goes
    direct; our relay is killed: the listener keeps its js address, a fresh `p2prtc dial` of
    it goes direct and chats, and one given both addresses (one dead) still gets through."""
    relay, ours, _ = await our_relay()
    js = await JsRelay(node_peer_factory, example=True).start()
    try:
        lis = await clis("listen", ours, js.addr("ws"), "--json", "--stun", "none",
                         name="listener")
        me = (await lis.wait_event("peer", STEP))["peer"]

        def both():
            for e in reversed(lis.events):
                if e["event"] == "listening" and len({relay_of(a) for a in e["addrs"]}) == 2:
                    return e
            return None

        listening = await lis.wait_until(both, "addresses through both relays", STEP)
        via_ours, via_js = through(listening["addrs"], ours), through(listening["addrs"],
                                                                       js.addr("ws"))
        assert listening["browser_addrs"] == [via_js]  # relay.js is reached over WebSocket
        assert sum(e["event"] == "reservation" for e in lis.events) >= 2

        first = await clis("dial", via_ours, via_js, "--json", "--stun", "none", name="dialer")
        connected = await first.wait_event("connected", STEP, peer=me)
        assert connected["direct"] is True and connected["transport"] == "webrtc", connected
        dialings = [e["addr"] for e in first.events if e["event"] == "dialing"]
        assert dialings[0] == via_ours and set(dialings) <= {via_ours, via_js}, dialings
        await first.send_line("/quit")
        assert await asyncio.wait_for(first.proc.wait(), STEP) == 0

        relay.proc.kill()  # our relay dies: the listener keeps the other reservation
        lost = await lis.wait_event("warning", STEP)
        assert "reserving again" in lost["reason"] or "retrying" in lost["reason"], lost
        await lis.wait_until(
            lambda: next((e for e in reversed(lis.events) if e["event"] == "listening"
                          and e["addrs"] == [via_js]), None),
            "the addresses through the relay left", STEP)

        second = await clis("dial", via_js, "--json", "--stun", "none", name="fresh dialer")
        peer = (await second.wait_event("peer", STEP))["peer"]
        assert (await second.wait_event("connected", STEP, peer=me))["direct"] is True
        await second.send_line("hello through the relay left")
        await lis.wait_event("message", STEP, peer=peer, text="hello through the relay left")
        await second.send_line("/quit")
        assert await asyncio.wait_for(second.proc.wait(), STEP) == 0

        both_addrs = await clis("dial", via_ours, via_js, "--json", "--stun", "none",
                                name="dialer of both")
        assert (await both_addrs.wait_event("connected", STEP, peer=me))["direct"] is True
        assert not [e for e in both_addrs.events if e["event"] == "error"], both_addrs.describe()
    finally:
        await js.stop()
        await relay.close()


@pytest.mark.browser
async def test_page_reserves_on_two_relays(clis, node_peer_factory):
    """`p2prtc web --relay OURS --relay JS`: the page connects to both and lists a /webrtc
    address through each; `p2prtc dial` of both goes direct; our relay is killed and the chat
    goes on (direct), and the page still lists its address through relay.js."""
    relay, _, _ = await our_relay("--websocket-port", str(free_port(lab_ip())))
    ours_ws = next(a for a in relay.addrs if "/ws/" in a)
    js = await JsRelay(node_peer_factory, example=True).start()
    try:
        web = await clis("web", "--host", "127.0.0.1", "--port", "0", "--relay", ours_ws,
                         "--relay", js.addr("ws"), "--json", name="web")
        url = (await web.wait_event("listening", STEP))["urls"][0]
        async with chromium() as browser:
            page = await AppPage.open(browser, url, "page (two relays)")
            page_peer = await page.page.text_content("#peer-id")
            via_ours = await page.own_webrtc_address(ours_ws, timeout=STEP)
            via_js = await page.own_webrtc_address(js.addr("ws"), timeout=STEP)
            cli = await clis("dial", via_ours, via_js, "--json", "--stun", "none",
                             name="python dialer")
            try:
                ev = await cli.wait_event("connected", STEP, peer=page_peer)
                assert ev["direct"] is True and ev["transport"] == "webrtc", ev
                await relay.close()  # our relay dies; the direct connection stays
                await cli.send_line("hello page")
                await page.expect_output("Received message 'hello page'")
                await page.own_webrtc_address(js.addr("ws"), timeout=STEP)
            except Exception as e:  # noqa: BLE001 - any failure, with the page log
                raise AssertionError(f"{e}\n{await page.describe()}\n{cli.describe()}") from None
    finally:
        await js.stop()
        await relay.close()


async def test_listen_does_not_wait_for_a_silent_relay():
    """A relay that accepts TCP and never answers (Noise never starts) must not hold listen()
    for the whole reservation timeout once another relay has granted one: listen() returns
    OTHER_RELAYS_GRACE after the first grant and warns which relay is late (it keeps trying)."""
    from p2prtc.identity import Identity
    from p2prtc.node import OTHER_RELAYS_GRACE

    relay, addr, _ = await our_relay()
    held: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accept, then say nothing

    ip = lab_ip()
    server = await asyncio.start_server(silent, ip, 0)
    port = server.sockets[0].getsockname()[1]
    silent_addr = f"/ip4/{ip}/tcp/{port}/p2p/{Identity.generate().peer_id}"
    try:
        async with Node(stun=[], turn="none") as node:
            log = EventLog(node)
            t0 = time.monotonic()
            addrs = await node.listen(addr, silent_addr, timeout=STEP)
            took = time.monotonic() - t0
            assert took < OTHER_RELAYS_GRACE + 5.0, took  # not STEP (30 s)
            assert through(addrs, addr)
            await log.until(lambda: next((e for e in log.seen if isinstance(e, api_events.Warning)
                                          and e.relay == silent_addr), None),
                            "a warning about the silent relay")
        await log.close()
    finally:
        server.close()
        for w in held:
            w.close()
        await relay.close()
