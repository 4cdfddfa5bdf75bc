"""Processes the lab runs inside its namespaces, each speaking JSON lines on stdout."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .netns import LabError, exec_argv

log = logging.getLogger(__name__)

STOP_GRACE = 5.0

# One JSON line of an agent's stdout, decoded (our own agents write them; read by key).
LabEvent = dict[str, Any]


class LabProcess:
    """`ip netns exec NS argv...` with stdout parsed as JSON events; stderr goes to NAME.log and
    the events to NAME.events.jsonl in the log directory."""

    def __init__(self, name: str, ns: str, argv: list[str], log_dir: str,
                 on_event: Callable[[str, LabEvent], None] | None = None) -> None:
        self.name = name
        self.ns = ns
        self.argv = argv
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.on_event = on_event
        self.events: list[LabEvent] = []
        self._arrived: dict[int, float] = {}  # id(event) -> time.monotonic() when it was read
        self._cpu: float | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._cond = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._eof = False

    async def start(self) -> LabProcess:
        self._log = open(self.log_path, "wb")
        self._events_log = open(self.log_path[:-4] + ".events.jsonl", "wb")
        self.proc = await asyncio.create_subprocess_exec(
            *exec_argv(self.ns, self.argv), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=self._log, start_new_session=True,
            limit=1 << 20)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                self._events_log.write(line)
                self._events_log.flush()
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = {"event": "output", "text": line.decode(errors="replace").rstrip()}
                if not isinstance(ev, dict):
                    continue
                self.events.append(ev)
                self._arrived[id(ev)] = time.monotonic()
                if self.on_event is not None:
                    try:
                        self.on_event(self.name, ev)
                    except Exception:  # a broken observer must not stop the reading
                        log.exception("%s: on_event failed for %s", self.name, ev.get("event"))
                async with self._cond:
                    self._cond.notify_all()
        finally:
            self._eof = True
            async with self._cond:
                self._cond.notify_all()

    def arrived(self, ev: LabEvent) -> float:
        """When the lab read event `ev` of this process (time.monotonic()): one clock for the
        events of every process, whatever their own "t"."""
        return self._arrived[id(ev)]

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process (from /proc while it runs; afterwards the last
        value read, which kill() and stop() read just before the end)."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                with open(f"/proc/{self.proc.pid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                self._cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return self._cpu

    async def kill(self) -> None:
        """SIGKILL the process (its whole session) and wait for it: a crash, no cleanup."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.cpu_seconds()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.proc.wait()

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def wait_event(self, names: str | tuple[str, ...] | None, timeout: float,
                         pred: Callable[[LabEvent], bool] = lambda ev: True) -> LabEvent:
        """The first event (seen so far or to come) named one of `names` that matches `pred`;
        `names` None: any JSON line (go's and rust's DHT nodes answer without an "event")."""
        if names is None:
            names = ("any line",)
            any_name = True
        else:
            any_name = False
            if isinstance(names, str):
                names = (names,)
        seen = 0

        def find() -> LabEvent | None:
            nonlocal seen
            for ev in self.events[seen:]:
                seen += 1
                if (any_name or ev.get("event") in names) and pred(ev):
                    return ev
            return None

        async def wait() -> LabEvent:
            async with self._cond:
                while True:
                    ev = find()
                    if ev is not None:
                        return ev
                    if self._eof:
                        rc = await self.proc.wait() if self.proc is not None else None
                        fatal = [e for e in self.events if e.get("event") == "error"]
                        why = fatal[-1].get("reason") if fatal else self.log_tail(5) or f"exit {rc}"
                        raise LabError(f"{self.name} ended (exit {rc}) before {'/'.join(names)}: "
                                       f"{why}")
                    await self._cond.wait()

        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation (Ctrl-C) that
            # arrives as the awaited event does.
            async with asyncio.timeout(timeout):
                return await wait()
        except TimeoutError:
            raise LabError(f"{self.name}: no {'/'.join(names)} within {timeout:.0f} s; "
                           f"log {self.log_path}") from None

    async def send_line(self, text: str) -> None:
        """Write one line to the process's stdin; LabError (with its last error) if it ended."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            if self.proc.stdin.is_closing():
                raise ConnectionResetError("stdin closed")
            self.proc.stdin.write(text.encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as e:
            try:
                rc = await asyncio.wait_for(self.proc.wait(), STOP_GRACE)
            except TimeoutError:
                rc = None
            fatal = [ev for ev in self.events if ev.get("event") == "error"]
            why = fatal[-1].get("reason") if fatal else self.log_tail(5) or str(e)
            raise LabError(f"{self.name} ended (exit {rc}): {why}") from None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.cpu_seconds()
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), STOP_GRACE)
            except (ProcessLookupError, TimeoutError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._log.close()
        self._events_log.close()


class ProcessGroup:
    def __init__(self, on_event: Callable[[str, LabEvent], None] | None = None,
                 keep_logs: str | None = None) -> None:
        self.on_event = on_event
        self.log_dir = keep_logs or tempfile.mkdtemp(prefix="p2plab-logs-")
        os.makedirs(self.log_dir, exist_ok=True)
        self.procs: list[LabProcess] = []

    async def start(self, name: str, ns: str, argv: list[str]) -> LabProcess:
        p = LabProcess(name, ns, argv, self.log_dir, self.on_event)
        self.procs.append(p)
        await p.start()
        return p

    async def stop_all(self) -> None:
        await asyncio.gather(*(p.stop() for p in reversed(self.procs)), return_exceptions=True)


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def stop_on_signals(mode: str, stop: asyncio.Event) -> None:
    """For a lab agent (run inside a namespace): SIGINT/SIGTERM set `stop`; a dialing agent's
    main task is also cancelled, again every 0.5 s until it ends (a cancellation racing with a
    finishing future can be lost in Python 3.11)."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal() -> None:
        stop.set()
        if mode == "dial" and main_task is not None and not main_task.done():
            main_task.cancel()
            loop.call_later(0.5, on_signal)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
