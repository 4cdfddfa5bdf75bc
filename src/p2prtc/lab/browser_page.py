"""The NAT lab's browser peer: the js-libp2p page shipped in the package (`browser/`, built by
scripts/build-lab-browser from tests/interop/js/browser.mjs) in headless Chromium, driven with
Playwright. It speaks the harness commands of tests/interop/js/lib/harness.mjs (dial, ping,
perf, addrs, ...); `browser_agent` runs it inside a peer's namespace.

`missing_prerequisite()` says in one line what is missing (Playwright, Chromium) and the command
that installs it; the lab checks it before building anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUNDLE_DIR = Path(__file__).resolve().parent / "browser"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# What makes Debian's Chromium work headless, as root, offline, and let WebRTC use every
# interface (shared/TESTING.md; the same as tests/interop/jspeer.py).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
PAGE_LOAD_TIMEOUT = 30.0
# Console lines kept for error messages.
CONSOLE_LINES = 200


class BrowserPeerError(RuntimeError):
    """A harness command failed in the page (the message has the js error and console tail)."""


def chromium_path() -> str:
    """$P2PRTC_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH."""
    env = os.environ.get("P2PRTC_CHROMIUM")
    if env:
        return env
    if os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium") or DEFAULT_CHROMIUM


def missing_prerequisite() -> str | None:
    """What browser peers lack here, in one line with the command that fixes it; None if
    nothing."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return ("browser peers need Playwright for Python: pip install 'p2prtc[browser]' "
                "(or pip install playwright)")
    exe = chromium_path()
    if not os.access(exe, os.X_OK):
        return (f"browser peers need Chromium ({exe} not found): apt-get install -y chromium "
                "(or set P2PRTC_CHROMIUM to its path)")
    if not (BUNDLE_DIR / "peer.js").is_file():
        return (f"the browser peer's page is missing from the package ({BUNDLE_DIR}/peer.js): "
                "reinstall p2prtc, or run scripts/build-lab-browser in a checkout")
    return None


