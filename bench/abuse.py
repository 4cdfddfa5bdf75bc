"""Abuse under load (issue 12.3): do honest peers still get through `p2prtc relay` while thousands
of abusive connections try to use it up?

    scripts/netns-run .venv/bin/python bench/abuse.py [--honest 50] [--per-kind 400]
        [--abuse-ips 32] [--duration 60] [--json out.json]

`p2prtc relay` runs as a subprocess (its default budgets, `--limit-loopback` so the per-IP
budget applies on loopback too, and the reservation/circuit/connection *rate* limits lifted so
that the honest load itself is not throttled). Two phases, each `--duration` seconds, in one run:

1. honest only: `--honest` Python peers (this process), each holding a reservation, do one
   operation every `--interval` seconds: RESERVE again on its relay connection, dial another
   honest peer through the relay (hop CONNECT, STOP, Noise + yamux over the circuit), one ping
   over it, close; every 5th operation also makes a fresh TCP connection to the relay
   (Noise, yamux, RESERVE) and closes it. An operation succeeds when all of it does; its time
   counts from its start to the ping's answer.
2. the same, while a second process (`--abuser`) keeps `--per-kind` abusive connections of
   each kind open from `--abuse-ips` loopback addresses (127.1.0.x): TCP connected and silent
   (half-open); Noise started (multistream, Noise message 1) and never finished; WebSocket
   upgrades sent a header line every 2 s (slowloris); authenticated connections with 16 ping
   streams each, one ping written and the answers never read; and UDP sockets flooding the
   STUN/TURN port with Binding and Allocate requests (`--flood-pps` in all). A connection the
   relay closes is opened again at once.

Alongside, a second `p2prtc relay` that nobody abuses serves `--control` honest peers of its
own (25) in both phases: the same machine at the same moment, so that what the abuse costs the
honest peers can be told from what the machine's other load does (these machines are shared).
The abusive connections run at nice 19 (attackers have CPUs of their own; what they cost the
relay is what is measured) and the flood in a process of its own at normal priority.

The table gives the honest operations, their success and latency, how many abusive
connections the relay held at the end (the abuser's count of open ones, and the relay's own
transient/system usage from /metrics), the budget refusals, and the relay's CPU and peak RSS.
Mind the fd limits: this process raises its soft RLIMIT_NOFILE to the hard limit, and the relay
and the abuser inherit it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from peers import cpu_seconds, machine_busy_seconds, markdown_table, rss_kib, self_cpu  # noqa: E402

from p2prtc.connection import Connection  # noqa: E402
from p2prtc.host import Host  # noqa: E402
from p2prtc.identity import Identity  # noqa: E402
from p2prtc.multiaddr import Multiaddr  # noqa: E402
from p2prtc.protocols.ping import PING  # noqa: E402
from p2prtc.transports.circuit import CircuitListener, CircuitTransport, reserve  # noqa: E402
from p2prtc.transports.tcp import TcpStream  # noqa: E402
from p2prtc.upgrader import Upgrader  # noqa: E402
from p2prtc.wire.multistream import PROTOCOL_ID, encode_message  # noqa: E402

LIFTED = "1000000/1"
RELAY_FLAGS = [
    "--limit-loopback", "--no-circuit-limits",
    "--reservation-rate-per-peer", LIFTED, "--reservation-rate-per-ip", LIFTED,
    "--circuit-rate-per-peer", LIFTED, "--circuit-rate-per-ip", LIFTED,
    "--connection-rate-per-ip", LIFTED,
    "--max-reservations", "4096", "--max-circuits", "4096", "--max-circuits-per-peer", "64",
]
KINDS = ("half-open", "noise-stall", "slowloris", "stream-hog", "stun-flood")
SLOWLORIS_INTERVAL = 2.0
HOG_STREAMS = 16
FRESH_EVERY = 5
REFUSED_BACKOFF = 0.5
ABUSER_NICE = 19


@dataclass
class Config:
    honest: int = 50
    control: int = 25  # honest peers on a second relay that nobody abuses (0: none)
    per_kind: int = 400
    abuse_ips: int = 32
    duration: float = 60.0
    interval: float = 2.0
    flood_pps: int = 2000
    ramp: float = 5.0  # seconds the abusers get to reach their numbers before phase 2 counts
    phases: list[str] = field(default_factory=lambda: ["honest", "abuse"])


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the relay -------------------------------------------------------------------------------


class RelayProcess:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.addrs: list[str] = []
        self.stun_port = free_udp_port()
        self.metrics_port = 0

    async def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2prtc", "relay", "--listen-ip", "127.0.0.1", "--port", "0",
            "--websocket-port", "0", "--stun-port", str(self.stun_port), "--stun-alt-port", "0",
            "--metrics-port", str(self.metrics_port), "--json", *RELAY_FLAGS,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("p2prtc relay exited before listening")
                ev = json.loads(line)
                if ev.get("event") == "listening":
                    self.addrs = ev["addrs"]
                    break

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def tcp(self) -> str:
        return next(a for a in self.addrs if "/ws" not in a)

    @property
    def ws(self) -> str:
        return next(a for a in self.addrs if "/ws" in a)

    async def metrics(self) -> dict[str, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
        out: dict[str, float] = {}
        for line in body.splitlines():
            m = re.match(r"(p2prtc_relay_resource_\w+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


# -- honest peers ----------------------------------------------------------------------------


@dataclass
class Op:
    ok: bool
    seconds: float
    error: str = ""
    parts: dict[str, float] = field(default_factory=dict)  # seconds per step


class Honest:
    def __init__(self, relay_addr: str, index: int) -> None:
        self.relay_addr = Multiaddr(relay_addr)
        self.relay_peer = self.relay_addr.peer_id()
        self.host = Host()
        self.ops: list[Op] = []
        # its own address for fresh connections, as every honest peer out there has one (one
        # address for all 50 would put them all under one per-IP budget)
        self.ip = f"127.0.0.{2 + index}"

    async def start(self) -> None:
        await self.host.listen(self.relay_addr.encapsulate("/p2p-circuit"))
        await self.host.listeners(CircuitListener)[-1].reserved(30)

    def relay_conn(self) -> Connection:
        assert self.relay_peer is not None
        conns = [c for c in self.host.connections(self.relay_peer) if not c.is_closed]
        if not conns:
            raise RuntimeError("no connection to the relay")
        return conns[-1]

    async def op(self, target: Honest, fresh: bool, parts: dict[str, float]) -> None:
        loop = asyncio.get_running_loop()
        t = loop.time()

        def step(name: str) -> None:
            nonlocal t
            now = loop.time()
            parts[name] = now - t
            t = now

        await reserve(self.relay_conn())
        step("reserve")
        # A new circuit every time: what is measured (host.dial would reuse an open relayed
        # connection to the target, though never one it is closing: Connection.going_away).
        conn = await self.host.transport(CircuitTransport).dial_via(self.relay_addr,
                                                                     target.host.peer_id)
        self.host.add_connection(conn)
        step("circuit")
        try:
            await self.host.ping_service.ping(conn)
            step("ping")
        finally:
            await conn.close()
        if fresh:  # a new connection to the relay (TCP, Noise, yamux, RESERVE) gets in too
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", int(self.relay_addr.value_for("tcp") or 0), local_addr=(self.ip, 0))
            fresh_conn = await Upgrader(Identity.generate()).upgrade_outbound(
                TcpStream(reader, writer), self.relay_peer, "tcp")
            fresh_conn.start(lambda s: s.reset())
            try:
                await reserve(fresh_conn)
                step("fresh connection")
            finally:
                await fresh_conn.close()

    async def run(self, peers: list[Honest], cfg: Config, stop: asyncio.Event) -> None:
        n = 0
        await asyncio.sleep(random.random() * cfg.interval)  # spread the clients over time
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            n += 1
            target = random.choice([p for p in peers if p is not self])
            t0 = loop.time()
            parts: dict[str, float] = {}
            try:
                async with asyncio.timeout(20):
                    await self.op(target, n % FRESH_EVERY == 0, parts)
                self.ops.append(Op(True, loop.time() - t0, parts=parts))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                self.ops.append(Op(False, loop.time() - t0, f"{type(e).__name__}: {e}", parts))
            rest = cfg.interval - (loop.time() - t0)
            if rest > 0:
                try:
                    await asyncio.wait_for(stop.wait(), rest)
                except TimeoutError:
                    pass


# -- abusers (the --abuser process) ----------------------------------------------------------


class Abuser:
    def __init__(self, cfg: Config, relay_tcp: str, relay_ws: str, stun_port: int) -> None:
        self.cfg = cfg
        t, w = Multiaddr(relay_tcp), Multiaddr(relay_ws)
        self.tcp = ("127.0.0.1", int(t.value_for("tcp") or 0))
        self.ws = ("127.0.0.1", int(w.value_for("tcp") or 0))
        self.relay_peer = t.peer_id()
        self.stun = ("127.0.0.1", stun_port)
        self.held = dict.fromkeys(KINDS, 0)
        self.opened = dict.fromkeys(KINDS, 0)
        self.refused = dict.fromkeys(KINDS, 0)  # closed by the relay within 1 s
        self.flood_sent = 0

    def ip(self, i: int) -> str:
        return f"127.1.0.{1 + i % self.cfg.abuse_ips}"

    async def _hold(self, kind: str, i: int, body: Any) -> None:
        """Keep one abusive connection of `kind` open, reopening it whenever it ends."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            writer = None
            try:
                reader, writer = await asyncio.open_connection(
                    *(self.ws if kind == "slowloris" else self.tcp), local_addr=(self.ip(i), 0))
                self.opened[kind] += 1
                self.held[kind] += 1
                try:
                    await body(reader, writer)
                finally:
                    self.held[kind] -= 1
            except Exception:  # noqa: BLE001 - refused, reset, timed out: open it again
                pass
            finally:
                if writer is not None:
                    writer.close()
            if loop.time() - t0 < 1.0:
                self.refused[kind] += 1
                # refused: try again soon, but not in a busy loop (this process would spend
                # the machine's CPU on reconnecting, not the relay's)
                await asyncio.sleep(REFUSED_BACKOFF * (1 + random.random()))

    @staticmethod
    async def half_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # until the relay closes it

    @staticmethod
    async def noise_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # multistream-select /noise, then Noise XX message 1 (an ephemeral key), then silence
        writer.write(encode_message(PROTOCOL_ID) + encode_message("/noise")
                     + struct.pack(">H", 32) + os.urandom(32))
        while await reader.read(65536):
            pass

    async def slowloris(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\nHost: relay\r\n")

        async def drip() -> None:
            n = 0
            while True:
                await asyncio.sleep(SLOWLORIS_INTERVAL)
                n += 1
                writer.write(f"X-Slow-{n}: {n}\r\n".encode())

        task = asyncio.ensure_future(drip())
        try:
            await reader.read(1)
        finally:
            task.cancel()

    async def stream_hog(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        raw = TcpStream(reader, writer)
        conn = await Upgrader(Identity.generate()).upgrade_outbound(raw, self.relay_peer, "tcp")
        conn.start(lambda s: s.reset())  # refuse the relay's streams (identify)
        streams = []
        try:
            for _ in range(HOG_STREAMS):
                try:
                    s = await conn.new_stream([PING])
                except Exception:  # noqa: BLE001 - refused by a budget: keep what we have
                    break
                await s.write(os.urandom(32))  # and never read the answer
                streams.append(s)
            await conn.wait_closed()
        finally:
            await conn.close()

    async def flood(self) -> None:
        loop = asyncio.get_running_loop()
        socks = []
        for i in range(self.cfg.per_kind):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind((self.ip(i), 0))
            socks.append(s)
        self.held["stun-flood"] = len(socks)
        magic = 0x2112A442
        binding = struct.pack(">HHI", 0x0001, 0, magic)
        # Allocate with REQUESTED-TRANSPORT UDP and no credentials (the relay answers 401)
        allocate = struct.pack(">HHI", 0x0003, 8, magic)
        allocate_attr = struct.pack(">HHBBH", 0x0019, 4, 17, 0, 0)
        period = 0.01
        per_tick = max(1, int(self.cfg.flood_pps * period))
        i = 0
        while True:
            t0 = loop.time()
            for _ in range(per_tick):
                s = socks[i % len(socks)]
                i += 1
                msg = (binding + os.urandom(12)) if i % 2 else (allocate + os.urandom(12)
                                                                 + allocate_attr)
                try:
                    s.sendto(msg, self.stun)
                    self.flood_sent += 1
                except OSError:
                    pass
            if i % len(socks) < per_tick:  # about once per round over the sockets
                for s in socks:  # drop the answers
                    try:
                        while s.recv(2048):
                            pass
                    except OSError:
                        pass
            await asyncio.sleep(max(0.0, period - (loop.time() - t0)))

    async def run(self, flooder: bool) -> None:
        """The flood (flooder) or the connections (not): two processes, see abuser_main."""
        tasks = [asyncio.ensure_future(self.flood())] if flooder else []
        bodies = {"half-open": self.half_open, "noise-stall": self.noise_stall,
                  "slowloris": self.slowloris, "stream-hog": self.stream_hog}
        for i in range(0 if flooder else self.cfg.per_kind):
            for kind, body in bodies.items():
                tasks.append(asyncio.ensure_future(self._hold(kind, i, body)))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the first ones connect
        try:
            while True:
                await asyncio.sleep(1.0)
                print(json.dumps({"held": self.held, "opened": self.opened,
                                  "refused": self.refused, "flood_sent": self.flood_sent}),
                      flush=True)
        finally:
            for t in tasks:
                t.cancel()


async def abuser_main(args: argparse.Namespace) -> None:
    if not args.flooder:
        # Real abusers run on machines of their own: here their CPU comes last, so that what
        # the table shows is what they cost the relay, not the load generator's share of the
        # cores. The flood runs in a process of its own at normal priority: it needs little
        # CPU but steady turns to keep its rate.
        os.nice(ABUSER_NICE)
    cfg = Config(**json.loads(args.config))
    await Abuser(cfg, args.relay_tcp, args.relay_ws, args.stun_port).run(args.flooder)


class AbuserProcess:
    """The abusive connections and the flood: two subprocesses, one merged view (`last`)."""

    def __init__(self, cfg: Config, relay: RelayProcess) -> None:
        self.cfg = cfg
        self.relay = relay
        self.procs: list[asyncio.subprocess.Process] = []
        self._last: list[dict[str, Any]] = [{}, {}]
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for i, extra in enumerate(([], ["--flooder"])):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--abuser", *extra,
                "--config", json.dumps(asdict(self.cfg)),
                "--relay-tcp", self.relay.tcp, "--relay-ws", self.relay.ws,
                "--stun-port", str(self.relay.stun_port), stdout=asyncio.subprocess.PIPE)
            self.procs.append(proc)
            self._readers.append(asyncio.ensure_future(self._read(proc, i)))

    async def _read(self, proc: asyncio.subprocess.Process, i: int) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            self._last[i] = json.loads(line)

    @property
    def last(self) -> dict[str, Any]:
        conns, flood = self._last
        if not conns:
            return {}
        held = dict(conns.get("held", {}))
        held["stun-flood"] = flood.get("held", {}).get("stun-flood", 0)
        return {**conns, "held": held, "flood_sent": flood.get("flood_sent", 0)}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        for r in self._readers:
            r.cancel()


# -- phases ----------------------------------------------------------------------------------


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(round(q * (len(ys) - 1))))]


