"""go-libp2p's AutoNAT v2 (p2p/protocol/autonatv2, go-libp2p 0.52) as a subprocess:
tests/interop/go/autonat/main.go, built by tests/interop/go/autonat/build.sh (run by
tests/interop/go/build.sh, so by `scripts/setup --test`) into ~/.cache/p2prtc/bin/autonatpeer."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

BINARY = Path(os.environ.get("P2PRTC_AUTONATPEER",
                             Path.home() / ".cache" / "p2prtc" / "bin" / "autonatpeer"))
BUILD = Path(__file__).resolve().parent / "go" / "autonat" / "build.sh"


def autonatpeer_binary() -> str:
    if not os.access(BINARY, os.X_OK):
        raise FileNotFoundError(f"{BINARY} is missing: run {BUILD}")
    return str(BINARY)


class GoAutoNATServer:
    """`autonatpeer server`: a go-libp2p host serving /libp2p/autonat/2/dial-request."""

    async def start(self, ip: str = "127.0.0.1") -> GoAutoNATServer:
        self.proc = await asyncio.create_subprocess_exec(
            autonatpeer_binary(), "server", "-ip", ip, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            err = (await self.proc.stderr.read()).decode(errors="replace")
            raise RuntimeError(f"autonatpeer server failed: {err[-2000:]}")
        self.addr: str = json.loads(line)["addr"]
        return self

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def go_check(server: str, *, ip: str = "127.0.0.1", check: list[str] | None = None,
                   dial_data: bool = True, timeout: float = 40) -> dict[str, object]:
    """`autonatpeer client SERVER`: go's client asks our server; its JSON result."""
    args = [autonatpeer_binary(), "client", server, "-ip", ip, f"-dialdata={str(dial_data).lower()}"]
    for c in check or []:
        args += ["-check", c]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise AssertionError(f"autonatpeer client failed: {err.decode(errors='replace')[-3000:]}")
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result
