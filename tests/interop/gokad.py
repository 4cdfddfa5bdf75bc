"""go-libp2p-kad-dht v0.42.2 (on go-libp2p 0.52, TCP) as a subprocess: tests/interop/go/kad/
main.go, built by tests/interop/go/build.sh (run by `scripts/setup --test`) into
~/.cache/p2prtc/bin/gokad. One JSON command per stdin line, one JSON reply per stdout line."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

GOKAD = Path(os.environ.get("P2PRTC_GOKAD", Path.home() / ".cache" / "p2prtc" / "bin" / "gokad"))
BUILD = Path(__file__).resolve().parent / "go" / "build.sh"


class GoKadMissing(RuntimeError):
    pass


def gokad_binary() -> str:
    if not os.access(GOKAD, os.X_OK):
        raise GoKadMissing(f"{GOKAD} is missing: run {BUILD}")
    return str(GOKAD)


class GoKad:
    """A go DHT node: `await GoKad().start("server")`, then `await node.cmd("get", key=...)`."""

    proc: asyncio.subprocess.Process
    peer: str
    addr: str

    def argv(self, mode: str) -> list[str]:
        return [gokad_binary(), "-mode", mode]

    async def start(self, mode: str = "server") -> GoKad:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(mode), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        hello = await self._line(30)
        self.peer, self.addr = hello["peer"], hello["addr"]
        return self

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            err = (await self.proc.stderr.read()).decode(errors="replace")
            raise RuntimeError(f"gokad ended: {err[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def cmd(self, cmd: str, **args: str) -> dict[str, Any]:
        """Run one command (its own timeout is 20 s); the reply, `ok` False with `error`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(30)

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
