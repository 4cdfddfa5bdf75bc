"""The seed's own relays, as their authors run them (issue 10, point 2):

- rust-libp2p's `examples/relay-server`: TCP + QUIC on one port, no WebSocket, no STUN, identify
  `/TODO/0.0.1`, `relay::Config::default()` limits, external addresses only from identify
  (`RustRelay(upstream=True)`, the rust harness in that configuration);
- js-libp2p-example-webrtc-private-to-private's `relay.js`: WebSocket on 127.0.0.1 only, identify +
  circuitRelayServer with js's default limits, no STUN (`JsRelay(example=True)`).

No Python peer here is given `--stun`: the default must not stall when the relay's host serves no
STUN (`stun:<relay host>:3478` never answers). Python <-> Python through each relay, each side
listening in turn: the connection is direct /webrtc, dial to direct < 1 s, chat both ways after
the relay has stopped. Pages (Chromium, js-libp2p) through the relay.js-like relay: 20 fresh pages
in a row each reach a `p2prtc listen` within the example page's 5 s dial deadline, and
`p2prtc dial` reaches a page.

Run inside the test namespace:
    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_seed_relays.py -q
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from p2prtc.events import ConnectionOpened
from p2prtc.host import default_transports
from p2prtc.identity import PeerId
from p2prtc.protocols.chat import ChatService
from p2prtc.transports.webrtc.transport import WebRTCTransport

from ..interop.relays import JsRelay, RustRelay
from .webpage import AppPage, Cli, chromium

pytestmark = pytest.mark.interop
log = logging.getLogger(__name__)

# Issue 10: "Python<->Python dial to direct < 1 s". Measured here ~0.1-0.8 s; a STUN stall costs
# ~5 s per side, so this bound tells the two apart.
PY_DIAL_TO_DIRECT_S = 1.0
# Python dialing a page: ~0.1-0.3 s here (webrtc_bench), a STUN stall on the Python side ~5 s.
PY_PAGE_DIAL_TO_DIRECT_S = 2.0
# The example page's dial deadline: index.js dials with AbortSignal.timeout(5000).
PAGE_DIAL_DEADLINE_MS = 5000
PAGE_DIALS = 20  # issue 10: "20/20 in a loop test"
# ... on wrtc, the engine `auto` picks; on aiortc a shorter loop (36 s -> 9 s of CI: the 20
# dials repeat one behaviour, and aiortc has had its 20/20 since issue 10).
PAGE_DIALS_BY_ENGINE = {"wrtc": PAGE_DIALS, "aiortc": 5}


def report(what: str, **fields) -> None:
    """Timings, visible with -s or in the log of a failing test."""
    text = f"[seed relays] {what}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    log.warning(text)
    print(text)


def assert_direct_addr(addr: str) -> None:
    assert "/webrtc/" in addr + "/" and "/p2p-circuit" not in addr \
        and "/webrtc-direct" not in addr, f"not a direct /webrtc address: {addr}"


@pytest.fixture(params=["rust-upstream", "js-example"])
async def seed_relay(request, node_peer_factory, rust_peer_factory):
    r = (RustRelay(rust_peer_factory, upstream=True) if request.param == "rust-upstream"
         else JsRelay(node_peer_factory, example=True))
    try:
        await r.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await r.stop()
        raise
    yield r
    await r.stop()


@pytest.fixture
async def js_example_relay(node_peer_factory):
    r = JsRelay(node_peer_factory, example=True)
    await r.start()
    yield r
    await r.stop()


def python_relay_addr(relay) -> str:
    """What a Python peer is given: rust's TCP address, relay.js's (only) WebSocket address."""
    return relay.addr("tcp") if relay.kind.startswith("rust") else relay.addr("ws")




async def cli_listening(clis, relay_addr: str, save_dir, name: str = "python listener") -> tuple[Cli, str]:
    """`p2prtc listen RELAY --json` (no --stun); returns it and its /webrtc address through
    `relay_addr`."""
    cli = await clis("listen", relay_addr, "--json", "--save-dir", str(save_dir), name=name)
    ev = await cli.wait_event("listening", timeout=30)
    addrs = [a for a in ev["addrs"] if a.startswith(relay_addr + "/p2p-circuit/webrtc/")]
    assert addrs, f"no /webrtc address through {relay_addr} among {ev['addrs']}; {cli.describe()}"
    return cli, addrs[0]


async def cli_direct(cli: Cli, peer: str, timeout: float = 30) -> dict:
    ev = await cli.wait_event("connected", peer=peer, transport="webrtc", timeout=timeout)
    assert ev["direct"] is True, ev
    assert_direct_addr(ev["addr"])
    return ev


async def cli_dial_to_direct(cli: Cli, peer: str) -> float:
    """Seconds from the dialer's `dialing` event to its direct `connected` event (its clock)."""
    dialing = await cli.wait_event("dialing", timeout=30)
    connected = await cli_direct(cli, peer)
    return connected["t"] - dialing["t"]