@dataclass
class Group:
    """Honest peers on one relay: the abused one, or the control relay nobody abuses (the same
    machine at the same moment: what the abuse costs, apart from what the machine's load does)."""

    label: str
    relay: RelayProcess
    honest: list[Honest]


async def phase(name: str, cfg: Config, groups: list[Group], abuser: AbuserProcess | None,
                log: Any) -> list[dict[str, Any]]:
    """Every group's honest peers at once for `cfg.duration`; one result per group."""
    for g in groups:
        for h in g.honest:
            h.ops.clear()
    pids = {g.label: g.relay.pid for g in groups}
    if abuser is not None:
        pids["abuser"], pids["flooder"] = abuser.pids
    stop = asyncio.Event()
    rss_peak = dict.fromkeys(pids, 0)

    async def sample_rss() -> None:
        while not stop.is_set():
            for g in groups:
                rss_peak[g.label] = max(rss_peak[g.label], rss_kib(g.relay.pid))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass

    flood0 = abuser.last.get("flood_sent", 0) if abuser is not None else 0
    t0, c0 = time.perf_counter(), {k: cpu_seconds(p) for k, p in pids.items()}
    s0, m0 = self_cpu(), machine_busy_seconds()
    sampler = asyncio.ensure_future(sample_rss())
    runs = [asyncio.ensure_future(h.run(g.honest, cfg, stop)) for g in groups for h in g.honest]
    await asyncio.sleep(cfg.duration)
    held = dict(abuser.last.get("held", {})) if abuser is not None else {}
    flood_sent = abuser.last.get("flood_sent", 0) - flood0 if abuser is not None else 0
    metrics = {g.label: await g.relay.metrics() for g in groups}
    stop.set()
    await asyncio.gather(*runs, sampler)
    wall = time.perf_counter() - t0
    cpu = {k: cpu_seconds(p) - c0[k] for k, p in pids.items()}
    cpu["bench"] = self_cpu() - s0
    cpu["others"] = max(0.0, machine_busy_seconds() - m0 - sum(cpu.values()))
    results = []
    for g in groups:
        m = metrics[g.label]
        abused = abuser is not None and g.label == "abused"
        ops = [o for h in g.honest for o in h.ops]
        ok = [o.seconds for o in ops if o.ok]
        errors = [o.error for o in ops if not o.ok]
        part_p99 = {k: 1000 * percentile([o.parts[k] for o in ops if o.ok and k in o.parts], 0.99)
                    for k in ("reserve", "circuit", "ping", "fresh connection")}
        res = {
            "phase": name, "relay": g.label, "honest": len(g.honest), "ops": len(ops),
            "ok": len(ok), "success_pct": 100.0 * len(ok) / len(ops) if ops else 0.0,
            "p50_ms": 1000 * percentile(ok, 0.5), "p99_ms": 1000 * percentile(ok, 0.99),
            "max_ms": 1000 * max(ok) if ok else float("nan"),
            "errors": errors[:5], "p99_ms_by_step": part_p99,
            "abusive_held": held if abused else {},
            "abusive_held_total": sum(held.values()) if abused else 0,
            "abuser_opened": abuser.last.get("opened", {}) if abused and abuser else {},
            "abuser_refused": abuser.last.get("refused", {}) if abused and abuser else {},
            "flood_sent": flood_sent if abused else 0,
            "flood_pps": flood_sent / cfg.duration if abused else 0.0,
            "relay_conns": m.get('p2prtc_relay_resource_usage{scope="system",resource="conns"}'),
            "relay_pending": m.get(
                'p2prtc_relay_resource_usage{scope="transient",resource="conns_inbound"}'),
            "relay_streams": m.get(
                'p2prtc_relay_resource_usage{scope="system",resource="streams"}'),
            "refusals": {k: v for k, v in m.items() if "refusals_total" in k and v},
            "relay_cpu_pct": 100 * cpu[g.label] / wall, "relay_rss_mb": rss_peak[g.label] / 1024,
            "abuser_cpu_pct": 100 * (cpu.get("abuser", 0.0) + cpu.get("flooder", 0.0)) / wall,
            "bench_cpu_pct": 100 * cpu["bench"] / wall,
            "others_cpu_pct": 100 * cpu["others"] / wall, "wall_s": wall,
        }
        log(f"{name}, {g.label} relay: {res['ok']}/{res['ops']} ok, p50 {res['p50_ms']:.0f} ms, "
            f"p99 {res['p99_ms']:.0f} ms, held {res['abusive_held']}, relay CPU "
            f"{res['relay_cpu_pct']:.0f}%, RSS {res['relay_rss_mb']:.0f} MB"
            + (f"; errors e.g. {errors[0]}" if errors else ""))
        results.append(res)
    return results


