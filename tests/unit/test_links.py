"""Links that dial (`https://host/#/dial/<addr>`, web/links.py) and the relay addresses the web
server hands to pages (`relays` in /config.json), also over https."""

from __future__ import annotations

import ssl

import aiohttp

from p2prtc.cli import build_parser
from p2prtc.transports.tls import ReloadingCertificate, client_context
from p2prtc.web.app import WebConfig, WebServer, config_for, display_urls
from p2prtc.web.links import dial_link, link_target

from ..tlsca import TestCA

RID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
WS = f"/ip4/127.0.0.1/tcp/8080/ws/p2p/{RID}"
TLS = f"/dns4/relay.example.org/tcp/443/tls/ws/p2p/{RID}"
DIRECT = f"/ip4/203.0.113.5/udp/4885/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/{RID}"


def circuit(relay: str) -> str:
    return f"{relay}/p2p-circuit/webrtc/p2p/{RID}"


def test_dial_link_keeps_the_address_readable():
    addr = circuit(TLS)
    assert dial_link("https://chat.example.org/", addr) == f"https://chat.example.org/#/dial/{addr}"
    assert dial_link("https://chat.example.org/x?y=1#old", "/dns4/a b/tcp/1/ws") == \
        "https://chat.example.org/x?y=1#/dial//dns4/a%20b/tcp/1/ws"
    for bad in ("chat.example.org", "ftp://x/", "https://"):
        try:
            dial_link(bad, addr)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_link_target_is_what_the_page_can_use():
    addrs = [circuit(WS), circuit(DIRECT), circuit(TLS)]
    assert link_target(addrs, "https://chat.example.org/") == circuit(TLS)
    assert link_target([circuit(WS), circuit(DIRECT)], "https://chat.example.org/") == circuit(DIRECT)
    assert link_target([circuit(WS)], "https://chat.example.org/") is None  # mixed content
    assert link_target(addrs, "http://localhost:5173/") == circuit(WS)
    assert link_target([], "http://localhost:5173/") is None


def test_config_lists_every_relay_address_first_one_as_relay():
    doc = config_for(WebConfig(relay=WS, more_relays=[TLS]), "198.51.100.7")
    assert doc["relay"] == f"/ip4/198.51.100.7/tcp/8080/ws/p2p/{RID}"
    assert doc["relays"] == [doc["relay"], TLS]
    assert "relays" not in config_for(WebConfig(relay=WS))
    args = build_parser().parse_args(["web", "--relay", WS, "--relay", TLS])
    assert args.relay == [WS, TLS]


def test_https_urls():
    assert display_urls("127.0.0.1", 8443, "https") == [("Local", "https://127.0.0.1:8443/")]


async def test_web_server_speaks_https_with_the_given_certificate(tmp_path):
    ca = TestCA(tmp_path)
    leaf = ca.issue("web", ["127.0.0.1"])
    server = WebServer(WebConfig(relay=TLS),
                       tls=ReloadingCertificate(str(leaf.cert), str(leaf.key)))
    port = await server.start("127.0.0.1", 0)
    try:
        assert server.urls() == [("Local", f"https://127.0.0.1:{port}/")]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{port}/config.json",
                             ssl=client_context(str(ca.ca_pem))) as r:
                assert (await r.json())["relay"] == TLS
            try:
                async with s.get(f"https://127.0.0.1:{port}/", ssl=ssl.create_default_context()):
                    raise AssertionError("an unknown CA was accepted")
            except aiohttp.ClientConnectorCertificateError:
                pass
    finally:
        await server.close()


def test_a_link_gives_back_its_address():
    from p2prtc.web.links import addr_from_link

    addr = circuit(TLS)
    assert addr_from_link(dial_link("https://chat.example.org/", addr)) == addr
    assert addr_from_link("https://chat.example.org/#/dial/%2Fip4%2F1.2.3.4%2Ftcp%2F1") == \
        "/ip4/1.2.3.4/tcp/1"
    assert addr_from_link(addr) is None
    assert addr_from_link("https://chat.example.org/") is None
    assert addr_from_link("https://chat.example.org/#/dial/nope") is None
