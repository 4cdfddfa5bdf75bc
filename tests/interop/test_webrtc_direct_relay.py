"""`p2prtc relay --webrtc-port P` as users run it: it prints its webrtc-direct address (with
certhash and /p2p/<id>) among its `Listening on` lines, the address survives restarts with the
same key (seed or key file), and a Python peer dials it and pings it."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from p2prtc.multiaddr import Multiaddr

from ..netns import lab_ip

pytestmark = pytest.mark.interop

DIRECT_LINE = re.compile(r"^Listening on (/ip4/[^ ]+/udp/(\d+)/webrtc-direct/certhash/(u[A-Za-z0-9_-]+)"
                         r"/p2p/(12D3KooW\w+))$")


class RelayCli:
    """`python -m p2prtc relay ...` in a subprocess; `addrs` are its `Listening on` lines."""

    def __init__(self, *args: str, ip: str | None = None) -> None:
        self.args = args
        self.ip = ip
        self.proc: asyncio.subprocess.Process | None = None
        self.addrs: list[str] = []

    async def start(self) -> RelayCli:
        ip = self.ip or lab_ip()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2prtc", "relay", "--listen-ip", ip, "--port", "0",
            "--stun-port", "0", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        while not any("/webrtc-direct/" in a for a in self.addrs):
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                err = (await self.proc.stderr.read()).decode(errors="replace")[-2000:]
                raise RuntimeError(f"p2prtc relay exited before listening on webrtc-direct:\n{err}")
            if line.startswith(b"Listening on "):
                self.addrs.append(line.decode().split(" ", 2)[2].strip())
        return self

    @property
    def direct_line(self) -> str:
        return f"Listening on {self.direct_addr}"

    @property
    def direct_addr(self) -> str:
        return next(a for a in self.addrs if "/webrtc-direct/" in a)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def relay_cli():
    started: list[RelayCli] = []

    async def start(*args: str, ip: str | None = None) -> RelayCli:
        r = RelayCli(*args, ip=ip)
        started.append(r)
        return await r.start()

    yield start
    for r in started:
        await r.stop()


async def test_relay_prints_webrtc_direct_address_and_answers(relay_cli, host_factory):
    relay = await relay_cli("--webrtc-port", "0", "--secret-key-seed", "0")
    m = DIRECT_LINE.match(relay.direct_line)
    assert m, relay.addrs
    assert m.group(4) == "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    assert int(m.group(2)) > 0
    Multiaddr(relay.direct_addr)  # parses

    client = await host_factory(listen=[])
    conn = await client.dial(relay.direct_addr)
    assert conn.transport == "webrtc-direct"
    rtts = await client.ping_service.ping(conn, count=3)
    assert max(rtts) < 1.0
    info = await client.identify.identified(conn)
    assert any("/webrtc-direct/" in str(a) for a in info.addrs)


async def test_same_key_same_address_across_restarts(relay_cli, tmp_path):
    port = "0"  # any free port: what must not change is the certhash (and the peer id)
    first = await relay_cli("--webrtc-port", port, "--secret-key-seed", "7")
    await first.stop()
    second = await relay_cli("--webrtc-port", port, "--secret-key-seed", "7")
    other = await relay_cli("--webrtc-port", port, "--secret-key-seed", "8")
    h = lambda r: DIRECT_LINE.match(r.direct_line).group(3)  # noqa: E731
    assert h(first) == h(second) and h(first) != h(other)

    key = tmp_path / "relay.key"
    a = await relay_cli("--webrtc-port", port, "--identity", str(key))
    await a.stop()
    b = await relay_cli("--webrtc-port", port, "--identity", str(key))
    assert h(a) == h(b)
    assert DIRECT_LINE.match(a.direct_line).group(4) == DIRECT_LINE.match(b.direct_line).group(4)