async def run(cfg: Config, log: Any = print) -> list[dict[str, Any]]:
    """Both phases against the abused relay, with the control relay's group alongside; the
    results, one dict per phase and relay."""
    raise_fd_limit()
    groups = [Group("abused", RelayProcess(), [])]
    if cfg.control:
        groups.append(Group("control", RelayProcess(), []))
    abuser: AbuserProcess | None = None
    results: list[dict[str, Any]] = []
    try:
        for g in groups:
            await g.relay.start()
        first = 0
        for g, n in zip(groups, (cfg.honest, cfg.control)[:len(groups)], strict=True):
            g.honest = [Honest(g.relay.tcp, first + i) for i in range(n)]
            first += n
            for h in g.honest:  # one at a time: set-up is not what is measured
                await h.start()
        if "honest" in cfg.phases:
            results += await phase("honest only", cfg, groups, None, log)
        if "abuse" in cfg.phases:
            abuser = AbuserProcess(cfg, groups[0].relay)
            await abuser.start()
            await asyncio.sleep(cfg.ramp)  # the abusers connect
            log(f"abusers after {cfg.ramp:.0f} s: {abuser.last.get('held')}")
            results += await phase("honest + abuse", cfg, groups, abuser, log)
    finally:
        if abuser is not None:
            await abuser.stop()
        await asyncio.gather(*(h.host.close() for g in groups for h in g.honest),
                             return_exceptions=True)
        for g in groups:
            await g.relay.stop()
    return results


