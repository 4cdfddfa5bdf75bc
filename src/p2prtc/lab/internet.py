"""`p2prtc lab internet`: a small internet (issue 15.5). A "public" segment with `nodes` DHT
servers (a mix of go-libp2p-kad-dht, rust-libp2p kad and ours, `lab.internet_node`) and three
`p2prtc relay`s (DHT on, bootstrapped into the others), and the lab's two NATed sites: A runs
`p2prtc listen --bootstrap <a go node>` (no relay given: it finds two relays in the DHT,
reserves on both and publishes its record), B runs `p2prtc dial PEER_ID --bootstrap <a rust
node>` (finds the record, connects, upgrades to direct WebRTC, or WebRTC via TURN where the NATs
allow nothing else). Then the relay of the address the dial went through is SIGKILLed; the
listener must republish its record without it, and a fresh `dial PEER_ID` (bootstrapped through
one of our nodes) must still reach the listener, through the other relay; after the relay
keeper's grace (`--relay-grace`, the lab's `RELAY_GRACE`) the listener reserves on the third relay
(found in the DHT) and publishes its record through two relays again.

Measured on the lab's clock (when it read each event line): the DHT lookup (`found` minus the
dialer's `peer` line, i.e. from the dial starting, after the process is up), `dial PEER_ID` to
connected (direct or TURN), the relay's death to the republished record, to the fresh
dialer's connection, and to the record through the replacement relay. Go's and rust's nodes are the interop binaries (tests/interop/go/kad,
`p2prtc-interop-rust kad`); which paths: $P2PRTC_GOKAD, $P2PRTC_RUST_BINARY.

Addresses (RFC 5737, the lab's internet 203.0.113.0/24): relays .10 (STUN's second IP .11),
.12 (.13), .14 (.15); DHT nodes .100 onwards, one namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .internet_node import NODE_PORT
from .nat import NAT_TYPES, predict
from .netns import LabError, remove_leftovers
from .procs import LabEvent, LabProcess, ProcessGroup, python_argv
from .scenario import _LIVE, START_TIMEOUT
from ..transports.webrtc.transport import PATH_SETTLE
from .topology import RELAY_IP, RELAY_IP2, RELAY_PORT, STUN_ALT_PORT, STUN_PORT, Lab

log = logging.getLogger(__name__)

KINDS = ("ours", "go", "rust")
# issue 15.5: 20 DHT nodes and 3 relays; the CI run takes fewer nodes (tests/lab/test_internet)
DEFAULT_NODES = 20
RELAYS = 3
MAX_NODES = 100  # .100-.199 of the lab's internet
# (IP, STUN's second IP) of each relay; the first is the lab's own relay host
RELAY_HOSTS = ((RELAY_IP, RELAY_IP2), ("203.0.113.12", "203.0.113.13"),
               ("203.0.113.14", "203.0.113.15"))
FIRST_NODE_IP = 100
# How long the lab waits for each step before calling it failed (seconds, a loaded machine).
JOIN_TIMEOUT = 40.0      # a node joined (go's connect waits for its routing-table check, 20 s)
PUBLISH_TIMEOUT = 60.0   # relays found, two reservations, the record put
CONNECT_TIMEOUT = 60.0   # found, relayed connection, WebRTC (ICE gives up after ~30 s)
PATH_GRACE = 5.0         # after PATH_SETTLE, for the `path` line on a loaded machine
# The listener's relay keeper grace (`listen --relay-grace`; relaykeeper.LOST_GRACE is 30 s, for
# relays that restart): short here, so that the replacement is measured in a CI-sized run.
RELAY_GRACE = 3.0

GOKAD = Path(os.environ.get("P2PRTC_GOKAD", Path.home() / ".cache/p2prtc/bin/gokad"))
RUST_NAME = "p2prtc-interop-rust"


def go_binary() -> str:
    if not os.access(GOKAD, os.X_OK):
        raise LabError(f"{GOKAD} (go's DHT node) is missing: run tests/interop/go/build.sh")
    return str(GOKAD)


def rust_binary() -> str:
    explicit = os.environ.get("P2PRTC_RUST_BINARY")
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/p2prtc/cargo-target"))
    for p in ([Path(explicit)] if explicit else
              [target / "debug" / RUST_NAME, target / "release" / RUST_NAME]):
        if os.access(p, os.X_OK):
            return str(p)
    raise LabError(f"{RUST_NAME} (rust's DHT node) is missing: run tests/interop/rust/build.sh "
                   "or set P2PRTC_RUST_BINARY")


def node_kinds(n: int) -> list[str]:
    """ours, go, rust, ours, ...: 20 -> 7 ours, 7 go, 6 rust; node 0 (the seed) is ours."""
    return [KINDS[i % len(KINDS)] for i in range(n)]


@dataclass
class InternetOptions:
    nodes: int = DEFAULT_NODES
    nat_a: str = "port-restricted"
    nat_b: str = "port-restricted"
    kill_relay: bool = True
    relay_grace: float = RELAY_GRACE
    keep_logs: str | None = None
    verbose: int = 0

    def check(self) -> None:
        for t in (self.nat_a, self.nat_b):
            if t not in NAT_TYPES:
                raise LabError(f"unknown NAT type {t!r}: one of {', '.join(NAT_TYPES)}")
        if not 3 <= self.nodes <= MAX_NODES:
            raise LabError(f"--nodes must be 3-{MAX_NODES} (one of each kind at least)")
        if self.relay_grace <= 0:
            raise LabError("--relay-grace must be more than 0 seconds")


@dataclass
class DialResult:
    bootstrap: str = ""          # the DHT node it asked (kind)
    found: bool = False
    source: str | None = None    # record, provider, peer-routing
    lookup_ms: float | None = None
    connected_ms: float | None = None  # from the dial starting to the final connection
    path: str | None = None      # direct, turn, relay (after ICE settled)
    first_path: str | None = None  # the path of the `connected` line
    relay: str | None = None     # the relay whose circuit the connection came through
    addrs: list[str] = field(default_factory=list)


@dataclass
class InternetResult:
    nat_a: str
    nat_b: str
    expected_path: str
    nodes: dict[str, int] = field(default_factory=dict)
    relays: int = RELAYS
    listener_relays: list[str] = field(default_factory=list)
    published_ms: float | None = None  # listener start -> record published
    first: DialResult = field(default_factory=DialResult)
    killed_relay: str | None = None
    republished_ms: float | None = None  # relay killed -> record without it published
    after: DialResult | None = None
    kill_to_reachable_ms: float | None = None
    relay_grace: float = RELAY_GRACE
    replacement: str | None = None  # the relay the keeper reserved on instead of the dead one
    replaced_ms: float | None = None  # relay killed -> record through two live relays again
    error: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    logs: str | None = None

    @property
    def reachable_after_kill(self) -> bool:
        return self.after is not None and self.after.path is not None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.first.found
                and self.first.path == self.expected_path
                and (self.killed_relay is None
                     or (self.reachable_after_kill and self.replaced_ms is not None)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, reachable_after_kill=self.reachable_after_kill)
        return d


def _relay_of(addr: str) -> str | None:
    """The relay's peer id in `<relay>/p2p/<id>/p2p-circuit/...`, else None."""
    head, sep, _ = addr.partition("/p2p-circuit")
    return head.rsplit("/p2p/", 1)[1] if sep and "/p2p/" in head else None


