"""`p2prtc web`: /config.json, the aiohttp app, and the command-line parsing of `web` and `demo`."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from p2prtc.cli import build_parser
from p2prtc.web import app as webapp
from p2prtc.web.app import (
    ConfigError,
    WebConfig,
    check_relay_addr,
    config_for,
    display_urls,
    make_app,
    rewrite_for_request,
)
from p2prtc.web.cli import stun_list
from p2prtc.multiaddr import Multiaddr

RELAY_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"  # seed 0
WS = f"/ip4/203.0.113.5/tcp/8080/ws/p2p/{RELAY_ID}"
LOOP_WS = f"/ip4/127.0.0.1/tcp/8080/ws/p2p/{RELAY_ID}"


# -- /config.json ----------------------------------------------------------------------------

def test_config_without_relay_has_no_ice_servers():
    # never js-libp2p's default public STUN servers: the deployment decides
    assert config_for(WebConfig()) == {"relay": None, "iceServers": []}


def test_default_stun_is_the_relays_own():
    assert config_for(WebConfig(relay=WS)) == {
        "relay": WS, "iceServers": [{"urls": ["stun:203.0.113.5:3478"]}]}
    dns = f"/dns/relay.example.org/tcp/443/wss/p2p/{RELAY_ID}"
    assert config_for(WebConfig(relay=dns))["iceServers"] == [
        {"urls": ["stun:relay.example.org:3478"]}]
    ip6 = f"/ip6/2001:db8::1/tcp/8080/ws/p2p/{RELAY_ID}"
    assert config_for(WebConfig(relay=ip6))["iceServers"] == [{"urls": ["stun:[2001:db8::1]:3478"]}]


def test_explicit_stun_wins_and_none_means_none():
    cfg = WebConfig(relay=WS, stun=["stun:a.example:3478", "turn:b.example:3478"])
    assert config_for(cfg)["iceServers"] == [{"urls": ["stun:a.example:3478", "turn:b.example:3478"]}]
    assert config_for(WebConfig(relay=WS, stun=[]))["iceServers"] == []


def test_loopback_relay_follows_the_host_the_page_was_loaded_from():
    cfg = WebConfig(relay=LOOP_WS, demo_peer=f"{LOOP_WS}/p2p-circuit/webrtc/p2p/{RELAY_ID}")
    doc = config_for(cfg, "198.51.100.7")
    assert doc["relay"] == f"/ip4/198.51.100.7/tcp/8080/ws/p2p/{RELAY_ID}"
    assert doc["iceServers"] == [{"urls": ["stun:198.51.100.7:3478"]}]
    assert doc["demoPeer"] == f"{doc['relay']}/p2p-circuit/webrtc/p2p/{RELAY_ID}"
    # opened on this machine: unchanged
    for host in (None, "", "localhost", "127.0.0.1", "::1"):
        assert config_for(cfg, host)["relay"] == LOOP_WS
    assert "demoPeer" not in config_for(WebConfig(relay=LOOP_WS))


@pytest.mark.parametrize("host, head", [
    ("relay.example.org", "/dns/relay.example.org"),
    ("2001:db8::7", "/ip6/2001:db8::7"),
    ("[2001:db8::7]", "/ip6/2001:db8::7"),
    ("bad/../host", "/ip4/127.0.0.1"),  # not a host name: ignored
    ("a b", "/ip4/127.0.0.1"),
])
def test_rewrite_for_request(host, head):
    assert str(rewrite_for_request(Multiaddr(LOOP_WS), host)) == f"{head}/tcp/8080/ws/p2p/{RELAY_ID}"


def test_rewrite_leaves_public_addresses_and_fixes_unspecified():
    assert str(rewrite_for_request(Multiaddr(WS), "198.51.100.7")) == WS
    any_ws = f"/ip4/0.0.0.0/tcp/8080/ws/p2p/{RELAY_ID}"
    assert str(rewrite_for_request(Multiaddr(any_ws), None)) == LOOP_WS
    assert str(rewrite_for_request(Multiaddr(any_ws), "198.51.100.7")).startswith("/ip4/198.51.100.7/")


def test_relay_address_checks():
    assert str(check_relay_addr(WS)) == WS
    check_relay_addr(f"/dns/relay.example.org/tcp/443/wss/p2p/{RELAY_ID}")
    for bad, why in [
        ("nonsense", "not a multiaddr"),
        ("/ip4/203.0.113.5/tcp/8080/ws", "/p2p/"),
        (f"/ip4/203.0.113.5/tcp/4884/p2p/{RELAY_ID}", "browsers reach a relay only"),
        (f"{WS}/p2p-circuit/webrtc/p2p/{RELAY_ID}", "relayed address"),
    ]:
        with pytest.raises(ConfigError, match=why):
            check_relay_addr(bad)


# -- the aiohttp app -------------------------------------------------------------------------

@pytest.fixture
def static_dir(tmp_path):
    (tmp_path / "index.html").write_text("<html>page</html>")
    (tmp_path / "app.js").write_text("console.log(1)")
    return tmp_path


async def test_app_serves_page_assets_and_config(static_dir):
    cfg = WebConfig(relay=LOOP_WS, stun=None)
    async with TestClient(TestServer(make_app(cfg, static_dir))) as client:
        resp = await client.get("/")
        assert resp.status == 200 and await resp.text() == "<html>page</html>"
        assert resp.headers["Cache-Control"] == "no-cache"
        resp = await client.get("/app.js?v=abc")
        assert resp.status == 200 and "javascript" in resp.headers["Content-Type"]
        resp = await client.get("/config.json")
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        assert await resp.json() == {"relay": LOOP_WS,
                                     "iceServers": [{"urls": ["stun:127.0.0.1:3478"]}]}
        resp = await client.get("/config.json", headers={"Host": "198.51.100.7:5173"})
        assert (await resp.json())["relay"].startswith("/ip4/198.51.100.7/tcp/8080/ws/")
        assert (await client.get("/missing.js")).status == 404
        assert (await client.get("/%2e%2e/%2e%2e/etc/passwd")).status in (403, 404)


def test_app_needs_a_built_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/build-web"):
        make_app(WebConfig(), tmp_path)


def test_the_committed_bundle_has_the_example_ids():
    html = (webapp.STATIC_DIR / "index.html").read_text()
    for element in ("peer", "connect", "send-section", "message", "send", "connections",
                    "multiaddrs", "output", "file", "send-file", "my-address", "copy-address",
                    "chat-python"):
        assert f'id="{element}"' in html
    assert (webapp.STATIC_DIR / "app.js").stat().st_size > 100_000


def test_display_urls(monkeypatch):
    monkeypatch.setattr(webapp, "ipv4_addresses", lambda: ["127.0.0.1", "198.51.100.7", "10.0.0.2"])
    assert display_urls("0.0.0.0", 5173) == [
        ("Local", "http://localhost:5173/"),
        ("Network", "http://198.51.100.7:5173/"),
        ("Network", "http://10.0.0.2:5173/"),
    ]
    assert display_urls("127.0.0.1", 8000) == [("Local", "http://127.0.0.1:8000/")]
    assert display_urls("localhost", 8000) == [("Local", "http://localhost:8000/")]
    assert display_urls("198.51.100.7", 80) == [("Network", "http://198.51.100.7:80/")]
    assert display_urls("::1", 80) == [("Local", "http://[::1]:80/")]


# -- command line ----------------------------------------------------------------------------

def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_web_defaults():
    args = parse("web")
    assert (args.host, args.port, args.relay, args.stun, args.json) == ("0.0.0.0", 5173, None, None, False)
    assert args.func.__name__ == "cmd_web"


def test_web_flags():
    args = parse("web", "--host", "127.0.0.1", "--port", "0", "--relay", WS,
                 "--stun", "stun:a.example:3478", "--stun", "turn:b.example:3478", "--json")
    assert (args.host, args.port, args.relay) == ("127.0.0.1", 0, [WS])
    assert stun_list(args.stun) == ["stun:a.example:3478", "turn:b.example:3478"]
    assert stun_list(parse("web", "--stun", "none").stun) == []
    assert stun_list(None) is None


@pytest.mark.parametrize("argv", [
    ["web", "--port", "http"],
    ["web", "--port", "65536"],
    ["web", "--port", "-1"],
    ["web", "--relay", "nonsense"],
    ["web", "--relay", f"/ip4/203.0.113.5/tcp/4884/p2p/{RELAY_ID}"],
    ["web", "--relay", "/ip4/203.0.113.5/tcp/8080/ws"],
    ["web", "--stun", "http://example.org"],
    ["web", "--bogus"],
    ["demo", "--relay-port", "x"],
    ["demo", "--websocket-port", "99999"],
    ["demo", "--relay", WS],
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_stun_none_cannot_be_mixed():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        stun_list(["none", "stun:a.example:3478"])


def test_demo_defaults_and_flags():
    args = parse("demo")
    assert (args.host, args.port, args.relay_port, args.websocket_port) == ("127.0.0.1", 5173, 4884, 8080)
    assert args.func.__name__ == "cmd_demo"
    args = parse("demo", "--host", "0.0.0.0", "--port", "0", "--relay-port", "0",
                 "--websocket-port", "9000", "--json")
    assert (args.host, args.port, args.relay_port, args.websocket_port, args.json) == \
        ("0.0.0.0", 0, 0, 9000, True)
