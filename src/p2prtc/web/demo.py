"""`p2prtc demo`: the relay, the web app and a Python peer in one process (one asyncio loop).

The web app's /config.json carries the relay's WebSocket address and `demoPeer`, the Python
peer's `/p2p-circuit/webrtc` address, so a visitor connects with one click. The Python peer
echoes every chat message back ("echo: <message>") so someone alone still sees it work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import P2PError
from ..identity import Identity
from ..multiaddr import Multiaddr
from ..netutil import ipv4_addresses, is_loopback
from ..peerapp import Output, PeerApp, PeerOptions, short, stdin_is_pipe_or_tty
from ..protocols.filetransfer import FileResult
from ..relay.app import RelayApp, RelayOptions
from .app import DEFAULT_PORT, RELAY_STUN_PORT, WebConfig, WebServer

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    relay_port: int = 4884
    websocket_port: int = 8080
    stun_port: int = RELAY_STUN_PORT
    json: bool = False


class DemoError(RuntimeError):
    pass


class _PrefixedOutput(Output):
    """The peer's human-readable lines, marked as coming from the Python peer."""

    muted = False  # set while shutting down: "lost the relay" then is no news

    def _write(self, obj: dict[str, Any], human: str | None) -> None:
        if self.muted:
            return
        if human is not None:
            human = "\n".join(f"[python peer] {line}" for line in human.splitlines())
        super()._write(obj, human)


class EchoPeer(PeerApp):
    """A listener that answers every chat message with "echo: <message>"."""

    def __init__(self, opts: PeerOptions) -> None:
        super().__init__(opts, "listen")
        self.out = self._prefixed = _PrefixedOutput(opts.json)

    def _on_message(self, peer: str, text: str) -> None:
        super()._on_message(peer, text)
        self.spawn(self._reply(peer, f"echo: {text}"))

    def _on_file(self, r: FileResult) -> None:
        super()._on_file(r)
        self.spawn(self._reply(str(r.peer), f"echo: received {r.name} ({r.size} bytes, "
                                            f"sha256 {r.sha256})"))

    async def close(self) -> None:
        self._prefixed.muted = True
        await super().close()

    async def _reply(self, peer: str, text: str) -> None:
        try:
            await self.chat.send(peer, text)
        except (P2PError, OSError, ValueError) as e:
            self.out.event("error", f"Could not echo to {short(peer)}: {e}", reason=str(e))
            return
        self.out.event("sent", f"replied: {text}", peer=peer, text=text)


def _pick(addrs: list[Multiaddr], *, ws: bool) -> Multiaddr:
    """The relay address to use: the WebSocket or plain TCP one, loopback first."""
    wanted = [a for a in addrs if a.has("ws") == ws]
    if not wanted:
        raise DemoError(f"the relay has no {'WebSocket' if ws else 'TCP'} address: {addrs}")
    loop = [a for a in wanted if is_loopback(a.components()[0][1] or "")]
    return (loop or wanted)[0]


def loopback_only() -> bool:
    return not any(not ip.startswith("127.") for ip in ipv4_addresses())


LOOPBACK_ONLY_WARNING = (
    "WARNING: this machine has no network interface besides loopback. WebRTC needs one: the\n"
    "Python peer (aiortc) never uses 127.0.0.1, so 'Chat with the Python peer' will time out.\n"
    "Browser-to-browser chat can still work when the browser is allowed to use loopback.\n"
    "Connect the machine to a network (any interface with an IPv4 address will do).")


def udp_port_free(ip: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ip, port))
    except OSError:
        return False
    return True


