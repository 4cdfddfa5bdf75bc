"""The seed requirement's matrix, end to end: through `p2prtc relay`, js-libp2p's relay (Node) and
rust-libp2p's relay, each side dialing in turn,

- Python <-> Python: `p2prtc listen/dial --json` (the CLI) against an in-process Host with the
  same chat and file services, the CLI listening in one case and dialing in the other;
- Python <-> browser: the web app page (js-libp2p configured like the example app, served by
  `p2prtc web`) against the CLI, the page listening on its /p2p-circuit/webrtc address in one
  case and dialing the CLI in the other.

Every case runs its Python peers on each WebRTC engine (aiortc, wrtc): the connection is direct
/webrtc (not relayed, not limited) on both ends, the relay is then stopped, chat works both ways,
and a 20 MB file (5 MB on aiortc) arrives intact (sha256) in each direction.

Run inside the test namespace: scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_relay_matrix.py -q
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time

import pytest

from p2prtc.events import ConnectionOpened
from p2prtc.host import default_transports
from p2prtc.identity import PeerId
from p2prtc.protocols.chat import ChatService
from p2prtc.protocols.filetransfer import FileService
from p2prtc.transports.circuit import CircuitListener
from p2prtc.transports.webrtc.transport import WebRTCTransport

# The js and rust relays come from the interop harness (Node 22 + js-libp2p, the rust binary).
from ..interop.relays import JsRelay, P2prtcRelay, RustRelay
from .webpage import AppPage, Cli, chromium

# Every case on each WebRTC engine (conftest `engine`): the CLI and the in-process Python peer.
pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("engine")]
log = logging.getLogger(__name__)

# 20 MB on wrtc, the engine `auto` picks; 5 MB on aiortc (its 20 MB each way are in
# test_webrtc_python/test_webrtc_browser; here each 20 MB aiortc case cost ~15 s of CI).
FILE_BYTES_BY_ENGINE = {"wrtc": 20 * 1000 * 1000, "aiortc": 5 * 1000 * 1000}
FILE_TIMEOUT = 120  # s for one 20 MB transfer (~1-3 s seen here; generous for a loaded CI box)


def report(what: str, **fields) -> None:
    """Timings, visible with -s or in the log of a failing test."""
    text = f"[relay matrix] {what}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    log.warning(text)
    print(text)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def random_file(path, size: int) -> str:
    path.write_bytes(os.urandom(size))
    return sha256_file(path)


def assert_direct_addr(addr: str) -> None:
    assert "/webrtc/" in addr + "/" and "/p2p-circuit" not in addr, \
        f"not a direct /webrtc address: {addr}"


@pytest.fixture(params=["p2prtc", "js", "rust"])
async def relay(request, node_peer_factory, rust_peer_factory):  # noqa: F811
    """One relay of each implementation on the namespace's veth address; stopped at the end
    (tests stop it earlier themselves: stop() may run twice)."""
    r = {"p2prtc": P2prtcRelay, "js": lambda: JsRelay(node_peer_factory),
         "rust": lambda: RustRelay(rust_peer_factory)}[request.param]()
    try:
        await r.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await r.stop()  # whatever part of it started (the factories also stop theirs)
        raise
    yield r
    await r.stop()




async def listening_cli(clis, relay_addr: str, save_dir, name: str, via: str) -> tuple[Cli, str]:
    """`p2prtc listen` on a relay; returns it and its /webrtc address through the relay's
    `via` ("tcp" for Python dialers, "ws" for browsers)."""
    cli = await clis("listen", relay_addr, "--json", "--stun", "none", "--save-dir", str(save_dir),
                     name=name)
    ev = await cli.wait_event("listening", timeout=30)
    addrs = [a for a in ev["addrs"] if "/p2p-circuit/webrtc/" in a and ("/ws/" in a) == (via == "ws")]
    assert addrs, f"no {via} /webrtc address among {ev['addrs']}; {cli.describe()}"
    return cli, addrs[0]


async def cli_connected_directly(cli: Cli, peer: str) -> dict:
    ev = await cli.wait_event("connected", peer=peer, transport="webrtc", timeout=30)
    assert ev["direct"] is True, ev
    assert_direct_addr(ev["addr"])
    # one `connected` per connection, with its final kind; the relayed connection the upgrade
    # went through is a `relayed` event before it (the js relay here grants unlimited circuits:
    # relayed all the same)
    connected = [e for e in cli.events if e["event"] == "connected" and e["peer"] == peer]
    assert connected == [ev], connected
    relayed = [e for e in cli.events if e["event"] == "relayed" and e["peer"] == peer]
    assert relayed and all("/p2p-circuit" in e["addr"] for e in relayed), relayed
    assert cli.events.index(relayed[0]) < cli.events.index(ev)
    return ev


class PyHost:
    """An in-process Python peer: Host + /webrtc + chat + files, as peerapp wires them."""

    def __init__(self, host, save_dir) -> None:
        self.host = host
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.files_in: asyncio.Queue = asyncio.Queue()
        self.chat = ChatService(host, lambda p, t: self.inbox.put_nowait((str(p), t)))
        self.files = FileService(host, save_dir, on_received=self.files_in.put_nowait)
        self.conns: asyncio.Queue = asyncio.Queue()
        host.events.on(ConnectionOpened, lambda e: self.conns.put_nowait(e.connection))

    @classmethod
    async def start(cls, host_factory, save_dir) -> PyHost:
        host = await host_factory(listen=[], echo=False, transports=[
            functools.partial(WebRTCTransport, ice_servers=[]), *default_transports()])
        return cls(host, save_dir)

    async def listen(self, relay_addr: str) -> str:
        await self.host.listen(f"{relay_addr}/p2p-circuit", "/webrtc")
        await self.host.listeners(CircuitListener)[0].reserved(30)
        return str(next(a for a in self.host.listen_addrs if a.has("webrtc") and not a.has("ws"))
                   .with_peer_id(self.host.peer_id))

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


# -- Python <-> Python ----------------------------------------------------------------------------

@pytest.mark.parametrize("listener", ["cli", "host"])
async def test_python_python(relay, listener, clis, host_factory, tmp_path, engine):
    """`listener` listens through the relay, the other one dials its /p2p-circuit/webrtc
    address: the CLI (`p2prtc listen`/`p2prtc dial`) and an in-process Host take turns."""
    file_bytes = FILE_BYTES_BY_ENGINE[engine]
    t0 = time.perf_counter()
    host = await PyHost.start(host_factory, tmp_path / "host-received")
    cli_dir = tmp_path / "cli-received"
    if listener == "cli":
        cli, target = await listening_cli(clis, relay.addr("tcp"), cli_dir, "python listener", "tcp")
        cli_peer = PeerId.from_string(target.rsplit("/p2p/", 1)[1])
        t_dial = time.perf_counter()
        conn = await host.host.dial(target)
        dial_ms = (time.perf_counter() - t_dial) * 1000
        assert conn.transport == "webrtc"
    else:
        target = await host.listen(relay.addr("tcp"))
        t_dial = time.perf_counter()
        cli = await clis("dial", target, "--json", "--stun", "none", "--save-dir", str(cli_dir),
                         name="python dialer")
        cli_peer = PeerId.from_string((await cli.wait_event("peer"))["peer"])
        await cli_connected_directly(cli, str(host.host.peer_id))
        dial_ms = (time.perf_counter() - t_dial) * 1000  # includes the CLI's start-up
    conn = await host.direct_connection(cli_peer)
    cli_ms = (await cli_connected_directly(cli, str(host.host.peer_id)))["ms"]

    await relay.stop()

    # chat both ways, the dialer first
    if listener == "cli":
        await host.chat.send(cli_peer, "hello from the dialer (host)")
        await cli.wait_event("message", text="hello from the dialer (host)", peer=str(host.host.peer_id))
    await cli.send_line("hello from the cli")
    assert await asyncio.wait_for(host.inbox.get(), 15) == (str(cli_peer), "hello from the cli")
    await cli.wait_event("sent", text="hello from the cli")
    if listener == "host":
        await host.chat.send(cli_peer, "hello from the listener (host)")
        await cli.wait_event("message", text="hello from the listener (host)", peer=str(host.host.peer_id))

    # 20 MB host -> cli
    src = tmp_path / "from-host.bin"
    sha = random_file(src, file_bytes)
    t = time.perf_counter()
    sent = await asyncio.wait_for(host.files.send(cli_peer, src), FILE_TIMEOUT)
    got = await cli.wait_event("file", name="from-host.bin", timeout=FILE_TIMEOUT)
    host_to_cli = time.perf_counter() - t
    assert sent.sha256 == got["sha256"] == sha and got["bytes"] == file_bytes
    assert sha256_file(got["path"]) == sha

    # 20 MB cli -> host
    src = tmp_path / "from-cli.bin"
    sha = random_file(src, file_bytes)
    t = time.perf_counter()
    await cli.send_line(f"/send {src}")
    got = await asyncio.wait_for(host.files_in.get(), FILE_TIMEOUT)
    cli_to_host = time.perf_counter() - t
    assert got.sha256 == sha and got.size == file_bytes and got.name == "from-cli.bin"
    assert sha256_file(got.path) == sha
    sent_ev = await cli.wait_event("file-sent", name="from-cli.bin", timeout=15)
    assert sent_ev["sha256"] == sha

    # still the same direct connection, nothing fell back to anything else
    assert not conn.is_closed and host.host.best_connection(cli_peer) is conn
    assert not [e for e in cli.events if e["event"] == "disconnected"
                and e["transport"] == "webrtc"], cli.describe()
    report(f"py<->py via {relay.kind}, {listener} listens", dial_ms=round(dial_ms), cli_ms=cli_ms,
           host_to_cli_MBps=round(file_bytes / 1e6 / host_to_cli, 1),
           cli_to_host_MBps=round(file_bytes / 1e6 / cli_to_host, 1),
           total_s=round(time.perf_counter() - t0, 1))


# -- Python <-> browser ---------------------------------------------------------------------------

async def start_web(clis, relay) -> str:
    """`p2prtc web` pointed at this relay's WebSocket address, no ICE servers (the js and rust
    relays have no STUN server; nothing is needed on one network)."""
    web = await clis("web", "--host", "127.0.0.1", "--port", "0", "--relay", relay.addr("ws"),
                     "--stun", "none", "--json", name="web")
    ev = await web.wait_event("listening")
    assert ev["relay"] == relay.addr("ws") and ev["iceServers"] == [], ev
    return ev["urls"][0]


async def with_page_log(page: AppPage, coro):
    """Await `coro`; on failure add the page's output and console to the error."""
    try:
        return await coro
    except (TimeoutError, AssertionError) as e:
        raise AssertionError(f"{e}\n{await page.describe()}") from None