def table(cfg: Config, results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        held = r["abusive_held"]
        rows.append([
            r["phase"], f"{r['relay']} ({r['honest']} peers)", f"{r['ops']}",
            f"{r['success_pct']:.1f}%", f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}",
            " / ".join(str(held.get(k, 0)) for k in KINDS) if held else "-",
            f"{r['flood_pps']:.0f}" if held else "-",
            f"{r['relay_pending'] or 0:.0f} / {r['relay_conns'] or 0:.0f} / "
            f"{r['relay_streams'] or 0:.0f}",
            f"{sum(r['refusals'].values()):.0f}",
            f"{r['relay_cpu_pct']:.0f}%", f"{r['relay_rss_mb']:.0f}",
            f"{r['bench_cpu_pct']:.0f}% / {r['abuser_cpu_pct']:.0f}% / {r['others_cpu_pct']:.0f}%",
        ])
    return markdown_table(
        ["phase", "relay", "honest ops", "success", "p50 ms", "p99 ms", "max ms",
         "abusive held (" + " / ".join(KINDS) + ")", "STUN/TURN flood pkt/s",
         "relay pending / conns / streams", "budget refusals", "relay CPU", "relay RSS MB",
         "CPU bench / abuser / rest of machine"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--honest", type=int, default=d.honest)
    p.add_argument("--control", type=int, default=d.control,
                   help="honest peers on a second relay nobody abuses, at the same time")
    p.add_argument("--per-kind", type=int, default=d.per_kind,
                   help="abusive connections of each of the five kinds")
    p.add_argument("--abuse-ips", type=int, default=d.abuse_ips)
    p.add_argument("--duration", type=float, default=d.duration)
    p.add_argument("--interval", type=float, default=d.interval)
    p.add_argument("--flood-pps", type=int, default=d.flood_pps)
    p.add_argument("--ramp", type=float, default=d.ramp,
                   help="seconds the abusers get to connect before phase 2")
    p.add_argument("--phases", default=",".join(d.phases), help="honest,abuse")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--abuser", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flooder", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--relay-tcp", help=argparse.SUPPRESS)
    p.add_argument("--relay-ws", help=argparse.SUPPRESS)
    p.add_argument("--stun-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.abuser:
        try:
            asyncio.run(abuser_main(args))
        except KeyboardInterrupt:
            pass
        return
    cfg = Config(honest=args.honest, control=args.control, per_kind=args.per_kind, abuse_ips=args.abuse_ips,
                 duration=args.duration, interval=args.interval, flood_pps=args.flood_pps,
                 ramp=args.ramp, phases=args.phases.split(","))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        import uvloop  # the load generator's own CPU is in every latency: as fast as it gets
    except ImportError:
        results = asyncio.run(run(cfg, log))
    else:
        results = uvloop.run(run(cfg, log))
    print(f"{cfg.honest} honest peers, {cfg.per_kind} abusive connections of each kind from "
          f"{cfg.abuse_ips} addresses, {cfg.duration:.0f} s per phase, fd limit "
          f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    print(table(cfg, results))
    for r in results:
        print(f"{r['phase']}, {r['relay']} relay: p99 ms by step " + ", ".join(
            f"{k} {v:.0f}" for k, v in r["p99_ms_by_step"].items()))
        if r["refusals"]:
            print(f"{r['phase']}: budget refusals {r['refusals']}")
        if r["errors"]:
            print(f"{r['phase']}: errors e.g. {r['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": asdict(cfg), "results": results},
                                              indent=2))


if __name__ == "__main__":
    main()
