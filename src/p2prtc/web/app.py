"""`p2prtc web`: an aiohttp server for the browser peer.

It serves the built bundle in `static/` (sources in the repository's `web/`) and `/config.json`:

    {"relay": "<multiaddr or null>", "relays": [...], "iceServers": [{"urls": [...]}],
     "demoPeer": "<multiaddr>"}

`relays` are all the relay addresses given (`--relay`, repeatable), `relay` the first; the page
picks the one it can use (an https page needs /tls/ws, /wss or /webrtc-direct: web/src/links.js).
`demoPeer` is present only under `p2prtc demo`. With a certificate (`--tls-cert`/`--tls-key`,
reloaded when the files change) the server speaks https. A relay given on loopback or the unspecified
address (`/ip4/127.0.0.1/...`, `/ip4/0.0.0.0/...`) is rewritten to the host name the browser used
to reach this server, so a page opened from another machine (the "Network:" URL) gets a relay
address it can reach rather than its own loopback. The default STUN server follows the relay's
host (`stun:<relay host>:3478`, the STUN port of `p2prtc relay`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Required, TypedDict

from aiohttp import web
from aiohttp.typedefs import Handler

from ..multiaddr import Multiaddr
from ..netutil import ipv4_addresses, ipv6_addresses, is_loopback

if TYPE_CHECKING:
    from ..transports.tls import ReloadingCertificate

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 5173  # Vite's, which the js example app is served with
RELAY_STUN_PORT = 3478  # `p2prtc relay --stun-port` default
SHUTDOWN_TIMEOUT = 2.0  # seconds in-flight requests get after Ctrl-C
# Transports a browser can use to reach a relay.
BROWSER_RELAY_TRANSPORTS = ("ws", "wss", "webrtc-direct", "webtransport")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


class ConfigError(ValueError):
    """A relay address or ICE server URL the browser could not use."""


@dataclass
class WebConfig:
    relay: str | None = None
    # more addresses of the same relay (e.g. its /ws and /tls/ws); `relay` is the first
    more_relays: list[str] = field(default_factory=list)
    # ICE server URLs; None: derive `stun:<relay host>:3478` from the relay; []: none at all.
    stun: list[str] | None = None
    demo_peer: str | None = None


def check_relay_addr(text: str) -> Multiaddr:
    """Parse a relay multiaddr and check that a browser can dial it and reserve on it."""
    try:
        addr = Multiaddr(text)
    except ValueError as e:
        raise ConfigError(f"not a multiaddr: {e}") from None
    if addr.peer_id() is None:
        raise ConfigError("the relay address must end with /p2p/<relay peer id> "
                          "(copy a `Listening on` line of `p2prtc relay`)")
    if not any(addr.has(t) for t in BROWSER_RELAY_TRANSPORTS):
        raise ConfigError("browsers reach a relay only over /ws, /wss, /webrtc-direct or "
                          "/webtransport: use the relay's WebSocket address "
                          "(`p2prtc relay --websocket-port 8080` prints it)")
    if addr.has("p2p-circuit"):
        raise ConfigError("that is a peer's relayed address, not the relay's own address")
    return addr


def check_stun_url(text: str) -> str:
    if not re.match(r"^(stun|stuns|turn|turns):[^\s]+$", text):
        raise ConfigError(f"not a stun:/turn: URL: {text!r} (e.g. stun:relay.example.org:3478)")
    return text


def _host_of(addr: Multiaddr) -> tuple[str, str] | None:
    """(protocol, value) of the address's first component when it names a host."""
    comps = addr.components()
    if comps and comps[0][0] in ("ip4", "ip6", "dns", "dns4", "dns6") and comps[0][1]:
        return comps[0][0], comps[0][1]
    return None


def _stun_host(proto: str, value: str) -> str:
    return f"[{value}]" if proto == "ip6" else value


def _request_host_component(host: str | None) -> str | None:
    """The multiaddr head for the host the browser used, or None when it is no better than what
    we have (missing, loopback, or not a plausible host name)."""
    if not host:
        return None
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() in ("localhost", "localhost.") or not _HOST_NAME.match(host):
            return None
        return f"/dns/{host}"
    if ip.is_loopback or ip.is_unspecified:
        return None
    return f"/ip{ip.version}/{ip}"


def rewrite_for_request(addr: Multiaddr, request_host: str | None) -> Multiaddr:
    """`addr` with a loopback/unspecified IP replaced by the host the browser reached us at."""
    head = _host_of(addr)
    if head is None or head[0] not in ("ip4", "ip6"):
        return addr
    ip = ipaddress.ip_address(head[1])
    if not (ip.is_loopback or ip.is_unspecified):
        return addr
    new_head = _request_host_component(request_host)
    if new_head is None:
        if ip.is_unspecified:  # 0.0.0.0 is never dialable; loopback is the best guess
            new_head = "/ip4/127.0.0.1" if ip.version == 4 else "/ip6/::1"
        else:
            return addr
    rest = str(addr)[len(f"/{head[0]}/{head[1]}"):]
    return Multiaddr(new_head + rest)