async def wait_transfer(page: AppPage, direction: str, name: str, timeout: float) -> str:
    """Wait until the page's transfer row for `name` is done (fail at once if it failed);
    returns the sha256 the page shows."""
    row = page.page.locator(f".transfer.{direction}", has_text=name)
    finished = row.and_(page.page.locator("[data-state='done'], [data-state='failed']"))
    try:
        await finished.wait_for(timeout=timeout * 1000)
    except Exception as e:  # noqa: BLE001 - playwright's TimeoutError
        raise AssertionError(f"{page.name}: transfer {direction} {name!r} not finished within "
                             f"{timeout}s ({e}); {await page.describe()}") from None
    if await row.get_attribute("data-state") != "done":
        raise AssertionError(f"{page.name}: transfer {direction} {name!r} failed: "
                             f"{await row.text_content()}; {await page.describe()}")
    return await row.get_attribute("data-sha256")


@pytest.mark.browser
@pytest.mark.engine_in_subprocesses  # the Python peer is the CLI (clis checks its engine line)
@pytest.mark.parametrize("listener", ["page", "python"])
async def test_python_browser(relay, listener, clis, tmp_path, engine):
    """`listener` listens through the relay (the page on its /p2p-circuit/webrtc address, or
    `p2prtc listen`), the other one dials it."""
    file_bytes = FILE_BYTES_BY_ENGINE[engine]
    t0 = time.perf_counter()
    url = await start_web(clis, relay)
    relay_ws = relay.addr("ws")
    py_dir = tmp_path / "python-received"
    async with chromium() as browser:
        page = await AppPage.open(browser, url, f"page ({listener} listens, {relay.kind} relay)")
        page_peer = await page.page.text_content("#peer-id")
        # the page dials the relay from /config.json by itself and shows its address through it
        await page.expect_output(f"Dialing '{relay_ws}'")
        await page.expect_output("Connected to relay")
        page_addr = await page.own_webrtc_address(relay_ws)

        t_dial = time.perf_counter()
        if listener == "page":
            py = await clis("dial", page_addr, "--json", "--stun", "none", "--save-dir", str(py_dir),
                            name="python dialer")
            py_peer = (await py.wait_event("peer"))["peer"]
            connected = await with_page_log(page, cli_connected_directly(py, page_peer))
        else:
            py, target = await listening_cli(clis, relay.addr("tcp"), py_dir, "python listener", "ws")
            py_peer = target.rsplit("/p2p/", 1)[1]
            t_dial = time.perf_counter()
            await page.dial_peer(target, retries=0)  # no retry: a failure is a failure here
            connected = await with_page_log(page, cli_connected_directly(py, page_peer))
        dial_ms = (time.perf_counter() - t_dial) * 1000
        direct = page.page.locator(f"#connections li[data-peer='{py_peer}'][data-kind='direct WebRTC']")
        await with_page_log(page, direct.first.wait_for(timeout=15_000))

        await relay.stop()
        await page.expect_output("Lost the connection to the relay")

        # chat both ways, the dialer first
        if listener == "python":
            await page.send_message("hello python")
            await with_page_log(page, py.wait_event("message", text="hello python", peer=page_peer))
        await py.send_line("hello browser")
        await page.expect_output("Received message 'hello browser'")
        if listener == "page":
            await page.send_message("hello python")
            await with_page_log(page, py.wait_event("message", text="hello python", peer=page_peer))

        # 20 MB page -> python: the Python side verifies size and sha256 on arrival
        up = tmp_path / "from-browser.bin"
        up_sha = random_file(up, file_bytes)
        t = time.perf_counter()
        await page.page.set_input_files("#file", str(up))
        await page.page.click("#send-file")
        got = await with_page_log(page, py.wait_event("file", name="from-browser.bin",
                                                      timeout=FILE_TIMEOUT))
        up_s = time.perf_counter() - t
        assert got["sha256"] == up_sha and got["bytes"] == file_bytes and got["peer"] == page_peer
        assert sha256_file(got["path"]) == up_sha
        assert await wait_transfer(page, "out", "from-browser.bin", 15) == up_sha

        # 20 MB python -> page: the page shows the hash it verified
        down = tmp_path / "from-python.bin"
        down_sha = random_file(down, file_bytes)
        t = time.perf_counter()
        await py.send_line(f"/send {down}")
        shown = await wait_transfer(page, "in", "from-python.bin", FILE_TIMEOUT)
        down_s = time.perf_counter() - t
        assert shown == down_sha
        await page.expect_output(f"Received file 'from-python.bin' ({file_bytes} bytes), "
                                 f"sha256 {down_sha} verified")
        sent = await with_page_log(page, py.wait_event("file-sent", name="from-python.bin",
                                                       timeout=15))
        assert sent["sha256"] == down_sha

        # the direct connection carried everything: still there, nothing was dropped
        assert "direct WebRTC" in (await page.connection_kinds()).get(py_peer, set())
        assert not [e for e in py.events if e["event"] == "disconnected"
                and e["transport"] == "webrtc"], py.describe()
        report(f"py<->browser via {relay.kind}, {listener} listens", dial_ms=round(dial_ms),
               cli_ms=connected["ms"],
               browser_to_py_MBps=round(file_bytes / 1e6 / up_s, 1),
               py_to_browser_MBps=round(file_bytes / 1e6 / down_s, 1),
               total_s=round(time.perf_counter() - t0, 1))
