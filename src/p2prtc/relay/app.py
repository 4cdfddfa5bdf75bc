"""`p2prtc relay`: a circuit relay v2 node with TCP, WebSocket, STUN and TURN, a drop-in for
rust-libp2p's relay-server example (same flags, same peer id for the same seed, same `Listening on`
lines). TURN (`relay/turn.py`, `relay/turn_io.py`) shares the STUN port by default; its
credentials go only to peers connected to the relay (`protocols/turn_credentials.py`)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ..events import ConnectionOpened
from ..host import Host
from ..identity import Identity
from ..multiaddr import Multiaddr
from ..netutil import expand_unspecified, is_loopback
from ..protocols.autonat import AutoNATService, ServerConfig
from ..protocols.autonat_core import (SERVER_DIAL_DATA_RPM, SERVER_PER_PEER_RPM, SERVER_RPM,
                                      RateLimiter, ServerPolicy)
from ..protocols.stun import StunServer, start_stun_server
from ..protocols.turn_credentials import TurnCredentialService
from ..resources import ResourceLimits, ResourceManager
from .limits import RelayLimits
from .metrics import RelayMetrics
from ..kad.records import RELAY_PROVIDER_KEY
from ..kad.service import KadService
from .server import RelayService
from .turn import DEFAULT_REALM, TurnLimits
from .turn_io import MAX_RELAY_PORT, MIN_RELAY_PORT, TurnConfig, TurnService

if TYPE_CHECKING:
    from ..connection import Connection
    from ..transports.tls import ReloadingCertificate

log = logging.getLogger(__name__)

# How often a relay announces itself in the DHT again (go reprovides every 22 h, records
# last 48 h; relays come and go, and new DHT servers become the closest, so hourly).
RELAY_REPROVIDE_INTERVAL = 3600.0


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
    # WebSocket over TLS (`/tls/ws`): port, certificate chain and key files (reloaded on change)
    wss_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    limits: RelayLimits = field(default_factory=RelayLimits)
    # budgets of connections, streams and buffered bytes (p2prtc.resources)
    resources: ResourceLimits = field(default_factory=ResourceLimits)
    json: bool = False
    turn: TurnOptions = field(default_factory=lambda: TurnOptions())
    # the Kademlia DHT server (p2prtc.kad): on by default, so any relay is a bootstrap node;
    # `bootstrap`: DHT servers (multiaddrs) to join
    dht: bool = True
    bootstrap: list[str] = field(default_factory=list)
    # the AutoNAT v2 server (p2prtc.protocols.autonat): on by default; its rate limits (go's
    # defaults); `autonat_allow_private` dials a peer's own private/loopback IP (labs only)
    autonat: bool = True
    autonat_limits: AutoNATLimits = field(default_factory=lambda: AutoNATLimits())
    autonat_allow_private: bool = False


@dataclass
class AutoNATLimits:
    rpm: int = SERVER_RPM
    per_peer_rpm: int = SERVER_PER_PEER_RPM
    dial_data_rpm: int = SERVER_DIAL_DATA_RPM


@dataclass
class TurnOptions:
    enabled: bool = True
    # None: share the STUN server's primary UDP port (3478); else a UDP port of its own (0: any).
    port: int | None = None
    # None: the same port number as TURN's UDP port, over TCP; 0: any free port.
    tcp_port: int | None = None
    realm: str = DEFAULT_REALM
    secret: str | None = None           # None: a random one per run
    limits: TurnLimits = field(default_factory=TurnLimits)
    min_port: int = MIN_RELAY_PORT
    max_port: int = MAX_RELAY_PORT
    # An external TURN server (coturn with use-auth-secret): hand out credentials for these
    # URLs, signed with `secret`, instead of serving TURN ourselves.
    external_urls: list[str] = field(default_factory=list)


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
            ip = None
        for a in listen:
            comps = a.without_peer_id().components()
            if ip is None:  # a name stands for the listen address's family (A or AAAA records)
                head = f"/dns{6 if comps[0][0] == 'ip6' else 4}/{spec}"
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
        self.resources = self.metrics.resources = ResourceManager(opts.resources)
        self.host.upgrader.resources = self.resources
        self.relay = RelayService(self.host, opts.limits, self.metrics)
        self.kad = KadService(self.host, server=True).start() if opts.dht else None
        lim = opts.autonat_limits
        self.autonat = AutoNATService(self.host, server=ServerConfig(
            policy=ServerPolicy(allow_private=opts.autonat_allow_private,
                                can_dial=self._can_dial),
            limiter=RateLimiter(rpm=lim.rpm, per_peer_rpm=lim.per_peer_rpm,
                                dial_data_rpm=lim.dial_data_rpm),
        )) if opts.autonat else None
        self.stun_servers: list[StunServer] = []
        self.certificate: ReloadingCertificate | None = None  # with --wss-port
        self.turn: TurnService | None = None
        self.turn_credentials: TurnCredentialService | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.listen_addrs: list[Multiaddr] = []
        self.started = time.monotonic()

    def _can_dial(self, addr: Multiaddr) -> bool:
        """AutoNAT dials back only what one of our transports dials (a QUIC address is refused,
        not reported unreachable); never through a relay."""
        return not addr.has("p2p-circuit") and any(t.can_dial(addr) for t in self.host.transports)

    def emit(self, event: str, **fields: object) -> None:
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
            if o.wss_port is not None:
                wanted.append(f"/{proto}/{ip}/tcp/{o.wss_port}/tls/ws")
            if o.webrtc_port is not None:
                # certhash of a certificate derived from the identity: same key, same address
                wanted.append(f"/{proto}/{ip}/udp/{o.webrtc_port}/webrtc-direct")
        if o.wss_port is not None:
            from ..transports.tls import ReloadingCertificate
            from ..transports.websocket import websocket_transport

            if o.tls_cert is None or o.tls_key is None:  # (the CLI checks: --wss-port needs both)
                raise ValueError("--wss-port needs --tls-cert and --tls-key")
            websocket_transport(self.host.transports).server_tls = self.certificate = \
                ReloadingCertificate(o.tls_cert, o.tls_key)
            self.metrics.certificate = self.certificate
        for w in wanted:
            self.listen_addrs += await self.host.listen(w)
        if o.announce:
            self.host.announce_addrs = announce_addrs(self.listen_addrs, o.announce)
        if o.stun_port:
            for ip in ips:
                await self._start_stun(ip)
        if o.metrics_port is not None:
            await self._start_metrics(o.listen_ip, o.metrics_port)
        if o.turn.external_urls:
            assert o.turn.secret, "an external TURN server needs its shared secret"
            self.turn_credentials = TurnCredentialService(
                self.host, o.turn.secret, lambda conn: list(o.turn.external_urls))
        elif o.turn.enabled:
            await self._start_turn()
        self.host.events.on(ConnectionOpened, lambda e: log.debug("connection %r", e.connection))
        if self.kad is not None:
            self.host.spawn(self._join_dht())
        return self.printed_addrs()

    async def _join_dht(self) -> None:
        """Join the DHT through --bootstrap peers, then provide the relays' key (relay
        discovery) so that listeners find us; `dht {peers, bootstrap}` once done."""
        assert self.kad is not None
        joined = await self.kad.bootstrap(self.opts.bootstrap) if self.opts.bootstrap else []
        if self.opts.bootstrap and not joined:
            log.warning("no --bootstrap DHT peer reachable: serving the DHT on our own")
        provided = await self.kad.provide(RELAY_PROVIDER_KEY)
        self.emit("dht", peers=len(self.kad.table), bootstrap=[str(p) for p in joined],
                  provided=provided)
        while True:  # the provider record expires (48 h) and the closest peers change
            await asyncio.sleep(RELAY_REPROVIDE_INTERVAL)
            if not len(self.kad.table) and self.opts.bootstrap:
                await self.kad.bootstrap(self.opts.bootstrap)
            await self.kad.provide(RELAY_PROVIDER_KEY)

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

    async def _start_turn(self) -> None:
        o, t = self.opts, self.opts.turn
        # one TURN server on every listen IP (IPv4 and, with --listen-ip :: or --use-ipv6, IPv6:
        # RFC 6156), relaying from sockets of each family on its listen IP
        ips = [o.listen_ip] + (["::"] if o.use_ipv6 and ":" not in o.listen_ip else [])
        shared = list(self.stun_servers)
        if t.port is None and not shared:
            log.info("TURN off: it shares the STUN port and STUN is off (--stun-port 0); "
                     "give --turn-port for a port of its own")
            return
        public = next((a for a in o.announce if _is_ip(a, 4)), None)
        public6 = next((a for a in o.announce if _is_ip(a, 6)), None)
        secret = t.secret or secrets.token_urlsafe(32)
        service = TurnService(TurnConfig(
            secret, t.realm, t.limits, relay_ip=next((ip for ip in ips if ":" not in ip), None),
            public_ip=public, relay_ip6=next((ip for ip in ips if ":" in ip), None),
            public_ip6=public6, min_port=t.min_port, max_port=t.max_port), self.metrics.turn)
        try:
            if t.port is None or (shared and t.port == o.stun_port):
                for stun in shared:
                    service.share(stun)
            else:
                for ip in ips:
                    await service.listen_udp(ip, t.port)
            port = service.udp_addresses[0][1] if t.tcp_port is None else t.tcp_port
            for ip in ips:
                try:
                    port = (await service.listen_tcp(ip, port))[1]
                except OSError as e:
                    if t.tcp_port is not None or service.tcp_addresses:
                        raise
                    log.info("TURN over TCP: port %d is taken (%s), using a free one", port,
                             e.strerror or e)
                    port = (await service.listen_tcp(ip, 0))[1]
        except OSError:
            service.close()
            raise
        self.turn = service
        self.turn_credentials = TurnCredentialService(self.host, secret, self.turn_urls_for)
        log.info("TURN server: UDP %s, TCP %s, relayed ports %d-%d on %s, realm %r",
                 ", ".join(f"{a}:{p}" for a, p in service.udp_addresses),
                 ", ".join(f"{a}:{p}" for a, p in service.tcp_addresses),
                 t.min_port, t.max_port, " and ".join(ips), t.realm)

    def turn_hosts(self) -> list[str]:
        """The hosts peers reach our TURN server at: announced IPv4 addresses and DNS names,
        else the listen IP (each local IPv4 address for 0.0.0.0, loopback last); then, when
        TURN listens on IPv6, announced IPv6 addresses, else the IPv6 listen IP's, bracketed
        (RFC 7065)."""
        o = self.opts
        hosts = [a for a in o.announce if not a.startswith("/") and ":" not in a]
        if not hosts and ":" not in o.listen_ip:
            hosts = sorted(expand_unspecified(o.listen_ip), key=lambda ip: ip.startswith("127."))
        if self.turn is not None and any(":" in a for a, _ in self.turn.udp_addresses):
            six = [a for a in o.announce if _is_ip(a, 6)]
            if not six:
                six = sorted(expand_unspecified(o.listen_ip if ":" in o.listen_ip else "::"),
                             key=lambda ip: ip == "::1")
            hosts += [f"[{ip}]" for ip in six]
        return hosts

    def turn_urls(self, first_host: str | None = None) -> list[str]:
        """Our TURN URLs (udp, then tcp, per host); `first_host`'s first when it is one."""
        if self.turn is None:
            return list(self.opts.turn.external_urls)
        hosts = self.turn_hosts()
        if first_host is not None and not is_loopback(first_host):
            # a peer that reached us from elsewhere cannot use 127.0.0.1 (and would try its own)
            hosts = [h for h in hosts if not is_loopback(h.strip("[]"))] or hosts
        if first_host is not None and ":" in first_host:
            first_host = f"[{first_host}]"
        if first_host in hosts:
            hosts.remove(first_host)
            hosts.insert(0, first_host)
        udp, tcp = self.turn.udp_addresses[0][1], self.turn.tcp_addresses[0][1]
        return [u for h in hosts for u in (f"turn:{h}:{udp}?transport=udp",
                                           f"turn:{h}:{tcp}?transport=tcp")]

    def turn_urls_for(self, conn: Connection) -> list[str]:
        """The URLs a peer on `conn` gets: the relay IP it reached first."""
        local = conn.local_addr
        return self.turn_urls(local.value_for("ip4") or local.value_for("ip6"))

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
        if self.turn is not None:
            self.turn.close()
        for server in self.stun_servers:
            server.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.host.close()


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _version() -> str:
    from .. import __version__

    return __version__


