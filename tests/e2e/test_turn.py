"""The relay's TURN server as a real TURN client uses it: aioice's client (the one aiortc uses)
allocates over UDP and over TCP with credentials fetched over /p2prtc/turn-credentials/1.0.0, and
datagrams go to a UDP peer socket and back. coturn (Debian's) is the standard to match: the same
client, the same credentials (same secret, TURN REST scheme), the same checks; and a relay with
`--turn-url` hands out credentials that coturn accepts."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from aioice import stun as astun
from aioice.turn import create_turn_endpoint

from p2prtc.host import Host
from p2prtc.protocols.turn_credentials import (FETCH_TIMEOUT, credentials_for,
                                               fetch_turn_credentials)

from ..netns import lab_ip

SECRET = "turn-test-secret"
REALM = "p2prtc.test"
URL = re.compile(r"^turn:([\d.]+):(\d+)\?transport=(udp|tcp)$")
OUR_PORTS = (41000, 41099)
COTURN_PORTS = (42000, 42099)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((lab_ip(), 0))
        return s.getsockname()[1]


class Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.q: asyncio.Queue = asyncio.Queue()
        self.lost = asyncio.Event()

    def datagram_received(self, data, addr) -> None:
        self.q.put_nowait((data, addr))

    def connection_lost(self, exc) -> None:
        self.lost.set()  # aioice: after the allocation was deleted


async def start_relay(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Our relay; returns it and its stdout lines up to the last `TURN ...` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--listen-ip", lab_ip(), "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    want_turn = "--no-turn" not in args
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().rstrip("\n")
        if not line:
            raise AssertionError(f"relay exited: {(await proc.stderr.read()).decode()}")
        lines.append(line)
        if not want_turn and line.startswith("Listening on"):
            return proc, lines
        if sum(l.startswith("TURN ") for l in lines) == 2:
            return proc, lines


async def stop(proc) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


class Coturn:
    """coturn with use-auth-secret on a port of ours, files in a temp dir (nothing in /var)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="coturn-")
        self.port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen | None = None

    def urls(self) -> list[str]:
        return [f"turn:{lab_ip()}:{self.port}?transport={t}" for t in ("udp", "tcp")]

    async def start(self) -> Coturn:
        exe = shutil.which("turnserver")
        if exe is None:
            pytest.fail("coturn is missing: scripts/setup --test installs it", pytrace=False)
        ip = lab_ip()
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([
            exe, "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", ip,
            "--relay-ip", ip, "--listening-port", str(self.port),
            "--min-port", str(COTURN_PORTS[0]), "--max-port", str(COTURN_PORTS[1]),
            "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", REALM,
            "--db", os.path.join(self.dir, "turndb"), "--pidfile", os.path.join(self.dir, "pid"),
            "--log-file", "stdout", "--simple-log", "--no-software-attribute"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        await self._ready(ip)
        return self

    async def _ready(self, ip: str) -> None:
        """Until coturn answers a Binding request over UDP and accepts TCP (10 s at most)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 10
        transport, proto = await loop.create_datagram_endpoint(Queue, local_addr=(ip, 0))
        try:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"coturn exited: {self.read_log()}")
                req = astun.Message(message_method=astun.Method.BINDING,
                                    message_class=astun.Class.REQUEST)
                transport.sendto(bytes(req), (ip, self.port))
                try:
                    await asyncio.wait_for(proto.q.get(), 0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"coturn does not answer: {self.read_log()}") from None
        finally:
            transport.close()
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, self.port), 5)
        writer.close()

    def read_log(self) -> str:
        self.log.flush()
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
async def coturn():
    server = await Coturn().start()
    try:
        yield server
    finally:
        server.stop()


async def fetch(relay_line: str):
    """(credentials, seconds the fetch took) from the relay of a `Listening on` line."""
    client = Host()
    conn = await client.dial(relay_line.split(" ", 2)[2])
    try:
        t0 = time.monotonic()
        creds = await fetch_turn_credentials(client, conn)
        return creds, time.monotonic() - t0
    finally:
        await client.close()


async def relay_both_ways(url: str, username: str, password: str, port_range) -> dict:
    """Allocate at `url` with aioice, exchange 20 datagrams each way with a UDP peer socket,
    delete the allocation. Returns what was seen."""
    host, port, transport = URL.match(url).groups()
    loop = asyncio.get_running_loop()
    turn, client = await asyncio.wait_for(create_turn_endpoint(
        Queue, (host, int(port)), username, password, transport=transport), 10)
    peer_t, peer = await loop.create_datagram_endpoint(Queue, local_addr=(lab_ip(), 0))
    peer_addr = peer_t.get_extra_info("sockname")
    relayed = turn.get_extra_info("sockname")
    try:
        assert port_range[0] <= relayed[1] <= port_range[1], relayed
        out = [os.urandom(n) for n in (1, 2, 3, 4, 100, 1200) + (500,) * 14]
        for d in out:
            turn.sendto(d, peer_addr)
        got = [await asyncio.wait_for(peer.q.get(), 5) for _ in out]
        assert [d for d, _ in got] == out  # intact, in order
        assert {a for _, a in got} == {relayed}  # from the allocation's relayed address
        back = [os.urandom(n) for n in (1, 7, 1200) + (300,) * 17]
        for d in back:
            peer_t.sendto(d, relayed)
        got = [await asyncio.wait_for(client.q.get(), 5) for _ in back]
        assert [d for d, _ in got] == back
        assert {a for _, a in got} == {peer_addr}  # the client sees the peer's address
        return {"relayed": relayed, "bytes": sum(map(len, out + back)), "turn": turn,
                "client": client}
    finally:
        peer_t.close()


async def delete(seen: dict) -> None:
    """aioice's close() sends Refresh(LIFETIME=0), then tells the protocol connection_lost."""
    seen["turn"].close()
    await asyncio.wait_for(seen["client"].lost.wait(), 5)


async def metrics(port: int) -> str:
    reader, writer = await asyncio.open_connection(lab_ip(), port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    body = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    return body


async def wait_metric(port: int, pattern: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        body = await metrics(port)
        if re.search(pattern, body, re.M):
            return body
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{body}"
        await asyncio.sleep(0.05)


async def test_our_turn_and_coturn_with_the_same_credentials(coturn):
    metrics_port = free_port()
    stun_port = free_port(socket.SOCK_DGRAM)
    proc, lines = await start_relay(
        "--stun-port", str(stun_port), "--stun-alt-port", "0", "--turn-secret", SECRET,
        "--turn-realm", REALM, "--turn-min-port", str(OUR_PORTS[0]),
        "--turn-max-port", str(OUR_PORTS[1]), "--metrics-port", str(metrics_port))
    try:
        ip = lab_ip()
        # TURN shares the STUN port over UDP; TCP on the same number; `Listening on` unchanged
        assert lines[-2:] == [f"TURN on turn:{ip}:{stun_port}?transport=udp",
                              f"TURN on turn:{ip}:{stun_port}?transport=tcp"]
        assert all(l.startswith("Listening on /ip4/") for l in lines[:-2])
        creds, _ = await fetch(lines[0])
        assert creds is not None
        assert creds.urls == [l.split(" ", 2)[2] for l in lines[-2:]]
        expiry, _, peer = creds.username.partition(":")
        assert peer.startswith("12D3KooW") and abs(int(expiry) - time.time() - creds.ttl) < 5

        seen = {}
        for url in creds.urls:
            seen[url] = await relay_both_ways(url, creds.username, creds.password, OUR_PORTS)
        for url in coturn.urls():  # the same credentials at coturn
            seen[url] = await relay_both_ways(url, creds.username, creds.password, COTURN_PORTS)

        body = await wait_metric(metrics_port, r"^p2prtc_relay_turn_allocations_active 2$")
        assert re.search(r"^p2prtc_relay_turn_allocations_total 2$", body, re.M)
        ours = sum(seen[u]["bytes"] for u in creds.urls)
        relayed = int(re.search(r"^p2prtc_relay_turn_bytes_relayed_total (\d+)$", body, re.M)[1])
        assert relayed == ours

        # no open relay: a datagram from an address the client never named is dropped, counted
        udp = seen[creds.urls[0]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.sendto(b"unsolicited", udp["relayed"])
        await wait_metric(metrics_port,
                          r'^p2prtc_relay_turn_refusals_total\{reason="peer-without-permission"\} 1$')
        assert udp["client"].q.empty()

        for s in seen.values():
            await delete(s)
        await wait_metric(metrics_port, r"^p2prtc_relay_turn_allocations_active 0$")

        # credentials made with another secret: refused by both servers
        bad = credentials_for("not the secret", peer, creds.urls)
        for url in creds.urls[:1] + coturn.urls()[:1]:
            host, port, transport = URL.match(url).groups()
            with pytest.raises(astun.TransactionFailed) as e:
                await asyncio.wait_for(create_turn_endpoint(
                    Queue, (host, int(port)), bad.username, bad.password,
                    transport=transport), 10)
            assert e.value.response.attributes["ERROR-CODE"][0] == 401
        await wait_metric(metrics_port,
                          r'^p2prtc_relay_turn_refusals_total\{reason="bad-integrity"\} 1$')
    finally:
        await stop(proc)


async def test_relay_hands_out_credentials_for_an_external_coturn(coturn, monkeypatch):
    monkeypatch.setenv("P2PRTC_TURN_SECRET", SECRET)  # the secret kept out of the process list
    proc, lines = await start_relay("--stun-port", "0", *[a for u in coturn.urls()
                                                          for a in ("--turn-url", u)])
    try:
        assert lines[-2:] == [f"TURN credentials for {u}" for u in coturn.urls()]
        creds, _ = await fetch(lines[0])
        assert creds is not None and creds.urls == coturn.urls()
        for url in creds.urls:
            seen = await relay_both_ways(url, creds.username, creds.password, COTURN_PORTS)
            await delete(seen)
    finally:
        await stop(proc)


async def test_fetch_from_a_relay_without_turn_is_none_at_once():
    proc, lines = await start_relay("--stun-port", "0", "--no-turn")
    try:
        assert not any(l.startswith("TURN") for l in lines)
        creds, took = await fetch(lines[0])
        assert creds is None
        assert took < FETCH_TIMEOUT / 5  # refused in negotiation: one round trip, no timeout
    finally:
        await stop(proc)


# Two RTCPeerConnections in one Chromium page that may only use relay candidates: libwebrtc's
# TURN client (UDP or TCP to the server) against ours, a data channel carries 100 x 16 KB.
PAGE_JS = """
async ([urls, username, credential]) => {
  const cfg = {iceServers: [{urls, username, credential}], iceTransportPolicy: 'relay'};
  const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
  a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
  const dc = a.createDataChannel('x');
  const got = new Promise(res => { b.ondatachannel = e => { let n = 0, bytes = 0;
    e.channel.onmessage = m => { bytes += m.data.length; if (++n === 100) res(bytes); }; }; });
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  await new Promise((res, rej) => { dc.onopen = res;
    setTimeout(() => rej(new Error('no data channel: ICE ' + a.iceConnectionState)), 15000); });
  for (let i = 0; i < 100; i++) dc.send(String(i % 10).repeat(16000));
  const bytes = await got;
  const stats = await a.getStats(); let local = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId)
    local = stats.get(stats.get(s.selectedCandidatePairId).localCandidateId); });
  a.close(); b.close();
  return {bytes, type: local && local.candidateType, proto: local && local.relayProtocol};
}
"""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_chromium_over_our_turn(transport):
    from playwright.async_api import async_playwright

    from ..interop.jspeer import CHROMIUM, CHROMIUM_ARGS

    metrics_port = free_port()
    proc, lines = await start_relay("--stun-port", str(free_port(socket.SOCK_DGRAM)),
                                    "--metrics-port", str(metrics_port))
    try:
        creds, _ = await fetch(lines[0])
        urls = [u for u in creds.urls if u.endswith(f"transport={transport}")]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                result = await asyncio.wait_for(page.evaluate(
                    PAGE_JS, [urls, creds.username, creds.password]), 30)
            finally:
                await browser.close()
        assert result == {"bytes": 1_600_000, "type": "relay", "proto": transport}
        body = await metrics(metrics_port)
        made = int(re.search(r"^p2prtc_relay_turn_allocations_total (\d+)$", body, re.M)[1])
        assert made >= 2  # one per RTCPeerConnection
        relayed = int(re.search(r"^p2prtc_relay_turn_bytes_relayed_total (\d+)$", body, re.M)[1])
        assert relayed > 1_600_000
    finally:
        await stop(proc)


async def test_turn_on_its_own_ports_and_json_event():
    """`--stun-port 0 --turn-port P --turn-tcp-port 0`: TURN has its own UDP socket (answering
    Binding requests too) and any free TCP port; --json announces the URLs as a `turn` event."""
    import json

    udp_port = free_port(socket.SOCK_DGRAM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--listen-ip", lab_ip(), "--port", "0",
        "--stun-port", "0", "--turn-port", str(udp_port), "--turn-tcp-port", "0", "--json",
        "--turn-min-port", str(OUR_PORTS[0]), "--turn-max-port", str(OUR_PORTS[1]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        events = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
                  for _ in range(2)]
        assert [e["event"] for e in events] == ["listening", "turn"]
        urls = events[1]["urls"]
        assert events[1]["external"] is False
        assert urls[0] == f"turn:{lab_ip()}:{udp_port}?transport=udp"
        tcp_port = int(URL.match(urls[1])[2])
        assert urls[1] == f"turn:{lab_ip()}:{tcp_port}?transport=tcp" and tcp_port != 0
        creds, _ = await fetch(f"Listening on {events[0]['addrs'][0]}")
        assert creds.urls == urls
        for url in urls:
            await delete(await relay_both_ways(url, creds.username, creds.password, OUR_PORTS))
        # a plain STUN Binding request on TURN's own socket is answered
        loop = asyncio.get_running_loop()
        t, q = await loop.create_datagram_endpoint(Queue, local_addr=(lab_ip(), 0))
        try:
            t.sendto(bytes(astun.Message(message_method=astun.Method.BINDING,
                                         message_class=astun.Class.REQUEST)),
                     (lab_ip(), udp_port))
            data, _ = await asyncio.wait_for(q.q.get(), 5)
            assert astun.parse_message(data).attributes["XOR-MAPPED-ADDRESS"] == \
                t.get_extra_info("sockname")
        finally:
            t.close()
    finally:
        await stop(proc)


@pytest.mark.parametrize("args, message", [
    (["--turn-url", "turn:203.0.113.10:3478"], "--turn-url needs --turn-secret"),
    (["--turn-url", "stun:203.0.113.10", "--turn-secret", "s"], "turn: or turns: URL"),
    (["--turn-min-port", "50000", "--turn-max-port", "40000"], "min <= max"),
    (["--turn-max-allocations", "-1"], "cannot be negative"),
])
async def test_bad_turn_flags_are_one_line_and_exit_1(args, message):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    lines = [l for l in err.decode().splitlines() if l.startswith("p2prtc:")]
    assert len(lines) == 1 and message in lines[0], err.decode()


async def test_relay_on_all_interfaces():
    """Without --listen-ip (0.0.0.0) the shared socket learns per client which address it was
    reached at: the relayed address is that one, and 127.0.0.1 URLs go only to local peers."""
    stun_port = free_port(socket.SOCK_DGRAM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--port", "0", "--stun-port", str(stun_port),
        "--turn-min-port", str(OUR_PORTS[0]), "--turn-max-port", str(OUR_PORTS[1]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        lines: list[str] = []
        while sum(l.startswith("TURN on") for l in lines) < 4:  # veth and loopback, udp + tcp
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip())
        ip = lab_ip()
        line = next(l for l in lines if l.startswith(f"Listening on /ip4/{ip}/"))
        creds, _ = await fetch(line)
        assert creds.urls == [f"turn:{ip}:{stun_port}?transport=udp",
                              f"turn:{ip}:{stun_port}?transport=tcp"]
        seen = await relay_both_ways(creds.urls[0], creds.username, creds.password, OUR_PORTS)
        assert seen["relayed"][0] == ip
        await delete(seen)
    finally:
        await stop(proc)
