"""The relays our peers are tested through: p2prtc's own (`p2prtc relay`, a subprocess as users run
it), js-libp2p's circuitRelayServer in Node, and rust-libp2p's relay-server behaviour."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ..netns import lab_ip

REPO = Path(__file__).resolve().parents[2]


class P2prtcRelay:
    """`stun_port`: 0 = no STUN server (the default here), else the UDP port of its STUN server
    (3478 is where a Python peer without --stun looks for one)."""

    kind = "p2prtc"

    def __init__(self, stun_port: int = 0) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.addrs: list[str] = []
        self.stun_port = stun_port

    async def start(self) -> P2prtcRelay:
        ip = lab_ip()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2prtc", "relay", "--listen-ip", ip, "--port", "0",
            "--websocket-port", "0", "--stun-port", str(self.stun_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        while len(self.addrs) < 2:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
            if not line:
                raise RuntimeError("p2prtc relay exited before listening")
            if line.startswith(b"Listening on "):
                self.addrs.append(line.decode().split(" ", 2)[2].strip())
        return self

    def addr(self, kind: str = "ws") -> str:
        return next(a for a in self.addrs if ("/ws/" in a) == (kind == "ws"))

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


class JsRelay:
    """js-libp2p's circuitRelayServer in Node. Default: TCP + WebSocket on the veth address,
    limits lifted. `example=True`: configured as the seed's js-libp2p-example-webrtc-private-to-
    private relay.js is (`peer.mjs --example-relay`): WebSocket on 127.0.0.1 only, identify + relay
    with only maxReservations lifted (js defaults: 2 min / 128 KiB circuits), no STUN."""

    def __init__(self, factory, example: bool = False) -> None:
        self.factory = factory
        self.example = example
        self.kind = "js-example" if example else "js"
        self.peer = None

    async def start(self) -> JsRelay:
        if self.example:
            self.peer = await self.factory(listen=["/ip4/127.0.0.1/tcp/0/ws"],
                                           extra_args=["--example-relay"], name="js-example-relay")
            return self
        ip = lab_ip()
        self.peer = await self.factory(listen=[f"/ip4/{ip}/tcp/0", f"/ip4/{ip}/tcp/0/ws"],
                                       relay=True, name="js-relay")
        return self

    def addr(self, kind: str = "ws") -> str:
        return self.peer.addr(kind)

    async def stop(self) -> None:
        await self.peer.stop()


class RustRelay:
    """rust-libp2p's relay-server behaviour (tests/interop/rust `relay`). Default: TCP +
    WebSocket, external addresses also from its listen addresses. `upstream=True`: as rust-libp2p's
    examples/relay-server runs: TCP + QUIC on one port, no WebSocket, no STUN, identify
    `/TODO/0.0.1`, `relay::Config::default()` limits, external addresses only from identify."""

    def __init__(self, factory, upstream: bool = False) -> None:
        self.factory = factory
        self.upstream = upstream
        self.kind = "rust-upstream" if upstream else "rust"
        self.proc = None

    async def start(self) -> RustRelay:
        if self.upstream:
            self.proc = await self.factory(mode="relay", listen_ip=lab_ip(), quic=True,
                                           extra=["--observed-addrs-only"],
                                           name="rust-upstream-relay")
            return self
        self.proc = await self.factory(mode="relay", listen_ip=lab_ip(), websocket_port=0,
                                       quic=False)
        return self

    def addr(self, kind: str = "ws") -> str:
        return self.proc.addr(kind)

    async def stop(self) -> None:
        await self.proc.stop()