class IceServerDoc(TypedDict):
    """One RTCIceServer of the browser's rtcConfiguration."""

    urls: list[str]


class ConfigDoc(TypedDict, total=False):
    """/config.json: what the page is pre-filled with."""

    relay: Required[str | None]
    iceServers: Required[list[IceServerDoc]]
    relays: list[str | None]
    demoPeer: str


def ice_servers(cfg: WebConfig, relay: Multiaddr | None) -> list[IceServerDoc]:
    if cfg.stun is not None:
        return [{"urls": list(cfg.stun)}] if cfg.stun else []
    if relay is None:
        return []  # never the public STUN servers js-libp2p would pick: the deployment decides
    head = _host_of(relay)
    if head is None:
        return []
    return [{"urls": [f"stun:{_stun_host(*head)}:{RELAY_STUN_PORT}"]}]


def config_for(cfg: WebConfig, request_host: str | None = None) -> ConfigDoc:
    """The /config.json document for a browser that reached us as `request_host`."""
    relay = rewrite_for_request(Multiaddr(cfg.relay), request_host) if cfg.relay else None
    doc: ConfigDoc = {"relay": str(relay) if relay is not None else None,
                 "iceServers": ice_servers(cfg, relay)}
    if cfg.more_relays:
        doc["relays"] = [doc["relay"]] + [str(rewrite_for_request(Multiaddr(a), request_host))
                                          for a in cfg.more_relays]
    if cfg.demo_peer:
        doc["demoPeer"] = str(rewrite_for_request(Multiaddr(cfg.demo_peer), request_host))
    return doc


CONFIG_KEY: web.AppKey[WebConfig] = web.AppKey("config", WebConfig)


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    # index.html and config.json change with the deployment; app.js/css are referenced with a
    # content hash (?v=...), so revalidating everything is cheap and never serves stale code.
    resp.headers.setdefault("Cache-Control", "no-cache")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def make_app(cfg: WebConfig, static_dir: Path = STATIC_DIR) -> web.Application:
    if not (static_dir / "index.html").is_file():
        raise FileNotFoundError(f"{static_dir / 'index.html'} is missing: build the browser app "
                                "with scripts/build-web")

    async def index(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static_dir / "index.html")

    async def config_json(request: web.Request) -> web.Response:
        return web.json_response(config_for(cfg, request.url.host),
                                 headers={"Cache-Control": "no-store"})

    app = web.Application(middlewares=[_headers])
    app[CONFIG_KEY] = cfg
    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get("/config.json", config_json)
    app.router.add_static("/", static_dir, follow_symlinks=False)
    return app


def display_urls(host: str, port: int, scheme: str = "http") -> list[tuple[str, str]]:
    """[("Local", url), ("Network", url), ...] for a server bound to host:port, like Vite."""
    def url(h: str) -> str:
        return f"{scheme}://[{h}]:{port}/" if ":" in h else f"{scheme}://{h}:{port}/"

    out: list[tuple[str, str]] = []
    if host in ("", "0.0.0.0", "::"):
        out.append(("Local", url("localhost")))
        ips = [ip for ip in ipv4_addresses() if not ip.startswith("127.")]
        if host == "::":
            ips += [ip for ip in ipv6_addresses() if ip != "::1"]
        out += [("Network", url(ip)) for ip in ips]
    elif is_loopback(host) or host == "localhost":
        out.append(("Local", url(host)))
    else:
        out.append(("Network", url(host)))
    return out


class WebServer:
    """The aiohttp server; `start()` returns the port actually bound (useful with port 0)."""

    def __init__(self, cfg: WebConfig, static_dir: Path = STATIC_DIR, *,
                 tls: ReloadingCertificate | None = None) -> None:
        self.cfg = cfg
        self.app = make_app(cfg, static_dir)
        self.tls = tls  # https with this certificate (transports/tls.py), else http
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        # Requests here are quick file reads: don't wait a minute for stragglers on Ctrl-C.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, port, reuse_address=True,
                           ssl_context=self.tls.context if self.tls is not None else None)
        try:
            await site.start()
        except OSError:
            await self.close()
            raise
        self.host = host
        self.port = self._runner.addresses[0][1]
        return self.port

    def urls(self) -> list[tuple[str, str]]:
        return display_urls(self.host, self.port, "https" if self.tls is not None else "http")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