class PyHost:
    """An in-process Python peer with the CLI's defaults: Host + /webrtc (ICE servers as the CLI
    picks them without --stun) + chat."""

    def __init__(self, host) -> None:
        self.host = host
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.chat = ChatService(host, lambda p, t: self.inbox.put_nowait((str(p), t)))
        self.conns: asyncio.Queue = asyncio.Queue()
        host.events.on(ConnectionOpened, lambda e: self.conns.put_nowait(e.connection))

    @classmethod
    async def start(cls, host_factory) -> PyHost:
        # ice_servers=None: the default
        host = await host_factory(listen=[], echo=False,
                                  transports=[WebRTCTransport, *default_transports()])
        return cls(host)

    async def listen(self, relay_addr: str) -> str:
        await self.host.listen("/webrtc")
        await self.host.listen_via_relay(relay_addr, 30)
        addrs = [str(a.with_peer_id(self.host.peer_id)) for a in self.host.listen_addrs
                 if a.has("webrtc") and str(a).startswith(relay_addr + "/p2p-circuit")]
        assert addrs, f"no /webrtc address through {relay_addr}: {self.host.listen_addrs}"
        return addrs[0]

    async def direct_connection(self, peer: PeerId, timeout: float = 30):
        async def wait():
            while True:
                conn = self.host.best_connection(peer)
                if conn is not None and conn.transport == "webrtc":
                    return conn
                await self.conns.get()

        conn = await asyncio.wait_for(wait(), timeout)
        assert not conn.limited and not conn.is_closed
        assert_direct_addr(str(conn.remote_addr))
        return conn


# Relay limits as their authors ship them: rust `relay::Config::default()` and js
# circuitRelayServer's defaults are both 2 min and 128 KiB per circuit.
DEFAULT_CIRCUIT_S = 120
DEFAULT_CIRCUIT_BYTES = 128 * 1024


