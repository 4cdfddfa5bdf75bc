"""`p2prtc relay`: a circuit relay v2 node with TCP, WebSocket and STUN, a drop-in for rust-libp2p's
relay-server example (same flags, same peer id for the same seed, same `Listening on` lines)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field

from aiohttp import web

from ..host import Host
from ..identity import Identity
from ..multiaddr import Multiaddr
from ..protocols.stun import StunServer, start_stun_server
from .limits import RelayLimits
from .metrics import RelayMetrics
from .server import RelayService

log = logging.getLogger(__name__)


@dataclass
class RelayOptions:
    identity: Identity
    port: int = 4884
    websocket_port: int | None = None
    webrtc_port: int | None = None
    stun_port: int = 3478
    # RFC 5780's alternate port (None: stun_port + 1 if free; 0: none) and second IP.
    stun_alt_port: int | None = None
    stun_alt_ip: str | None = None
    listen_ip: str = "0.0.0.0"
    use_ipv6: bool = False
    announce: list[str] = field(default_factory=list)
    metrics_port: int | None = None
    limits: RelayLimits = field(default_factory=RelayLimits)
    json: bool = False


def announce_addrs(listen: list[Multiaddr], announce: list[str]) -> list[Multiaddr]:
    """Each listen address with its IP replaced by each announced host (IP, DNS name, or a full
    multiaddr taken as is)."""
    out: list[Multiaddr] = []
    ports_seen = set()
    for spec in announce:
        if spec.startswith("/"):
            out.append(Multiaddr(spec))
            continue
        try:
            ip = ipaddress.ip_address(spec)
            head = f"/ip{ip.version}/{ip}"
        except ValueError:
            head = f"/dns/{spec}"
        for a in listen:
            comps = a.without_peer_id().components()
            tail = "".join(f"/{n}" + (f"/{v}" if v is not None else "") for n, v in comps[1:])
            key = (head, tail)
            if key not in ports_seen:
                ports_seen.add(key)
                out.append(Multiaddr(head + tail))
    return out


class RelayApp:
    def __init__(self, opts: RelayOptions) -> None:
        self.opts = opts
        self.host = Host(opts.identity, agent_version=f"p2prtc-relay/{_version()}")
        self.metrics = RelayMetrics()
        self.relay = RelayService(self.host, opts.limits, self.metrics)
        self.stun_servers: list[StunServer] = []
        self._metrics_runner: web.AppRunner | None = None
        self.listen_addrs: list[Multiaddr] = []
        self.started = time.monotonic()

    def emit(self, event: str, **fields) -> None:
        if self.opts.json:
            print(json.dumps({"event": event, "t": round(time.monotonic() - self.started, 3),
                              **fields}), flush=True)

    async def start(self) -> list[Multiaddr]:
        o = self.opts
        ips = [o.listen_ip]
        if o.use_ipv6 and ":" not in o.listen_ip:
            ips.append("::")
        wanted = []
        for ip in ips:
            proto = "ip6" if ":" in ip else "ip4"
            wanted.append(f"/{proto}/{ip}/tcp/{o.port}")
            if o.websocket_port is not None:
                wanted.append(f"/{proto}/{ip}/tcp/{o.websocket_port}/ws")
            if o.webrtc_port is not None:
                # certhash of a certificate derived from the identity: same key, same address
                wanted.append(f"/{proto}/{ip}/udp/{o.webrtc_port}/webrtc-direct")
        for w in wanted:
            self.listen_addrs += await self.host.listen(w)
        if o.announce:
            self.host.announce_addrs = announce_addrs(self.listen_addrs, o.announce)
        if o.stun_port:
            for ip in ips:
                await self._start_stun(ip)
        if o.metrics_port is not None:
            await self._start_metrics(o.listen_ip, o.metrics_port)
        self.host.events.on("connection", lambda c: log.debug("connection %r", c))
        return self.printed_addrs()

    async def _start_stun(self, ip: str) -> None:
        o = self.opts
        alt_ip = o.stun_alt_ip
        if alt_ip is not None and (":" in alt_ip) != (":" in ip):
            alt_ip = None  # the second IP serves the primary address of its own family
        alt_port = o.stun_alt_port
        if alt_port is None:  # the default: the next port, unless it is taken
            alt_port = o.stun_port + 1 if o.stun_port < 65535 else 0
            try:
                server = await start_stun_server(ip, o.stun_port, alt_port=alt_port or None,
                                                 alt_ip=alt_ip)
            except OSError as e:
                if not alt_port:
                    raise
                log.info("STUN alternate port %d/udp is not free (%s): serving STUN on %d "
                            "without it (no RFC 5780 port changes)", alt_port,
                            e.strerror or e, o.stun_port)
                server = await start_stun_server(ip, o.stun_port, alt_ip=alt_ip)
        else:
            server = await start_stun_server(ip, o.stun_port, alt_port=alt_port or None,
                                             alt_ip=alt_ip)
        self.stun_servers.append(server)
        log.info("STUN server on %s", ", ".join(f"{a}:{p}/udp"
                                                 for a, p in server.addresses.values()))

    def printed_addrs(self) -> list[Multiaddr]:
        addrs = self.host.announce_addrs or self.listen_addrs
        return [a.with_peer_id(self.host.peer_id) for a in addrs]

    async def _start_metrics(self, ip: str, port: int) -> None:
        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(text=self.metrics.render(),
                                content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self._metrics_runner = web.AppRunner(app, access_log=None)
        await self._metrics_runner.setup()
        site = web.TCPSite(self._metrics_runner, ip, port, reuse_address=True)
        await site.start()
        log.info("metrics on http://%s:%d/metrics", ip, port)

    async def close(self) -> None:
        for server in self.stun_servers:
            server.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.host.close()


def _version() -> str:
    from .. import __version__

    return __version__


async def run_relay(opts: RelayOptions) -> int:
    app = RelayApp(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        addrs = await app.start()
    except OSError as e:
        await app.close()
        raise RuntimeError(f"cannot listen: {e.strerror or e}") from None
    print(f"Local peer id: {app.host.peer_id}", file=sys.stderr, flush=True)
    if opts.json:
        app.emit("listening", addrs=[str(a) for a in addrs], peer=str(app.host.peer_id))
    else:
        for a in addrs:
            print(f"Listening on {a}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await app.close()
    return 0