class BrowserSession:
    """One headless Chromium plus a static server (127.0.0.1) for the packaged page."""

    def __init__(self) -> None:
        self.base_url: str | None = None
        self.browser: Any = None
        self._runner: Any = None
        self._pw: Any = None
        self.peers: list[BrowserPeer] = []

    async def start(self) -> None:
        reason = missing_prerequisite()
        if reason:
            raise BrowserPeerError(reason)
        from aiohttp import web
        from playwright.async_api import async_playwright

        async def no_cache(request: Any, handler: Any) -> Any:
            resp = await handler(request)
            resp.headers["Cache-Control"] = "no-store"
            return resp

        app = web.Application(middlewares=[web.middleware(no_cache)])

        async def index(_request: Any) -> Any:
            return web.FileResponse(BUNDLE_DIR / "index.html")

        app.router.add_get("/", index)
        app.router.add_static("/", BUNDLE_DIR)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/"
        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)

    async def new_peer(self, name: str) -> BrowserPeer:
        peer = BrowserPeer(self, name)
        self.peers.append(peer)
        await peer.open()
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        if self.browser is not None:
            try:
                await self.browser.close()
            except Exception as e:  # noqa: BLE001 - best effort cleanup
                log.warning("closing chromium: %s", e)
            self.browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class BrowserPeer:
    """The js-libp2p peer in one page; `page` is the Playwright page."""

    def __init__(self, session: BrowserSession, name: str) -> None:
        self.session = session
        self.name = name
        self.context: Any = None
        self.page: Any = None
        self.ready: dict[str, Any] = {}
        self._events: deque[dict[str, Any]] = deque()
        self._changed = asyncio.Condition()
        self._console: deque[str] = deque(maxlen=CONSOLE_LINES)

    def _record(self, line: str) -> None:
        self._console.append(line)
        log.debug("%s: %s", self.name, line)

    def _describe(self) -> str:
        return f"{self.name} console (last lines):\n" + "\n".join(list(self._console)[-20:])

    async def open(self) -> None:
        self.context = await self.session.browser.new_context(
            permissions=["microphone", "camera"])
        self.page = await self.context.new_page()
        self.page.on("console", lambda m: self._record(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self._record(f"[pageerror] {e}"))

        async def on_event(raw: str) -> None:
            try:
                ev = json.loads(raw)
            except ValueError:
                return
            async with self._changed:
                self._events.append(ev)
                self._changed.notify_all()

        await self.page.expose_function("__harnessEvent", on_event)
        await self.page.goto(self.session.base_url)
        try:
            await self.page.wait_for_function(
                "document.documentElement.dataset.harness === 'loaded'",
                timeout=PAGE_LOAD_TIMEOUT * 1000)
        except Exception as e:  # noqa: BLE001 - Playwright's timeout, in words
            raise BrowserPeerError(f"{self.name}: the page did not load ({e}); "
                                   f"{self._describe()}") from None

    async def start(self, *, ice_servers: list[dict[str, Any]] | None = None,
                    timeout: float = 30) -> dict[str, Any]:
        """Create the js-libp2p node (listening on /p2p-circuit and /webrtc)."""
        opts: dict[str, Any] = {}
        if ice_servers is not None:
            opts["iceServers"] = ice_servers
        reply = await self._evaluate("(o) => window.harness.start(o)", opts, "start", timeout)
        self.ready = reply
        return reply

    @property
    def peer_id(self) -> str:
        return str(self.ready["peerId"])

    async def _evaluate(self, script: str, arg: Any, what: str, timeout: float) -> dict[str, Any]:
        try:
            reply = await asyncio.wait_for(self.page.evaluate(script, arg), timeout)
        except TimeoutError:
            raise BrowserPeerError(f"{self.name}: {what} got no reply within {timeout:.0f} s; "
                                   f"{self._describe()}") from None
        if not reply.get("ok"):
            raise BrowserPeerError(f"{self.name}: {what} failed: {reply.get('error')}; "
                                   f"{self._describe()}")
        return dict(reply)

    async def call(self, cmd: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        """Run a harness command in the page; BrowserPeerError if it failed."""
        if self.page is None:
            raise BrowserPeerError(f"{self.name} is closed")
        return await self._evaluate("([cmd, args]) => window.harness.call(cmd, args)",
                                    [cmd, args], cmd, timeout)

    async def dial(self, addr: str, timeout: float = 60) -> dict[str, Any]:
        return await self.call("dial", timeout=timeout, addr=str(addr))

    async def ping(self, peer: str, timeout: float = 60) -> dict[str, Any]:
        return await self.call("ping", timeout=timeout, peer=peer)

    async def perf(self, peer: str, *, upload_bytes: int = 0, download_bytes: int = 0,
                   timeout: float = 300) -> dict[str, Any]:
        return await self.call("perf", timeout=timeout, peer=peer, upload_bytes=upload_bytes,
                               download_bytes=download_bytes)

    async def wait_event(self, name: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        """The next event `name` (with these field values) the page pushed; consumed."""
        def find() -> dict[str, Any] | None:
            for ev in self._events:
                if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                    self._events.remove(ev)
                    return ev
            return None

        async def waiter() -> dict[str, Any]:
            async with self._changed:
                while (ev := find()) is None:
                    await self._changed.wait()
                return ev

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise BrowserPeerError(f"no {name!r} event within {timeout:.0f} s; "
                                   f"{self._describe()}") from None

    async def wait_for_addr(self, match: str, timeout: float = 30) -> str:
        """The first of our addresses containing `match`, waiting for 'addrs' events."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        addrs = (await self.call("addrs"))["addrs"]
        while True:
            found = [a for a in addrs if match in a]
            if found:
                return str(found[0])
            left = deadline - loop.time()
            if left <= 0:
                raise BrowserPeerError(f"{self.name}: no address containing {match!r} within "
                                       f"{timeout:.0f} s (have {addrs})")
            try:
                addrs = (await self.wait_event("addrs", timeout=left))["addrs"]
            except BrowserPeerError:
                addrs = (await self.call("addrs"))["addrs"]

    async def close(self) -> None:
        if self.page is not None:
            try:
                await asyncio.wait_for(
                    self.page.evaluate("() => window.harness && window.harness.stop()"), 5)
            except Exception:  # noqa: BLE001 - the page may be gone already
                pass
        if self.context is not None:
            try:
                await self.context.close()
            except Exception:  # noqa: BLE001
                pass
        self.page = None
        self.context = None