async def test_seed_relay_is_configured_as_its_authors_do(seed_relay, host_factory):
    """The fixture is the seed's relay, not ours in disguise: its addresses, identify and limits."""
    addrs = [a.split("/p2p/")[0] for a in (seed_relay.proc.addrs if seed_relay.kind.startswith("rust")
                                           else seed_relay.peer.addrs)]
    host = await PyHost.start(host_factory)
    info = await host.host.listen_via_relay(python_relay_addr(seed_relay), 30)
    relay_info = host.host.peerstore.peek(info.relay)
    assert relay_info is not None and relay_info.protocols, "the relay was never identified"
    assert "/libp2p/circuit/relay/0.2.0/hop" in relay_info.protocols
    if seed_relay.kind.startswith("rust"):
        assert (info.limit_duration, info.limit_data) == (DEFAULT_CIRCUIT_S, DEFAULT_CIRCUIT_BYTES), info
        # examples/relay-server: TCP and QUIC on --port, identify "/TODO/0.0.1", ping
        assert sorted(a.split("/")[3] for a in addrs) == ["tcp", "udp"], addrs
        assert any(a.endswith("/quic-v1") for a in addrs) and not any("/ws" in a for a in addrs)
        assert relay_info.protocol_version == "/TODO/0.0.1", relay_info
        assert relay_info.agent_version.startswith("rust-libp2p/"), relay_info
    else:
        # js-libp2p's circuit relay server (4.2.x) writes Limit.duration in milliseconds (the
        # spec says seconds) while it enforces 2 min: on the wire its default reads 120000,
        # which the client reads as the 120 s it means (circuit.limit_seconds)
        assert (info.limit_duration, info.limit_data) == (DEFAULT_CIRCUIT_S,
                                                          DEFAULT_CIRCUIT_BYTES), info
        # relay.js: one WebSocket listener on 127.0.0.1, services identify + relay only
        assert len(addrs) == 1 and addrs[0].startswith("/ip4/127.0.0.1/tcp/") \
            and addrs[0].endswith("/ws"), addrs
        assert "/ipfs/ping/1.0.0" not in relay_info.protocols, relay_info.protocols
        assert relay_info.agent_version.startswith("js-libp2p/"), relay_info


# -- Python <-> Python ----------------------------------------------------------------------------

@pytest.mark.usefixtures("engine")  # the CLI and the in-process peer on each WebRTC engine
@pytest.mark.parametrize("listener", ["cli", "host"])
async def test_python_python(seed_relay, listener, clis, host_factory, tmp_path):
    """`p2prtc listen` with an in-process dialer, and an in-process listener with `p2prtc dial`:
    direct /webrtc in < 1 s from the dial, chat both ways once the relay is gone."""
    relay_addr = python_relay_addr(seed_relay)
    host = await PyHost.start(host_factory)
    if listener == "cli":
        cli, target = await cli_listening(clis, relay_addr, tmp_path)
        cli_peer = PeerId.from_string(target.rsplit("/p2p/", 1)[1])
        t0 = time.perf_counter()
        conn = await host.host.dial(target)
        dial_s = time.perf_counter() - t0
        assert conn.transport == "webrtc", conn
        await host.direct_connection(cli_peer)
        await cli_direct(cli, str(host.host.peer_id))
    else:
        target = await host.listen(relay_addr)
        cli = await clis("dial", target, "--json", "--save-dir", str(tmp_path), name="python dialer")
        cli_peer = PeerId.from_string((await cli.wait_event("peer"))["peer"])
        dial_s = await cli_dial_to_direct(cli, str(host.host.peer_id))
        await host.direct_connection(cli_peer)
    report(f"py<->py via {seed_relay.kind}, {listener} listens", dial_to_direct_ms=round(dial_s * 1000))
    assert dial_s < PY_DIAL_TO_DIRECT_S, \
        f"dial to direct took {dial_s:.2f} s (limit {PY_DIAL_TO_DIRECT_S} s); {cli.describe()}"

    await seed_relay.stop()  # what follows can only go over the direct connection

    await host.chat.send(cli_peer, "hello from the host")
    await cli.wait_event("message", text="hello from the host", peer=str(host.host.peer_id))
    await cli.send_line("hello from the cli")
    assert await asyncio.wait_for(host.inbox.get(), 15) == (str(cli_peer), "hello from the cli")
    await cli.wait_event("sent", text="hello from the cli")
    assert not [e for e in cli.events if e["event"] == "disconnected"
                and e["transport"] == "webrtc"], cli.describe()


# -- pages <-> Python through the relay.js-like relay -----------------------------------------------