class InternetRun:
    def __init__(self, opts: InternetOptions,
                 on_event: Callable[[str, LabEvent], None] | None = None) -> None:
        opts.check()
        self.opts = opts
        self.on_event = on_event
        self.procs = ProcessGroup(self._forward, opts.keep_logs)
        self.lab = Lab(opts.nat_a, opts.nat_b)
        self.relays: dict[str, LabProcess] = {}  # peer id -> process
        self.node_addrs: dict[str, list[str]] = {k: [] for k in KINDS}
        self.expected_path = "direct" if predict(opts.nat_a, opts.nat_b).direct else "turn"

    def _forward(self, source: str, ev: LabEvent) -> None:
        if self.on_event is not None:
            self.on_event(source, ev)

    def note(self, event: str, **fields: Any) -> None:
        self._forward("lab", {"event": event, **fields})

    @property
    def _verbose(self) -> list[str]:
        return ["-" + "v" * self.opts.verbose] if self.opts.verbose else []

    async def run(self) -> InternetResult:
        o = self.opts
        result = InternetResult(o.nat_a, o.nat_b, self.expected_path, logs=self.procs.log_dir,
                                relay_grace=o.relay_grace)
        t0 = time.monotonic()
        removed = remove_leftovers()
        if removed:
            self.note("leftovers-removed", namespaces=removed)
        _LIVE.add(self.lab)
        try:
            binaries = {"go": go_binary(), "rust": rust_binary()}
            self.lab.build()
            await self._run(result, binaries)
        except LabError as e:
            result.error = str(e)
        finally:
            stopping = asyncio.ensure_future(self._stop(result))
            while not stopping.done():  # cleanup runs to the end, also through Ctrl-C
                try:
                    await asyncio.shield(stopping)
                except asyncio.CancelledError:
                    continue
            self.lab.destroy()
            _LIVE.discard(self.lab)
            result.seconds = round(time.monotonic() - t0, 2)
            if o.keep_logs is None and result.ok:
                shutil.rmtree(self.procs.log_dir, ignore_errors=True)
                result.logs = None
        return result

    async def _stop(self, result: InternetResult) -> None:
        for p in self.procs.procs:
            cpu = p.cpu_seconds()
            if cpu is not None:
                result.cpu_seconds[p.name] = cpu
        await self.procs.stop_all()
        for p in self.procs.procs:
            cpu = p.cpu_seconds()
            if cpu is not None:
                result.cpu_seconds[p.name] = round(cpu, 2)

    # -- the public segment ------------------------------------------------------------------

    async def _node(self, i: int, kind: str, ns: str, ip: str, binaries: dict[str, str],
                    seed: str | None) -> str:
        """Start DHT node `i` and join it to `seed`; returns its address."""
        name = f"{kind}-{i}"
        if kind == "ours":
            p = await self.procs.start(name, ns, python_argv(
                "p2prtc.lab.internet_node", "--ip", ip, "--port", str(NODE_PORT),
                *(["--bootstrap", seed] if seed else []), *self._verbose))
            addr = str((await p.wait_event("listening", START_TIMEOUT))["addr"])
            joined = await p.wait_event("joined", JOIN_TIMEOUT)
            if seed and not joined["bootstrap"]:
                raise LabError(f"{name} did not join the DHT through {seed}")
        else:
            argv = ([binaries["go"], "-mode", "server", "-ip", ip] if kind == "go" else
                    [binaries["rust"], "kad", "--mode", "server", "--ip", ip])
            p = await self.procs.start(name, ns, argv)
            addr = str((await p.wait_event(None, START_TIMEOUT, lambda e: "addr" in e))["addr"])
            if seed:
                await p.send_line(json.dumps({"cmd": "connect", "addr": seed}))
                reply = await p.wait_event(None, JOIN_TIMEOUT, lambda e: "ok" in e)
                if not reply["ok"] or not (reply.get("in_rt") or reply.get("kad")):
                    raise LabError(f"{name} did not join the DHT through {seed}: {reply}")
        self.node_addrs[kind].append(addr)
        return addr

    async def _start_relay(self, i: int, ns: str, seeds: list[str]) -> None:
        ip, alt = RELAY_HOSTS[i]
        boot = [a for s in seeds for a in ("--bootstrap", s)]
        p = await self.procs.start(f"relay-{i + 1}", ns, python_argv(
            "p2prtc", "relay", "--listen-ip", ip, "--port", str(RELAY_PORT),
            "--stun-port", str(STUN_PORT), "--stun-alt-port", str(STUN_ALT_PORT),
            "--stun-alt-ip", alt, "--json", *boot, *self._verbose))
        listening = await p.wait_event("listening", START_TIMEOUT)
        dht = await p.wait_event("dht", JOIN_TIMEOUT)
        if not dht.get("bootstrap"):
            raise LabError(f"relay-{i + 1} joined no DHT node")
        self.relays[str(listening["peer"])] = p

    async def _build_internet(self, result: InternetResult, binaries: dict[str, str]) -> None:
        o = self.opts
        kinds = node_kinds(o.nodes)
        result.nodes = {k: kinds.count(k) for k in KINDS}
        ips = [f"203.0.113.{FIRST_NODE_IP + i}" for i in range(o.nodes)]
        dht_ns = self.lab.add_public_host("dht", ips)
        relay_ns = [self.lab.relay_ns] + [
            self.lab.add_public_host(f"relay{i + 1}", list(RELAY_HOSTS[i]), blackhole=True)
            for i in range(1, RELAYS)]
        t = time.monotonic()
        seed = await self._node(0, kinds[0], dht_ns, ips[0], binaries, None)
        await asyncio.gather(*(self._node(i, kinds[i], dht_ns, ips[i], binaries, seed)
                               for i in range(1, o.nodes)))
        self.note("dht-up", nodes=result.nodes, ms=round((time.monotonic() - t) * 1000))
        # each relay joins through the seed and a go node (two ways in)
        await asyncio.gather(*(self._start_relay(i, relay_ns[i], [seed, self.node_addrs["go"][0]])
                               for i in range(RELAYS)))
        self.note("relays-up", relays=list(self.relays))

    # -- the peers ---------------------------------------------------------------------------

    def _peer_argv(self, *args: str) -> list[str]:
        return python_argv("p2prtc", *args, "--json", *self._verbose)

    async def _dial(self, name: str, peer: str, kind: str,
                    r: DialResult) -> tuple[LabProcess, float]:
        """`dial PEER_ID --bootstrap <a node of `kind`>` from side B, filling `r`; returns the
        process and when it reported the connection."""
        boot = self.node_addrs[kind][-1]
        r.bootstrap = kind
        d = await self.procs.start(name, self.lab.sides["b"].peer_ns,
                                   self._peer_argv("dial", peer, "--bootstrap", boot))
        start = d.arrived(await d.wait_event("peer", START_TIMEOUT))
        found = await d.wait_event("found", CONNECT_TIMEOUT)
        r.found, r.source, r.addrs = True, found.get("source"), list(found.get("addrs") or [])
        r.lookup_ms = round((d.arrived(found) - start) * 1000)
        conn = await d.wait_event("connected", CONNECT_TIMEOUT, lambda e: e.get("peer") == peer)
        r.connected_ms = round((d.arrived(conn) - start) * 1000)
        r.path = r.first_path = str(conn.get("path"))
        t_conn = d.arrived(conn)
        if r.path == "turn" and self.expected_path == "direct":
            # libwebrtc may start on a TURN pair and move to a direct one (`path`, checked
            # PATH_SETTLE after connecting): the time to direct is then that line's
            try:
                moved = await d.wait_event("path", PATH_SETTLE + PATH_GRACE,
                                           lambda e: e.get("peer") == peer)
            except LabError:
                pass
            else:
                r.path = str(moved.get("path"))
                if r.path == "direct":
                    t_conn = d.arrived(moved)
                    r.connected_ms = round((t_conn - start) * 1000)
        # the relayed connection the WebRTC upgrade ran over (its `relayed` line)
        relayed = [e for e in d.events if e.get("event") == "relayed" and e.get("peer") == peer]
        r.relay = _relay_of(str(relayed[-1].get("addr", ""))) if relayed else None
        self.note("dialed", name=name, **asdict(r))
        return d, t_conn

    async def _run(self, result: InternetResult, binaries: dict[str, str]) -> None:
        await self._build_internet(result, binaries)
        t_listen = time.monotonic()
        lis = await self.procs.start("listener", self.lab.sides["a"].peer_ns, self._peer_argv(
            "listen", "--bootstrap", self.node_addrs["go"][-1],
            "--relay-grace", str(self.opts.relay_grace)))
        peer = str((await lis.wait_event("peer", START_TIMEOUT))["peer"])
        published = await lis.wait_event("published", PUBLISH_TIMEOUT)
        result.published_ms = round((lis.arrived(published) - t_listen) * 1000)
        result.listener_relays = sorted({r for a in published["addrs"]
                                         if (r := _relay_of(a)) is not None})
        if len(result.listener_relays) < 2:
            raise LabError(f"the listener reserved on {len(result.listener_relays)} relay(s), "
                           "not two")
        d1, _ = await self._dial("dialer", peer, "rust", result.first)
        if not self.opts.kill_relay:
            return
        victim = result.first.relay or _relay_of(result.first.addrs[0])
        if victim is None or victim not in self.relays:
            raise LabError(f"cannot tell which relay the dial went through: {result.first}")
        await d1.stop()  # the first dialer is done (it would keep a direct connection)
        result.killed_relay = victim
        t_kill = time.monotonic()
        await self.relays[victim].kill()
        self.note("relay-killed", relay=victim)
        republished = await lis.wait_event(
            "published", PUBLISH_TIMEOUT,
            lambda e: lis.arrived(e) > t_kill and not any(victim in a for a in e["addrs"]))
        result.republished_ms = round((lis.arrived(republished) - t_kill) * 1000)
        result.after = DialResult()
        _d2, t_conn = await self._dial("dialer-2", peer, "ours", result.after)
        result.kill_to_reachable_ms = round((t_conn - t_kill) * 1000)
        if result.after.relay == victim:
            raise LabError(f"the fresh dial went through the killed relay {victim}")
        # the relay keeper: after its grace, a third relay from the DHT, and the record again
        spare = [r for r in self.relays if r not in result.listener_relays]
        added = await lis.wait_event("relay-added", PUBLISH_TIMEOUT + self.opts.relay_grace)
        result.replacement = _relay_of(str(added.get("relay", "")) + "/p2p-circuit")
        if result.replacement not in spare:
            raise LabError(f"the listener replaced {victim} by {result.replacement}, not by "
                           f"the third relay {spare}")
        want = (set(result.listener_relays) - {victim}) | {result.replacement}
        replaced = await lis.wait_event(
            "published", PUBLISH_TIMEOUT,
            lambda e: {_relay_of(a) for a in e["addrs"]} == want)
        result.replaced_ms = round((lis.arrived(replaced) - t_kill) * 1000)