class Demo:
    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        listen_ip = opts.host if opts.host not in ("", "localhost") else "127.0.0.1"
        # Browser and Python peer share this machine: STUN is a nicety here, not a need, so a
        # busy STUN port (another demo, a coturn) must not stop the demo.
        self.stun_port = opts.stun_port if udp_port_free(listen_ip, opts.stun_port) else 0
        self.relay = RelayApp(RelayOptions(
            identity=Identity.generate(), port=opts.relay_port,
            websocket_port=opts.websocket_port, stun_port=self.stun_port, listen_ip=listen_ip))
        self.save_dir = Path(tempfile.mkdtemp(prefix="p2prtc-demo-"))
        # Same machine as the browser: host candidates are enough, no STUN round trip.
        self.peer = EchoPeer(PeerOptions(identity=Identity.generate(), ice_servers=[],
                                         json=opts.json, save_dir=self.save_dir))
        self.web: WebServer | None = None
        self.relay_ws: Multiaddr | None = None
        self.peer_addr: Multiaddr | None = None

    async def start(self) -> None:
        o = self.opts
        try:
            addrs = await self.relay.start()
        except OSError as e:
            raise DemoError(
                f"cannot start the relay on {self.relay.opts.listen_ip} (TCP {o.relay_port}, "
                f"WebSocket {o.websocket_port}): {e.strerror or e}; "
                "choose other ports with --relay-port / --websocket-port") from None
        self.relay_ws = _pick(addrs, ws=True)
        relay_tcp = _pick(addrs, ws=False)
        await self.peer.start()
        await self.peer.listen([str(relay_tcp)])
        self.peer_addr = Multiaddr(f"{self.relay_ws}/p2p-circuit/webrtc/p2p/{self.peer.peer_id}")
        self.web = WebServer(WebConfig(relay=str(self.relay_ws), demo_peer=str(self.peer_addr),
                                       stun=None if self.stun_port else []))
        try:
            await self.web.start(o.host, o.port)
        except OSError as e:
            raise DemoError(f"cannot serve the web app on {o.host}:{o.port}: {e.strerror or e}; "
                            "choose another port with --port") from None

    def banner(self) -> None:
        assert self.web is not None
        urls = self.web.urls()
        if self.opts.json:
            print(json.dumps({"event": "demo", "t": 0.0, "urls": [u for _, u in urls],
                              "relay": str(self.relay_ws), "peer": str(self.peer_addr),
                              "loopback_only": loopback_only()}), flush=True)
            return
        lines = ["", "  p2prtc demo: a relay, the web app and a Python peer, all in this process", ""]
        first = True
        for label, url in urls:
            lines.append(f"  {'Open:' if first else label + ':':<9}{url}")
            first = False
        lines += [
            f"  Relay:   {self.relay_ws}",
            f"  Python peer (echoes what you send): {self.peer_addr}",
            "",
            "  In the page, click 'Chat with the Python peer', or open the page twice and paste",
            "  one page's address into the other. From a terminal: p2prtc dial <Python peer address>.",
            f"  Files sent to the Python peer go to {self.save_dir}",
            "  Press Ctrl-C to stop.",
            "",
        ]
        print("\n".join(lines), flush=True)
        if not self.stun_port:
            print(f"note: UDP port {self.opts.stun_port} is in use, so the relay runs without its "
                  "STUN server (not needed when everything is on this machine)",
                  file=sys.stderr, flush=True)
        if loopback_only():
            print(LOOPBACK_ONLY_WARNING, file=sys.stderr, flush=True)

    async def close(self) -> None:
        if self.web is not None:
            await self.web.close()
        await self.peer.close()
        # Connections first: the relay's WebSocket listener otherwise waits (aiohttp's 60 s
        # shutdown timeout) for the handlers of browsers that are still connected.
        await asyncio.gather(*(c.close() for c in self.relay.host.connections()),
                             return_exceptions=True)
        await self.relay.close()


async def run_demo(opts: DemoOptions) -> int:
    started = time.monotonic()
    demo = Demo(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.peer.stop.set)
    try:
        await demo.start()
        log.info("demo up in %.0f ms", (time.monotonic() - started) * 1000)
        demo.banner()
        stdin_task = None
        if stdin_is_pipe_or_tty():  # chat from the terminal too
            stdin_task = asyncio.ensure_future(demo.peer.read_stdin())
        await demo.peer.stop.wait()
        if stdin_task is not None:
            stdin_task.cancel()
        if not opts.json:
            print("Stopping…", flush=True)
        return 0
    finally:
        await demo.close()
