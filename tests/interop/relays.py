"""The relays our peers are tested through: p2prtc's own (`p2prtc relay`, a subprocess as users run
it), js-libp2p's circuitRelayServer in Node, and rust-libp2p's relay-server behaviour."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ..netns import lab_ip

REPO = Path(__file__).resolve().parents[2]


class P2prtcRelay:
    kind = "p2prtc"

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.addrs: list[str] = []

    async def start(self) -> "P2prtcRelay":
        ip = lab_ip()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2prtc", "relay", "--listen-ip", ip, "--port", "0",
            "--websocket-port", "0", "--stun-port", "0",
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
    kind = "js"

    def __init__(self, factory) -> None:
        self.factory = factory
        self.peer = None

    async def start(self) -> "JsRelay":
        ip = lab_ip()
        self.peer = await self.factory(listen=[f"/ip4/{ip}/tcp/0", f"/ip4/{ip}/tcp/0/ws"],
                                       relay=True, name="js-relay")
        return self

    def addr(self, kind: str = "ws") -> str:
        return self.peer.addr(kind)

    async def stop(self) -> None:
        await self.peer.stop()


class RustRelay:
    """rust-libp2p's relay-server behaviour plus WebSocket (tests/interop/rust `relay`)."""

    kind = "rust"

    def __init__(self, factory) -> None:
        self.factory = factory
        self.proc = None

    async def start(self) -> "RustRelay":
        self.proc = await self.factory(mode="relay", listen_ip=lab_ip(), websocket_port=0,
                                       quic=False)
        return self

    def addr(self, kind: str = "ws") -> str:
        return self.proc.addr(kind)

    async def stop(self) -> None:
        await self.proc.stop()
