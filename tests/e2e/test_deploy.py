"""Deploying on the internet, as users run the commands: the relay's WebSocket over TLS
(`--wss-port`, `/tls/ws` lines, `/dns4/NAME` with --announce NAME), Python peers that trust a CA
given with --tls-ca, the `--web-url` link, `--log-format json`, and docs/deploy's Prometheus and
Grafana files against the relay's real /metrics. Real TLS: a CA made at test time (tests/tlsca.py).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import aiohttp
import pytest

from ..netns import lab_ip
from ..tlsca import TestCA
from .webpage import REPO, Cli, free_port, run_cli


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


async def start_tls_relay(ca: TestCA, *extra: str, name: str = "relay") -> Cli:
    ip = lab_ip()
    leaf = ca.issue("relay", [ip, "relay.test", "127.0.0.1"])
    relay = await Cli("relay", "--port", str(free_port(ip)), "--wss-port", str(free_port(ip)),
                      "--stun-port", str(free_port(ip, socket.SOCK_DGRAM)), "--listen-ip", ip,
                      "--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key), *extra,
                      name=name).start()
    return relay


async def test_relay_serves_tls_ws_and_python_peers_chat_through_it(ca):
    relay = await start_tls_relay(ca, "--json", "--log-format", "json", "-v")
    listener = dialer = None
    try:
        ev = await relay.wait_event("listening")
        tls = [a for a in ev["addrs"] if "/tls/ws/" in a]
        assert len(tls) == 1 and re.fullmatch(
            rf"/ip4/{re.escape(lab_ip())}/tcp/\d+/tls/ws/p2p/12D3KooW\w+", tls[0]), ev["addrs"]
        web_url = "https://chat.test/"
        listener = await Cli("listen", tls[0], "--tls-ca", str(ca.ca_pem), "--json",
                             "--stun", "none", "--web-url", web_url, name="listener").start()
        lev = await listener.wait_event("listening")
        mine = next(a for a in lev["browser_addrs"] if "/tls/ws/" in a)
        # the link dials the address an https page can use: through /tls/ws
        assert lev["link"] == f"https://chat.test/#/dial/{mine}"
        dialer = await Cli("dial", mine, "--tls-ca", str(ca.ca_pem), "--json", "--stun", "none",
                           name="dialer").start()
        await dialer.wait_event("connected", transport="webrtc", direct=True)
        await dialer.send_line("hello over wss")
        await listener.wait_event("message", text="hello over wss")
    finally:
        for p in (dialer, listener):
            if p is not None:
                await p.close()
        assert await relay.interrupt() == 0
    # --log-format json: every stderr line is one JSON object
    lines = [line for line in relay.stderr_text().splitlines()
             if line and not line.startswith("Local peer id:")]
    assert lines, "no log lines with -v"
    docs = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any(d["logger"].startswith("p2prtc") for d in docs)


async def test_announced_name_is_printed_as_dns4_tls_ws(ca):
    relay = await start_tls_relay(ca, "--announce", "relay.test")
    try:
        line = await relay.wait_line(r"^Listening on /dns4/relay\.test/tcp/\d+/tls/ws/p2p/")
        addr = line.string.split(" ", 2)[2]
        # no CA given: the system store does not know our test CA
        rc, out, err = await run_cli("dial", addr.replace("/dns4/relay.test", f"/ip4/{lab_ip()}")
                                     + "/p2p-circuit/webrtc/p2p/"
                                     "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
                                     "--stun", "none", timeout=40)
        assert rc == 1 and "certificate verify failed" in err, (rc, out, err)
    finally:
        assert await relay.interrupt() == 0


async def test_tls_flags_are_checked(ca, tmp_path):
    rc, _out, err = await run_cli("relay", "--wss-port", "0", "--stun-port", "0")
    assert rc == 1 and "--wss-port needs --tls-cert FILE and --tls-key FILE" in err
    bad = tmp_path / "bad.pem"
    bad.write_text("nope\n")
    rc, _out, err = await run_cli("relay", "--wss-port", "0", "--stun-port", "0",
                                  "--tls-cert", str(bad), "--tls-key", str(bad))
    assert rc == 1 and "cannot load the TLS certificate" in err
    rc, _out, err = await run_cli("listen", "/ip4/127.0.0.1/tcp/1/p2p/"
                                  "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
                                  "--web-url", "chat.test")
    assert rc == 1 and "not an http(s) URL" in err


# -- deploy/: systemd units, Prometheus, Grafana ------------------------------------------------

DEPLOY = REPO / "deploy"


def exec_start(unit: Path) -> list[str]:
    """The `p2prtc ...` arguments of a unit's ExecStart (continuation lines joined)."""
    text = unit.read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    argv = line.split("=", 1)[1].split()
    assert argv[0].endswith("/p2prtc"), argv
    return argv[1:]


