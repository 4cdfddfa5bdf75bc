"""The page over https, as deployed on the internet: `p2prtc web --tls-cert/--tls-key`, a relay
with WebSocket over TLS, Chromium trusting the test CA's certificate by key pin
(--ignore-certificate-errors-spki-list), links with QR codes that dial, and the plain words for
an https page that was only given a ws:// relay (mixed content)."""

from __future__ import annotations

import os
import socket
from contextlib import asynccontextmanager

import pytest

from ..interop.jspeer import CHROMIUM, CHROMIUM_ARGS
from ..netns import lab_ip
from ..tlsca import TestCA
from .webpage import AppPage, Cli, free_port


@asynccontextmanager
async def chromium_trusting(pin: str):
    from playwright.async_api import async_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install -y chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS + [f"--ignore-certificate-errors-spki-list={pin}"])
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def cert(tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("server", [lab_ip(), "127.0.0.1", "localhost"])
    leaf.ca = ca
    return leaf


@pytest.fixture
async def tls_relay(cert):
    ip = lab_ip()
    stun = free_port(ip, socket.SOCK_DGRAM)
    proc = await Cli("relay", "--port", str(free_port(ip)), "--websocket-port", str(free_port(ip)),
                     "--wss-port", str(free_port(ip)), "--stun-port", str(stun),
                     "--listen-ip", ip, "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                     "--json", name="relay").start()
    ev = await proc.wait_event("listening")
    proc.ws = next(a for a in ev["addrs"] if "/tcp/" in a and a.split("/")[5] == "ws")
    proc.tls = next(a for a in ev["addrs"] if "/tls/ws/" in a)
    proc.tcp = next(a for a in ev["addrs"] if "/ws/" not in a)
    proc.stun = f"stun:{ip}:{stun}"
    yield proc
    await proc.close()


async def start_https_web(cert, *relays: str, stun: str) -> tuple[Cli, str]:
    args = ["web", "--host", "127.0.0.1", "--port", "0", "--stun", stun, "--json",
            "--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    for r in relays:
        args += ["--relay", r]
    web = await Cli(*args, name="web").start()
    ev = await web.wait_event("listening")
    assert ev["urls"][0].startswith("https://127.0.0.1:") and ev["relays"] == list(relays)
    return web, ev["urls"][0]


@pytest.mark.browser
async def test_https_page_reaches_the_relay_over_wss_and_a_link_dials_python(cert, tls_relay):
    relay = tls_relay
    web, url = await start_https_web(cert, relay.ws, relay.tls, stun=relay.stun)
    py = await Cli("listen", relay.tcp, "--json", "--stun", relay.stun, "--web-url", url, "-v",
                   name="python listener").start()
    try:
        ev = await py.wait_event("listening")
        link = ev["link"]
        target = link.split("#/dial/", 1)[1]
        assert link == f"{url}#/dial/{target}" and "/tls/ws/" in target, ev
        async with chromium_trusting(cert.spki_pin) as browser:
            # the page's own address: link and QR code, through the relay's wss (not its ws)
            page = await AppPage.open(browser, url, "page")
            await page.expect_output(f"Dialing '{relay.tls}'")
            await page.expect_output("Connected to relay")
            own = await page.own_webrtc_address(relay.tls)
            my_link = page.page.locator("#my-link")
            await my_link.wait_for(state="visible", timeout=15_000)
            assert await my_link.get_attribute("href") == f"{url}#/dial/{own}"
            qr = page.page.locator("#my-qr svg")
            assert await qr.count() == 1
            assert await page.page.locator("#my-qr").get_attribute("data-text") == f"{url}#/dial/{own}"

            # the Python listener's link, opened in a new tab: it dials by itself
            linked = await AppPage.open(browser, link, "linked page")
            await linked.expect_output(f"Dialing '{relay.tls}'")
            # the link's own dial; js's /webrtc dial loses a race now and then (see
            # AppPage.dial_peer): then the person clicks Connect again, as dial_peer does
            line = await linked.wait_until_output(
                lambda s: s in (f"Connected to '{target}'", f"Timed out connecting to '{target}'")
                or s.startswith(f"Connecting to '{target}' failed"), 0, "the link's dial", 30)
            if line != f"Connected to '{target}'":
                report_retry = f"link dial failed once ({line}); retrying by hand"
                print(report_retry)
                try:
                    await linked.dial_peer(target, retries=2)
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{py.describe()}") from None
            page_peer = await linked.page.text_content("#peer-id")
            await py.wait_event("connected", peer=page_peer, transport="webrtc", direct=True)
            await linked.send_message("hello from https")
            await py.wait_event("message", text="hello from https")
            await py.send_line("hello secure page")
            await linked.expect_output("Received message 'hello secure page'")
            await linked.screenshot("web-https-link-chat.png")
    finally:
        await py.close()
        assert await web.interrupt() == 0


@pytest.mark.browser
async def test_https_page_with_only_a_ws_relay_says_why(cert, tls_relay):
    web, url = await start_https_web(cert, tls_relay.ws, stun=tls_relay.stun)
    try:
        async with chromium_trusting(cert.spki_pin) as browser:
            page = await AppPage.open(browser, url, "page")
            await page.expect_output(f"The only relay address this page has ({tls_relay.ws}) is "
                                     "plain WebSocket (ws://), and a page opened over https may "
                                     "not use it")
            assert await page.page.locator("#connect-relay").is_disabled()
            # typed by hand: the same words, and no dial
            await page.page.fill("#peer", tls_relay.ws)
            await page.page.click("#connect")
            await page.expect_output(f"Dialing '{tls_relay.ws}'")
            lines = await page.output_lines()
            assert sum("mixed content" in line for line in lines) == 2, lines
            assert "Connected to relay" not in lines
    finally:
        assert await web.interrupt() == 0
