"""Drive a peer process (js in Node, rust, our own CLI) over a JSON-lines control protocol.

The peer prints one JSON object per line on stdout:
  {"event": "ready", "peerId": "...", "addrs": ["/ip4/127.0.0.1/tcp/1234/p2p/..."]}
  {"event": "<name>", ...}                       any other event
  {"id": N, "ok": true, ...} / {"id": N, "ok": false, "error": "..."}   replies to commands
and reads commands as JSON lines on stdin: {"id": N, "cmd": "<name>", ...arguments}.
Stderr goes to a log file so a failing test can show it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tempfile
from collections import deque
from typing import Any


class PeerProcessError(RuntimeError):
    pass


class ControlledProcess:
    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 name: str = "peer") -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: deque[dict] = deque()
        self._event_signal = asyncio.Condition()
        self._reader: asyncio.Task | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.log_path = self._log.name  # the process's stderr
        self.ready: dict[str, Any] = {}

    async def start(self, timeout: float = 60) -> dict[str, Any]:
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._log, env=env, cwd=self.cwd, limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read_stdout())
        self.ready = await self.wait_event("ready", timeout=timeout)
        return self.ready

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not a control line (a library printing): ignore
            if not isinstance(msg, dict):
                continue
            if "id" in msg and "event" not in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut and not fut.done():
                    fut.set_result(msg)
                continue
            async with self._event_signal:
                self._events.append(msg)
                self._event_signal.notify_all()
        err = PeerProcessError(f"{self.name} exited (code {self.proc.returncode}); log:\n{self.log_tail()}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        async with self._event_signal:
            self._event_signal.notify_all()

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self._log.name, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    async def wait_event(self, name: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        """Wait for (and consume) the first event with this name whose fields equal `match`."""

        def find() -> dict | None:
            for ev in self._events:
                if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                    self._events.remove(ev)
                    return ev
            return None

        async def waiter() -> dict:
            async with self._event_signal:
                while True:
                    ev = find()
                    if ev is not None:
                        return ev
                    if self._reader is None or self._reader.done():
                        raise PeerProcessError(
                            f"{self.name} ended before event {name!r}; log:\n{self.log_tail()}")
                    await self._event_signal.wait()

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise PeerProcessError(
                f"{self.name}: no {name!r} event within {timeout}s; log:\n{self.log_tail()}") from None

    async def call(self, cmd: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        """Send a command; return its reply, raising PeerProcessError if it failed."""
        assert self.proc and self.proc.stdin
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        self.proc.stdin.write((json.dumps({"id": msg_id, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise PeerProcessError(
                f"{self.name}: {cmd} got no reply within {timeout}s; log:\n{self.log_tail()}") from None
        if not reply.get("ok"):
            raise PeerProcessError(f"{self.name}: {cmd} failed: {reply.get('error')}")
        return reply

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> ControlledProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