@pytest.mark.browser
@pytest.mark.engine_in_subprocesses  # `p2prtc listen` (clis checks its engine line)
async def test_pages_reach_python_listener_within_the_example_deadline(
        js_example_relay, clis, browser_factory, tmp_path, engine):
    """20 fresh pages in a row (a new browser context and js-libp2p node each: a new peer id, no
    connection to the relay or the listener before its dial) each reach `p2prtc listen` as
    index.js's Connect does: ping the /p2p-circuit/webrtc address under a 5 s abort signal
    (PAGE_DIALS_BY_ENGINE: 5 on aiortc)."""
    dials = PAGE_DIALS_BY_ENGINE[engine]
    relay_ws = js_example_relay.addr("ws")
    cli, target = await cli_listening(clis, relay_ws, tmp_path)
    listener_peer = target.rsplit("/p2p/", 1)[1]
    seen: set[str] = set()
    times_ms: list[float] = []
    for i in range(dials):
        page = await browser_factory(name=f"page{i + 1}", ice_servers=[])
        try:
            assert page.peer_id not in seen
            seen.add(page.peer_id)
            assert await page.connections() == [], "a fresh page is not connected to anything"
            t0 = time.perf_counter()
            try:
                await page.call("ping", addr=target, timeout_ms=PAGE_DIAL_DEADLINE_MS,
                                timeout=PAGE_DIAL_DEADLINE_MS / 1000 + 10)
            except Exception as e:
                raise AssertionError(f"page dial {i + 1}/{dials} failed: {e}\n"
                                     f"{cli.describe()}") from None
            times_ms.append((time.perf_counter() - t0) * 1000)
            conns = [c for c in await page.connections() if c["peer"] == listener_peer]
            # js names a /webrtc connection by the address it dialed (<relay>/p2p-circuit/webrtc
            # /p2p/<peer>); the relayed one it went through ends in /p2p-circuit/p2p/<peer>
            direct = [c for c in conns if "/p2p-circuit/webrtc/" in c["remoteAddr"]
                      and not c["limited"] and c["direct"] is not False]
            assert direct, f"page dial {i + 1}: no direct /webrtc connection among {conns}"
            await cli_direct(cli, page.peer_id, timeout=10)
        finally:
            await page.close()
    report(f"{dials} page dials to p2prtc listen via relay.js-like relay",
           ok=f"{len(times_ms)}/{dials}", median_ms=round(sorted(times_ms)[len(times_ms) // 2]),
           max_ms=round(max(times_ms)))


@pytest.mark.browser
@pytest.mark.engine_in_subprocesses  # `p2prtc dial` (clis checks its engine line)
@pytest.mark.usefixtures("engine")
async def test_python_dials_page(js_example_relay, clis, tmp_path):
    """The web app page (js-libp2p as in the example, served by `p2prtc web`) listens through the
    relay.js-like relay; `p2prtc dial` reaches it directly; chat both ways without the relay."""
    relay_ws = js_example_relay.addr("ws")
    web = await clis("web", "--host", "127.0.0.1", "--port", "0", "--relay", relay_ws, "--json",
                     name="web")
    url = (await web.wait_event("listening"))["urls"][0]
    async with chromium() as browser:
        page = await AppPage.open(browser, url, "page (listens, relay.js-like relay)")
        page_peer = await page.page.text_content("#peer-id")
        await page.expect_output("Connected to relay")
        page_addr = await page.own_webrtc_address(relay_ws)

        cli = await clis("dial", page_addr, "--json", "--save-dir", str(tmp_path), name="python dialer")
        try:
            dial_s = await cli_dial_to_direct(cli, page_peer)
            direct = page.page.locator("#connections li[data-kind='direct WebRTC']")
            await direct.first.wait_for(timeout=15_000)
        except Exception as e:  # noqa: BLE001 - any failure, with the page log
            raise AssertionError(f"{e}\n{await page.describe()}") from None
        report("python dials page via relay.js-like relay", dial_to_direct_ms=round(dial_s * 1000))
        assert dial_s < PY_PAGE_DIAL_TO_DIRECT_S, \
            f"dial to direct took {dial_s:.2f} s (limit {PY_PAGE_DIAL_TO_DIRECT_S} s); {cli.describe()}"

        await js_example_relay.stop()
        await cli.send_line("hello page")
        await page.expect_output("Received message 'hello page'")
        await page.send_message("hello python")
        await cli.wait_event("message", text="hello python", peer=page_peer)