# File descriptors beyond one per connection: listeners, STUN/TURN sockets, TURN's relayed
# sockets, files (go's rcmgr likewise keeps its FD budget at half the process limit).
FD_HEADROOM = 1024


def raise_fd_limit(limits: ResourceLimits) -> int:
    """Every connection is a socket: raise the soft RLIMIT_NOFILE (often 1024) towards the hard
    one so that the connection budget, not EMFILE, is what refuses connections. Returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    conns = limits.system.conns or 65536
    want = conns + FD_HEADROOM
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft < want:
        log.warning("only %d file descriptors allowed (ulimit -n; hard limit %d): fewer than "
                    "--max-connections %d needs; connections beyond that fail with EMFILE",
                    soft, hard, conns)
    return soft


async def run_relay(opts: RelayOptions) -> int:
    raise_fd_limit(opts.resources)
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
    turn_urls = app.turn_urls()
    if opts.json:
        app.emit("listening", addrs=[str(a) for a in addrs], peer=str(app.host.peer_id))
        if app.turn_credentials is not None:
            app.emit("turn", urls=turn_urls, external=app.turn is None)
    else:
        for a in addrs:
            print(f"Listening on {a}", flush=True)
        if app.turn_credentials is not None:
            how = "TURN on" if app.turn is not None else "TURN credentials for"
            for url in turn_urls:
                print(f"{how} {url}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await app.close()
    return 0
