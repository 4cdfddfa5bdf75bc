"""`p2prtc nat` and the relay's RFC 5780 flags as users run them (in the test's own network
namespace, so the default STUN ports 3478/3479 are free; loopback: no NAT to find, but the
filtering the server lets us measure)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

from .test_relay_cli import free_port, read_listening, start_relay, stop


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_nat_via_relay_multiaddr_with_a_second_ip():
    relay = await start_relay("--listen-ip", "127.0.0.1", "--port", str(free_port()),
                              "--stun-alt-ip", "127.0.0.2")
    try:
        line = (await read_listening(relay, 1))[0]
        addr = line.split()[-1]
        rc, out, err = await run_cli("nat", addr)
        assert rc == 0, err
        assert "not behind a NAT" in out and "(endpoint-independent filtering)" in out
        assert "STUN server 127.0.0.1:3478" in out
        rc, out, err = await run_cli("nat", addr, "--json")
        assert rc == 0, err
        (obj,) = [json.loads(x) for x in out.splitlines()]
        assert obj["type"] == "public" and obj["mapping"] == "none"
        assert obj["filtering"] == "endpoint-independent"
        assert obj["public"].startswith("127.0.0.1:") and obj["server"] == "127.0.0.1:3478"
    finally:
        await stop(relay)


async def test_nat_with_alt_port_disabled_and_explicit():
    stun_port = free_port(socket.SOCK_DGRAM)
    relay = await start_relay("--listen-ip", "127.0.0.1", "--port", str(free_port()),
                              "--stun-port", str(stun_port), "--stun-alt-port", "0")
    try:
        await read_listening(relay, 1)
        rc, out, err = await run_cli("nat", f"stun:127.0.0.1:{stun_port}", "--json")
        assert rc == 0, err
        obj = json.loads(out)
        assert obj["filtering"] == "unknown" and "OTHER-ADDRESS" in obj["error"]
    finally:
        await stop(relay)
    alt = free_port(socket.SOCK_DGRAM)
    relay = await start_relay("--listen-ip", "127.0.0.1", "--port", str(free_port()),
                              "--stun-port", str(stun_port), "--stun-alt-port", str(alt))
    try:
        await read_listening(relay, 1)
        rc, out, err = await run_cli("nat", f"stun:127.0.0.1:{stun_port}", "--json")
        assert rc == 0, err
        assert json.loads(out)["filtering"] == "port-independent"
    finally:
        await stop(relay)


async def test_nat_without_answer_fails_in_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        rc, out, err = await run_cli("nat", f"stun:127.0.0.1:{port}")
        took = time.monotonic() - t0
    assert rc == 1 and out == ""
    assert err.strip().count("\n") == 0
    assert f"no answer from the STUN server at 127.0.0.1:{port}" in err
    assert took < 10  # interpreter start-up included; the probe itself is bounded at 1.4 s
    rc, out, err = await run_cli("nat", "stun:nowhere:notaport")
    assert rc == 1 and err.strip().count("\n") == 0


def test_relay_flags_documented_and_checked():
    out = subprocess.run([sys.executable, "-m", "p2prtc", "relay", "--help"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "--stun-alt-port" in out and "--stun-alt-ip" in out
    proc = subprocess.run([sys.executable, "-m", "p2prtc", "relay", "--stun-alt-ip", "127.0.0.2"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "--listen-ip" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
