"""`p2prtc relay` as users run it: the seed's exact command line, `Listening on` lines in the
format of rust's relay-server, --announce in printed lines, identify and reservations, the STUN
server, /metrics, and a clean exit on SIGTERM with clients connected."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time

import pytest

from p2prtc.host import Host
from p2prtc.identity import PeerId
from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.stun import MAGIC_COOKIE
from p2prtc.transports.circuit import CircuitListener

from ..netns import lab_ip

SEED0 = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
# What rust-libp2p's relay-server prints (examples/relay-server, and PR #6030 for ws/webrtc).
RUST_LINE = re.compile(
    r"^Listening on /ip[46]/[^/]+/(tcp/\d+(/ws)?|udp/\d+/webrtc-direct/certhash/u[\w-]+)/p2p/12D3KooW\w+$")


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((lab_ip(), 0))
        return s.getsockname()[1]


async def start_relay(*args: str):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return proc


async def read_listening(proc, n: int) -> list[str]:
    lines = []
    while len(lines) < n:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line:
            err = (await proc.stderr.read()).decode()
            raise AssertionError(f"relay exited: {err}")
        lines.append(line.decode().rstrip("\n"))
    return lines


async def stop(proc) -> float:
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(proc.wait(), 10)
    assert rc == 0, (await proc.stderr.read()).decode()
    return time.perf_counter() - t0


async def test_the_seeds_command_line():
    """`--port 4884 --secret-key-seed 0 --websocket-port 8080 --webrtc-port 8081`, verbatim (the
    test runs in its own network namespace, so the ports are free)."""
    proc = await start_relay("--port", "4884", "--secret-key-seed", "0", "--websocket-port",
                             "8080", "--webrtc-port", "8081")
    try:
        lines: list[str] = []  # one line per address per interface (0.0.0.0 is expanded)
        while not any("/webrtc-direct/" in l for l in lines):
            lines += await read_listening(proc, 1)
        for line in lines:
            assert RUST_LINE.match(line), line
            assert line.endswith(f"/p2p/{SEED0}")
        joined = "\n".join(lines)
        assert "/tcp/4884/p2p/" in joined and "/tcp/8080/ws/p2p/" in joined
        assert "/udp/8081/webrtc-direct/certhash/" in joined
    finally:
        await stop(proc)


async def test_announce_identify_reservation_stun_metrics_and_sigterm():
    ip = lab_ip()
    tcp, ws, metrics_port, stun_port = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    proc = await start_relay(
        "--listen-ip", ip, "--port", str(tcp), "--websocket-port", str(ws),
        "--secret-key-seed", "1", "--announce", "203.0.113.50", "--metrics-port", str(metrics_port),
        "--stun-port", str(stun_port))
    client = Host()
    try:
        lines = await read_listening(proc, 2)
        seed1 = "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"
        assert lines == [f"Listening on /ip4/203.0.113.50/tcp/{tcp}/p2p/{seed1}",
                         f"Listening on /ip4/203.0.113.50/tcp/{ws}/ws/p2p/{seed1}"]

        # the announced address is what identify and reservations carry
        relay_addr = Multiaddr(f"/ip4/{ip}/tcp/{tcp}/p2p/{seed1}")
        conn = await client.dial(relay_addr)
        info = await client.identify.identified(conn)
        assert Multiaddr(f"/ip4/203.0.113.50/tcp/{tcp}") in info.addrs
        await client.listen(relay_addr.encapsulate("/p2p-circuit"))
        rsv = await client.listeners(CircuitListener)[0].reserved(10)
        assert rsv.relay == PeerId.from_string(seed1)
        assert Multiaddr(f"/ip4/203.0.113.50/tcp/{tcp}/p2p/{seed1}") in rsv.addrs

        # STUN answers with our address and port
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
            s.setblocking(False)
            txid = b"0123456789ab"
            await loop.sock_sendto(s, b"\x00\x01\x00\x00" + MAGIC_COOKIE.to_bytes(4, "big") + txid,
                                   (ip, stun_port))
            data = await asyncio.wait_for(loop.sock_recv(s, 2048), 5)
            port = s.getsockname()[1]
        assert data[:2] == b"\x01\x01" and data[8:20] == txid
        xport = (port ^ (MAGIC_COOKIE >> 16)).to_bytes(2, "big")
        assert xport in data  # XOR-MAPPED-ADDRESS carries our port

        # metrics
        reader, writer = await asyncio.open_connection(ip, metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 5)).decode()
        writer.close()
        assert "p2prtc_relay_reservations_active 1" in body
        assert re.search(r"^p2prtc_relay_connections_active 1$", body, re.M)

        # SIGTERM with a client connected: exits 0, promptly
        took = await stop(proc)
        assert took < 5, f"shutdown took {took:.1f} s"
        await asyncio.wait_for(conn.wait_closed(), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.close()


@pytest.mark.parametrize("args, message", [
    (["--secret-key-seed", "256"], "between 0 and 255"),
    (["--port", "x"], "invalid int value"),
    (["--reservation-rate-per-ip", "5"], "N/SECONDS"),
])
async def test_bad_flags_exit_2(args, message):
    proc = await start_relay(*args)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert message in err.decode()


async def test_port_in_use_is_one_line_and_exit_1():
    ip = lab_ip()
    with socket.socket() as s:
        s.bind((ip, 0))
        s.listen()
        port = s.getsockname()[1]
        proc = await start_relay("--listen-ip", ip, "--port", str(port), "--stun-port", "0")
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    lines = [l for l in err.decode().splitlines() if l.startswith("p2prtc:")]
    assert lines and "cannot listen" in lines[0], err.decode()


async def test_use_ipv6_listens_on_both_families_and_serves_over_ipv6():
    tcp, ws, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    proc = await start_relay("--use-ipv6", "--port", str(tcp), "--websocket-port", str(ws),
                             "--webrtc-port", str(udp), "--stun-port", str(udp + 1 if udp < 65535 else 0))
    client = Host()
    try:
        lines: list[str] = []
        while not any(l.startswith("Listening on /ip6/") and "/webrtc-direct/" in l for l in lines):
            lines += await read_listening(proc, 1)
        six = next(l for l in lines if l.startswith(f"Listening on /ip6/::1/tcp/{tcp}/p2p/"))
        conn = await client.dial(six.split(" ", 2)[2])
        assert conn.remote_addr.has("ip6")
        assert (await client.ping_service.ping(conn))[0] < 1
    finally:
        if proc.returncode is None:
            await stop(proc)
        await client.close()
