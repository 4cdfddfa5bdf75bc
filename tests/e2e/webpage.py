"""Helpers for end-to-end tests of the browser app: `p2prtc` commands as subprocesses, Chromium
pages of the app driven through its UI (element ids and output lines of the js example app).

Chromium's launch flags come from the interop harness (tests/interop/jspeer.py); every page gets
a fresh context with microphone/camera granted (see shared/TESTING.md: without it Chromium may
gather no ICE candidates).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..interop.jspeer import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
# The interpreter of the `p2prtc` commands: this one, or (scripts/check-wheel) a fresh venv's
# with the built wheel installed.
PYTHON = os.environ.get("P2PRTC_PYTHON", sys.executable)
ARTIFACTS = REPO / "test-artifacts"


def free_port(ip: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free right now on `ip` (tests run in their own namespace: no races
    with anything else on the machine)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class CliError(AssertionError):
    pass


class Cli:
    """A `p2prtc ...` subprocess: stdout lines are collected (and parsed when JSON), stderr goes
    to a log file quoted in failures, stdin is a pipe for chat lines."""

    def __init__(self, *args: str, name: str = "p2prtc", wrap: tuple[str, ...] = ()) -> None:
        self.argv = [*wrap, PYTHON, "-m", "p2prtc", *args]
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.events: list[dict] = []
        self._changed = asyncio.Condition()
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self._reader: asyncio.Task | None = None

    async def start(self) -> Cli:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._log, env=env, cwd=str(REPO),
            limit=1 << 20)  # a `message` event may carry a 64 KiB chat read, JSON-escaped
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            async with self._changed:
                self.lines.append(text)
                if text.startswith("{"):
                    try:
                        self.events.append(json.loads(text))
                    except ValueError:
                        pass
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def stderr_text(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def describe(self) -> str:
        with open(self._log.name, errors="replace") as f:
            err = f.read()[-3000:]
        out = "\n".join(self.lines[-30:])
        rc = self.proc.returncode if self.proc else None
        return f"{self.name} (exit {rc})\n-- stdout --\n{out}\n-- stderr --\n{err}"

    async def _wait(self, find, what: str, timeout: float):
        async def waiter():
            async with self._changed:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    if self._reader is not None and self._reader.done():
                        raise CliError(f"{self.name} ended before {what}; {self.describe()}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise CliError(f"no {what} from {self.name} within {timeout}s; {self.describe()}") from None

    async def wait_line(self, pattern: str, timeout: float = 30) -> re.Match:
        rx = re.compile(pattern)
        return await self._wait(lambda: next((m for m in map(rx.search, self.lines) if m), None),
                                f"line matching {pattern!r}", timeout)

    async def wait_event(self, event: str, /, timeout: float = 30, **match: Any) -> dict:
        def find():
            return next((e for e in self.events if e.get("event") == event
                         and all(e.get(k) == v for k, v in match.items())), None)

        return await self._wait(find, f"{event!r} event {match or ''}", timeout)

    async def wait_until(self, find, what: str, timeout: float = 30):
        """The first non-None `find()`, looked at whenever a line comes (CliError on timeout or
        exit)."""
        return await self._wait(find, what, timeout)

    async def send_line(self, text: str) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def interrupt(self, timeout: float = 15) -> int:
        """Ctrl-C, as a user would; returns the exit code (killing it if it hangs)."""
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise CliError(f"{self.name} did not stop within {timeout}s of Ctrl-C; "
                               f"{self.describe()}") from None
        if self._reader is not None:
            await self._reader
        return self.proc.returncode

    async def stop_or_kill(self, grace: float) -> bool:
        """Ctrl-C, then SIGKILL after `grace` seconds; True when it exited 0 on its own."""
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode == 0

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "p2prtc", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


# -- Chromium -------------------------------------------------------------------------------------

@asynccontextmanager
async def chromium():
    from playwright.async_api import async_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install -y chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class AppPage:
    """One tab of the browser app, driven like a person would."""

    def __init__(self, page, name: str) -> None:
        self.page = page
        self.name = name
        self.console: list[str] = []
        self.dial_retries = 0
        page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    @classmethod
    async def open(cls, browser, url: str, name: str) -> AppPage:
        context = await browser.new_context(permissions=["microphone", "camera"],
                                            accept_downloads=True)
        page = await context.new_page()
        app = cls(page, name)
        await page.goto(url)
        try:
            await page.wait_for_selector("html[data-ready='true']", state="attached", timeout=30_000)
        except Exception as e:
            raise AssertionError(f"{name}: the app did not start ({e}); {await app.describe()}") from None
        return app

    async def output_lines(self) -> list[str]:
        return await self.page.locator("#output > div").all_inner_texts()

    async def describe(self) -> str:
        try:
            out = "\n".join(await self.output_lines())
        except Exception:  # noqa: BLE001 - page may be gone
            out = "?"
        console = "\n".join(self.console[-40:])
        return f"{self.name} output:\n{out}\n{self.name} console:\n{console}"

    async def expect_output(self, text: str, timeout: float = 15) -> None:
        from playwright.async_api import expect

        try:
            await expect(self.page.locator("#output")).to_contain_text(text, timeout=timeout * 1000)
        except AssertionError:
            raise AssertionError(f"{self.name}: no {text!r} in the output within {timeout}s; "
                                 f"{await self.describe()}") from None

    async def wait_until_output(self, pred, start: int, what: str, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lines = (await self.output_lines())[start:]
            hit = next((line for line in lines if pred(line)), None)
            if hit is not None:
                return hit
            if loop.time() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s; {await self.describe()}")
            await asyncio.sleep(0.05)

    async def dial_relay(self, relay: str) -> str:
        """As the example's test: dial the relay, wait for a /webrtc address, return it."""
        await self.page.fill("#peer", relay)
        await self.page.click("#connect")
        await self.expect_output(f"Dialing '{relay}'")
        await self.expect_output("Connected to relay")
        return await self.own_webrtc_address(relay)

    async def own_webrtc_address(self, relay: str, timeout: float = 15) -> str:
        from playwright.async_api import expect

        await expect(self.page.locator("#multiaddrs")).to_have_text(re.compile("webrtc"),
                                                                    timeout=timeout * 1000)
        await expect(self.page.locator("#multiaddrs li", has_text=relay)).not_to_have_count(
            0, timeout=timeout * 1000)
        items = await self.page.locator("#multiaddrs li").all_text_contents()
        return next(a for a in items if a.startswith(relay + "/p2p-circuit/webrtc/p2p/"))

    async def dial_peer(self, addr: str, retries: int = 3, timeout: float = 20) -> float:
        """Dial a peer's /webrtc address; retry when the page reports a time-out or failure
        (js-libp2p's browser<->browser dial loses a race now and then). Returns the setup time
        in ms the page measured."""
        for attempt in range(retries + 1):
            start = len(await self.output_lines())
            await self.page.fill("#peer", addr)
            await self.page.click("#connect")
            line = await self.wait_until_output(
                lambda s: s in (f"Connected to '{addr}'", f"Timed out connecting to '{addr}'")
                or s.startswith(f"Connecting to '{addr}' failed"),
                start, f"result of dialling {addr}", timeout)
            if line == f"Connected to '{addr}'":
                break
            if attempt == retries:
                raise AssertionError(f"{self.name}: dial failed {retries + 1} times: {line}; "
                                     f"{await self.describe()}")
            self.dial_retries += 1
        lines = await self.output_lines()
        assert f"Dialing '{addr}'" in lines
        peer = addr.rsplit("/p2p/", 1)[1]
        assert any(re.fullmatch(rf"RTT to {peer} was \d+ms", s) for s in lines), lines
        item = self.page.locator("#connections li[data-kind='direct WebRTC'][data-setup-ms]").first
        return float(await item.get_attribute("data-setup-ms"))

    async def connection_kinds(self) -> dict[str, set[str]]:
        """peer id -> kinds of its open connections as the page labels them."""
        items = await self.page.locator("#connections li").evaluate_all(
            "els => els.map(e => [e.dataset.peer, e.dataset.kind])")
        out: dict[str, set[str]] = {}
        for peer, kind in items:
            out.setdefault(peer, set()).add(kind)
        return out

    async def send_message(self, message: str) -> None:
        await self.page.fill("#message", message)
        await self.page.click("#send")
        await self.expect_output(f"Sending message '{message}'")

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path


async def send_message(sender: AppPage, recipient: AppPage, message: str) -> None:
    await sender.send_message(message)
    await recipient.expect_output(f"Received message '{message}'")


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000
