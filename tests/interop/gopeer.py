"""go-libp2p's webrtc-direct (v1 and v2, go-libp2p 0.52) as a subprocess: tests/interop/go/main.go,
built by tests/interop/go/build.sh (run by `scripts/setup --test`) into ~/.cache/p2prtc/bin."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

GOPEER = Path(os.environ.get("P2PRTC_GOPEER", Path.home() / ".cache" / "p2prtc" / "bin" / "gopeer"))
BUILD = Path(__file__).resolve().parent / "go" / "build.sh"


class GoPeerMissing(RuntimeError):
    pass


def gopeer_binary() -> str:
    if not os.access(GOPEER, os.X_OK):
        raise GoPeerMissing(f"{GOPEER} is missing: run {BUILD}")
    return str(GOPEER)


class GoListener:
    """`gopeer listen`: a go-libp2p webrtc-direct listener answering pings."""

    async def start(self, ip: str = "127.0.0.1") -> GoListener:
        self.proc = await asyncio.create_subprocess_exec(
            gopeer_binary(), "listen", "-ip", ip, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            err = (await self.proc.stderr.read()).decode(errors="replace")
            raise RuntimeError(f"gopeer listen failed: {err[-2000:]}")
        self.addr = json.loads(line)["addr"]
        return self

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def go_dial(addr: str, version: int, timeout: float = 40) -> dict:
    """`gopeer dial ADDR -version N`: connect, ping once; its JSON result, or raise with stderr."""
    proc = await asyncio.create_subprocess_exec(
        gopeer_binary(), "dial", addr, "-version", str(version),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise AssertionError(f"gopeer dial (v{version}) failed: {err.decode(errors='replace')[-3000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])