async def run_internet(opts: InternetOptions,
                       on_event: Callable[[str, LabEvent], None] | None = None
                       ) -> InternetResult:
    return await InternetRun(opts, on_event).run()


# -- presenting results -----------------------------------------------------------------------

def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _path(d: DialResult | None) -> str:
    if d is None or d.path is None:
        return "unreachable"
    return d.path if d.first_path in (None, d.path) else f"{d.first_path} -> {d.path}"


def internet_table(r: InternetResult) -> str:
    f, a = r.first, r.after
    rows = [
        ("DHT nodes", ", ".join(f"{n} {k}" for k, n in r.nodes.items()) + f" + {r.relays} relays"),
        ("NATs (A listens, B dials)", f"{r.nat_a} x {r.nat_b} (expected: {r.expected_path})"),
        ("listener start -> record published", f"{_ms(r.published_ms)} (relays from the DHT: "
         f"{len(r.listener_relays)})"),
        (f"DHT lookup (found - dial start; via a {f.bootstrap} node)",
         f"{_ms(f.lookup_ms)} ({f.source})"),
        ("dial PEER_ID -> direct (or TURN)", f"{_ms(f.connected_ms)} ({_path(f)})"),
    ]
    if r.killed_relay:
        rows += [
            ("relay killed (SIGKILL) -> record republished", _ms(r.republished_ms)),
            (f"fresh dial: DHT lookup (via a {a.bootstrap if a else '?'} node)",
             f"{_ms(a.lookup_ms if a else None)} ({a.source if a else '-'})"),
            ("fresh dial PEER_ID -> connected",
             f"{_ms(a.connected_ms if a else None)} ({_path(a)})"),
            ("relay killed -> reachable again", _ms(r.kill_to_reachable_ms)),
            ("reachable after the relay died", "yes" if r.reachable_after_kill else "NO"),
            (f"relay killed -> record through a third relay (grace {r.relay_grace:g} s)",
             _ms(r.replaced_ms)),
        ]
    by_kind: dict[str, float] = {}
    for name, cpu in r.cpu_seconds.items():
        kind = name.split("-")[0] if name.split("-")[0] in (*KINDS, "relay") else name
        by_kind[kind] = by_kind.get(kind, 0.0) + cpu
    rows.append(("CPU seconds", ", ".join(f"{k} {v:.1f}" for k, v in by_kind.items())))
    out = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


def describe_internet(r: InternetResult) -> str:
    head = (f"lab internet: {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f} s"
            + (f": {r.error}" if r.error else ""))
    if r.logs:
        head += f"\nlogs: {r.logs}"
    return head