def test_units_use_flags_the_commands_have():
    from p2prtc.cli import build_parser

    parser = build_parser()
    relay = parser.parse_args(exec_start(DEPLOY / "p2prtc-relay.service"))
    assert relay.func.__name__ == "cmd_relay" and relay.log_format == "json"
    assert relay.wss_port and relay.tls_cert.endswith("fullchain.pem") and relay.identity
    web = parser.parse_args(exec_start(DEPLOY / "p2prtc-web.service"))
    assert web.func.__name__ == "cmd_web" and web.tls_cert and web.log_format == "json"
    # the page's relay is the relay's wss address on the port the relay unit opens
    assert all(f"/tcp/{relay.wss_port}/tls/ws/" in r for r in web.relay), web.relay
    # the ports docs/deploy.md says to open are the ones the units use
    doc = (REPO / "docs" / "deploy.md").read_text()
    for port in (relay.wss_port, relay.port, relay.webrtc_port, relay.stun_port, web.port,
                 relay.metrics_port):
        assert re.search(rf"^\| {port} \| ", doc, re.M), f"port {port} not in the table"


def metric_names(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? ",
                                            exposition, re.M)}


async def test_dashboard_and_scrape_config_match_the_relays_metrics(ca):
    ip = lab_ip()
    metrics_port = free_port(ip)
    relay = await start_tls_relay(ca, "--metrics-port", str(metrics_port), "--json")
    try:
        await relay.wait_event("listening")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{ip}:{metrics_port}/metrics") as r:
                assert r.status == 200
                text = await r.text()
                served = metric_names(text)
    finally:
        assert await relay.interrupt() == 0
    assert "p2prtc_relay_circuits_active" in served, served
    # the certificate's expiry, as Unix time (tests/tlsca.py issues for one day)
    expiry = float(re.search(r"^p2prtc_relay_tls_certificate_expiry_timestamp_seconds (\d+)$",
                             text, re.M).group(1))
    import time

    assert 0.9 * 86400 < expiry - time.time() <= 86400, expiry

    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in re.findall(r"\b(p2prtc_[a-z0-9_]+)\b", e)}
    assert used and not used - served, f"dashboard uses metrics the relay lacks: {used - served}"
    # every relay metric family is on the dashboard (a new metric needs a panel)
    assert not {n for n in served if n.startswith("p2prtc_")} - used, served - used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))

    scrape = (DEPLOY / "prometheus.yml").read_text()
    job = re.search(r"job_name:\s*(\S+)", scrape).group(1)
    assert all(f'job="{job}"' in e for e in exprs if "p2prtc_" in e or "up{" in e)
    assert re.search(r"metrics_path:\s*/metrics\b", scrape)
    unit_port = exec_start(DEPLOY / "p2prtc-relay.service")
    unit_port = unit_port[unit_port.index("--metrics-port") + 1]
    assert re.search(rf'targets: \["127\.0\.0\.1:{unit_port}"\]', scrape)


async def test_dial_takes_a_link(ca):
    """`p2prtc dial <link>`: the same link the page shows and `listen --web-url` prints."""
    relay = await start_tls_relay(ca, "--json")
    listener = dialer = None
    try:
        ev = await relay.wait_event("listening")
        tcp = next(a for a in ev["addrs"] if "/ws/" not in a)
        listener = await Cli("listen", tcp, "--json", "--stun", "none", "--tls-ca",
                             str(ca.ca_pem), "--web-url", "https://chat.test/",
                             name="listener").start()
        link = (await listener.wait_event("listening"))["link"]
        dialer = await Cli("dial", link, "--tls-ca", str(ca.ca_pem), "--json", "--stun", "none",
                           name="dialer").start()
        await dialer.wait_event("connected", transport="webrtc", direct=True)
        await dialer.send_line("via a link")
        await listener.wait_event("message", text="via a link")
    finally:
        for p in (dialer, listener):
            if p is not None:
                await p.close()
        assert await relay.interrupt() == 0
