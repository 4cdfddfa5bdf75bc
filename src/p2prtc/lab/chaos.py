"""`p2prtc lab chaos`: faults injected into a NATed pair on a direct WebRTC connection.

One lab (two NATs, default port-restricted on both sides, so the pair connects directly), the
relay started with a key file, and two `lab.chaos_agent` peers: A listens via the relay and
answers chat, B listens via the relay too and dials A's /webrtc address. Then, in order (each
can be left out with `faults`):

- relay-kill: B chats with A (one message every `chat_interval`) and sends a file of
  `file_bytes` over the direct connection, held once half of it is written; the relay is killed
  (SIGKILL) and, once both peers have noticed (`reservation-lost`), the file goes on while the
  relay starts again with the same key and ports. Both peers' reservations must be back within
  `RESERVATION_RETURN_LIMIT` of the new relay's `listening` line; the file must arrive whole
  (the receiver checks its SHA-256, the sender compares), every chat message must be
  acknowledged, and the direct connection must not have ended.
- loss: `loss_pct` loss and `delay_ms` on each side's way to the internet (`lab.netem`; the
  peers' round trip is then 2 x `delay_ms`), chat and a file of `loss_file_bytes`; the same
  checks; then the impairment is taken away.
- peer-kill: B is killed (SIGKILL): A must report the direct connection ended within
  `PEER_GONE_LIMIT`, with a reason.

Every time is taken on the lab's clock (when it read each process's event line), bytes are
counted on both ends: sent by B, confirmed whole by A (size and SHA-256), lost = sent - confirmed.
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
from typing import Any

from .nat import NAT_TYPES, predict
from .netns import LabError, remove_leftovers, sh
from .procs import LabEvent, LabProcess, ProcessGroup, python_argv
from .scenario import _LIVE, START_TIMEOUT
from .topology import (RELAY_IP, RELAY_IP2, RELAY_PORT, RELAY_WS_PORT, STUN_ALT_PORT, STUN_PORT,
                       Lab)

log = logging.getLogger(__name__)

MB = 1000 * 1000
FAULTS = ("relay-kill", "loss", "peer-kill")
# The properties the chaos run checks (issue 12): reservations back within 2 s of the relay's
# return, a vanished peer reported within 10 s.
RESERVATION_RETURN_LIMIT = 2.0
PEER_GONE_LIMIT = 10.0
# How long the lab waits for each thing before calling it failed (well past the limits above).
RESERVATION_TIMEOUT = 45.0
NOTICE_TIMEOUT = 15.0      # a peer sees its relay connection close (the kernel sends the FIN)
CONNECT_TIMEOUT = 60.0     # B's dial of A: relayed connection, then WebRTC
FILE_TIMEOUT = 600.0       # 10 MB with 5 % loss and 100 ms RTT is the slow case
CHAT_REPORT_TIMEOUT = 30.0  # chat-stop waits up to 10 s for the last acks
PEER_GONE_TIMEOUT = 40.0


@dataclass
class ChaosOptions:
    nat_a: str = "port-restricted"
    nat_b: str = "port-restricted"
    faults: tuple[str, ...] = FAULTS
    file_bytes: int = 10 * MB       # sent across the relay's death and return
    loss_file_bytes: int = 10 * MB  # sent under loss and delay
    loss_pct: float = 5.0
    delay_ms: float = 50.0          # per side: 100 ms RTT between the peers
    chat_interval: float = 0.2
    relay_down: float = 5.0         # seconds between the relay's death and its restart
    turn: str = "builtin"
    keep_logs: str | None = None
    verbose: int = 0

    def check(self) -> None:
        for t in (self.nat_a, self.nat_b):
            if t not in NAT_TYPES:
                raise LabError(f"unknown NAT type {t!r}: one of {', '.join(NAT_TYPES)}")
        if not predict(self.nat_a, self.nat_b).direct:
            raise LabError(f"{self.nat_a} x {self.nat_b} has no direct path: the chaos run "
                           "needs a direct connection")
        bad = [f for f in self.faults if f not in FAULTS]
        if bad or not self.faults:
            raise LabError(f"unknown fault(s) {', '.join(bad) or '(none)'}: use "
                           f"{', '.join(FAULTS)}")
        if not 0 <= self.loss_pct < 100 or not 0 <= self.delay_ms <= 5000:
            raise LabError("--delay must be 0-5000 ms and --loss 0-99 %")
        if not 0 <= self.relay_down <= 600:
            raise LabError("--relay-down must be 0-600 s")
        if self.file_bytes <= 0 or self.loss_file_bytes <= 0 or self.chat_interval <= 0:
            raise LabError("file sizes and the chat interval must be positive")


@dataclass
class FaultResult:
    fault: str
    ok: bool = False
    survived: list[str] = field(default_factory=list)  # properties that held
    failed: list[str] = field(default_factory=list)    # properties that did not, and why
    times_ms: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0  # confirmed by the receiver (size and SHA-256)
    bytes_lost: int = 0
    chat: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            self.survived.append(what)
        else:
            self.failed.append(what + (f": {why}" if why else ""))


@dataclass
class ChaosResult:
    nat_a: str
    nat_b: str
    engine: str
    faults: list[FaultResult] = field(default_factory=list)
    direct_ms: float | None = None
    error: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    logs: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.faults) and all(f.ok for f in self.faults)

    @property
    def faults_survived(self) -> int:
        return sum(f.ok for f in self.faults)

    @property
    def bytes_lost(self) -> int:
        return sum(f.bytes_lost for f in self.faults)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, faults_survived=self.faults_survived, bytes_lost=self.bytes_lost)
        return d


class ChaosRun:
    def __init__(self, opts: ChaosOptions,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        opts.check()
        self.opts = opts
        self.on_event = on_event
        self.procs = ProcessGroup(self._forward, opts.keep_logs)
        self.lab = Lab(opts.nat_a, opts.nat_b)
        self.key_file = os.path.join(self.procs.log_dir, "relay.key")
        self.relay: LabProcess | None = None
        self.relay_tcp = ""
        self._relays = 0
        self._impaired: list[tuple[str, list[str], LabProcess]] = []

    def _forward(self, source: str, ev: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(source, ev)

    def note(self, event: str, **fields: Any) -> None:
        self._forward("lab", {"event": event, **fields})

    async def run(self) -> ChaosResult:
        o = self.opts
        result = ChaosResult(o.nat_a, o.nat_b, os.environ.get("P2PRTC_ENGINE", "auto"),
                             logs=self.procs.log_dir)
        t0 = time.monotonic()
        removed = remove_leftovers()
        if removed:
            self.note("leftovers-removed", namespaces=removed)
        _LIVE.add(self.lab)
        try:
            self.lab.build()
            self.note("lab-built", **self.lab.describe())
            await self._run(result)
        except LabError as e:
            result.error = str(e)
        finally:
            for p in self.procs.procs:
                cpu = p.cpu_seconds()
                if cpu is not None:
                    result.cpu_seconds[p.name] = cpu
            stopping = asyncio.ensure_future(self.procs.stop_all())
            while not stopping.done():  # cleanup runs to the end, also through Ctrl-C
                try:
                    await asyncio.shield(stopping)
                except asyncio.CancelledError:
                    continue
            for p in self.procs.procs:  # the last word of a process stopped just now
                cpu = p.cpu_seconds()
                if cpu is not None:
                    result.cpu_seconds[p.name] = cpu
            self.lab.destroy()
            _LIVE.discard(self.lab)
            result.seconds = round(time.monotonic() - t0, 2)
            if o.keep_logs is None and result.ok:
                shutil.rmtree(self.procs.log_dir, ignore_errors=True)
                result.logs = None
        return result

    # -- processes ---------------------------------------------------------------------------

    def _relay_argv(self) -> list[str]:
        turn = ["--no-turn"] if self.opts.turn == "none" else []
        return python_argv(
            "p2prtc", "relay", "--identity", self.key_file, "--listen-ip", RELAY_IP,
            "--port", str(RELAY_PORT), "--websocket-port", str(RELAY_WS_PORT),
            "--stun-port", str(STUN_PORT), "--stun-alt-port", str(STUN_ALT_PORT),
            "--stun-alt-ip", RELAY_IP2, "--json", *turn, *self._verbose)

    async def _start_relay(self) -> tuple[LabProcess, dict[str, Any]]:
        """Start the relay (the same key and ports every time); returns it and its listening
        event."""
        self._relays += 1
        name = "relay" if self._relays == 1 else f"relay-{self._relays}"
        relay = await self.procs.start(name, self.lab.relay_ns, self._relay_argv())
        ev = await relay.wait_event("listening", START_TIMEOUT)
        self.relay = relay
        return relay, ev

    @property
    def _verbose(self) -> list[str]:
        return ["-" + "v" * self.opts.verbose] if self.opts.verbose else []

    async def _start_peer(self, name: str, side: str, reply: bool) -> LabProcess:
        args = ["--stun", f"stun:{RELAY_IP}:{STUN_PORT}",
                *(["--turn", "none"] if self.opts.turn == "none" else []),
                *(["--reply"] if reply else []), *self._verbose]
        return await self.procs.start(name, self.lab.sides[side].peer_ns,
                                      python_argv("p2prtc.lab.chaos_agent", *args))

    @staticmethod
    async def _cmd(p: LabProcess, cmd: str, **fields: Any) -> None:
        await p.send_line(json.dumps({"cmd": cmd, **fields}))

    # -- the run -----------------------------------------------------------------------------

    async def _run(self, result: ChaosResult) -> None:
        a = await self._start_peer("peer-a", "a", reply=True)
        b = await self._start_peer("peer-b", "b", reply=False)
        _relay, ev = await self._start_relay()
        self.relay_tcp = next(x for x in ev["addrs"] if "/ws" not in x)
        await a.wait_event("ready", START_TIMEOUT)
        await b.wait_event("ready", START_TIMEOUT)
        await self._cmd(a, "listen", relay=self.relay_tcp)
        listening = await a.wait_event("listening", RESERVATION_TIMEOUT)
        target = next(x for x in listening["addrs"] if "/p2p-circuit/webrtc" in x)
        await self._cmd(b, "listen", relay=self.relay_tcp)
        await b.wait_event("listening", RESERVATION_TIMEOUT)
        await self._cmd(b, "dial", addr=target)
        ev = await b.wait_event(("direct", "no-direct"), CONNECT_TIMEOUT)
        if ev["event"] != "direct":
            raise LabError(f"no direct connection to start from: {ev.get('reason')}")
        if ev.get("path") != "direct":
            raise LabError(f"the WebRTC connection settled on {ev.get('path')}, not a direct "
                           f"pair: {ev.get('candidate_pair')}")
        result.direct_ms = ev.get("ms")
        self.note("direct", ms=ev.get("ms"), candidate_pair=ev.get("candidate_pair"))
        for fault in self.opts.faults:
            phase = {"relay-kill": self._relay_kill, "loss": self._loss,
                     "peer-kill": self._peer_kill}[fault]
            r = FaultResult(fault)
            result.faults.append(r)
            self.note("fault", fault=fault)
            try:
                await phase(r, a, b)
            except LabError as e:
                r.failed.append(f"the run did not get through: {e}")
            r.ok = not r.failed
            self.note("fault-result", **asdict(r))
            if not r.ok and fault != "peer-kill":
                break  # the next fault would only measure this one's damage

    def _direct_ended(self, *peers: LabProcess) -> list[str]:
        return [f"{p.name}: {e.get('reason')}" for p in peers for e in p.events
                if e.get("event") == "disconnected" and e.get("transport") == "webrtc"]

    async def _transfer(self, r: FaultResult, a: LabProcess, b: LabProcess, tag: str,
                        size: int, during: Callable[[], Any] | None = None) -> None:
        """Chat and a file from B to A; `during()` runs while the file is held at half."""
        await self._cmd(b, "chat-start", tag=tag, interval=self.opts.chat_interval)
        await self._cmd(b, "file", tag=tag, bytes=size,
                        hold_at=0.5 if during is not None else None)
        if during is not None:
            await b.wait_event("file-held", FILE_TIMEOUT, lambda e: e.get("tag") == tag)
            await during()
        t_file = time.monotonic()
        f = await b.wait_event("file", FILE_TIMEOUT, lambda e: e.get("tag") == tag)
        r.times_ms["file_done_after"] = round((b.arrived(f) - t_file) * 1000)
        r.bytes_sent = int(f.get("sent") or 0)
        r.bytes_received = 0
        if f.get("ok"):  # A reported it before confirming; the lab may read B's line first
            got = await a.wait_event("file-received", NOTICE_TIMEOUT,
                                     lambda e: e.get("sha256") == f.get("sha256"))
            r.bytes_received = int(got["bytes"])
        r.bytes_lost = r.bytes_sent - r.bytes_received
        r.details["file"] = {k: f.get(k) for k in ("ok", "bytes", "seconds", "transport",
                                                   "error")}
        if f.get("seconds"):
            r.details["file"]["MBps"] = round(size / f["seconds"] / MB, 2)
        r.check(bool(f.get("ok")) and r.bytes_lost == 0 and r.bytes_received == size,
                f"file {size / MB:g} MB (SHA-256 confirmed)", str(f.get("error")))
        r.check(f.get("transport") == "webrtc", "file over the direct connection",
                f"went over {f.get('transport')}")
        await self._cmd(b, "chat-stop", tag=tag)
        chat = await b.wait_event("chat-report", CHAT_REPORT_TIMEOUT,
                                  lambda e: e.get("tag") == tag)
        r.chat = {k: chat.get(k) for k in ("sent", "acked", "lost", "unsent", "via",
                                           "max_rtt_ms", "unsent_reasons")}
        r.check(chat.get("sent", 0) > 0 and chat.get("lost") == 0 and chat.get("unsent") == 0,
                "chat (every message acknowledged)",
                f"{chat.get('lost')} lost, {chat.get('unsent')} not sent of "
                f"{chat.get('sent')}: {chat.get('unsent_reasons')}")
        ended = self._direct_ended(a, b)
        r.check(not ended, "direct connection", "; ".join(ended))

    async def _relay_kill(self, r: FaultResult, a: LabProcess, b: LabProcess) -> None:
        times: dict[str, float] = {}

        async def kill_and_return() -> None:
            assert self.relay is not None
            t_kill = time.monotonic()
            await self.relay.kill()
            self.note("relay-killed")
            for p in (a, b):
                lost = await p.wait_event("reservation-lost", NOTICE_TIMEOUT,
                                          _read_after(p, t_kill))
                times[f"{p.name}_noticed"] = round((p.arrived(lost) - t_kill) * 1000)
            times["relay_down"] = round(self.opts.relay_down * 1000)
            await self._cmd(b, "resume", tag="relay-kill")  # the rest goes on without a relay
            # the outage (a timer, not synchronisation): the peers' retries meet a dead port
            await asyncio.sleep(max(0.0, self.opts.relay_down - (time.monotonic() - t_kill)))
            t_start = time.monotonic()
            relay, ev = await self._start_relay()
            t_back = relay.arrived(ev)
            times["relay_start"] = round((t_back - t_start) * 1000)
            self.note("relay-back", relay_start_ms=times["relay_start"])
            for p in (a, b):
                res = await p.wait_event("reservation", RESERVATION_TIMEOUT,
                                         _read_after(p, t_kill))
                # a reservation may be made before the lab has read "listening": 0 then
                back = max(0.0, p.arrived(res) - t_back)
                times[f"{p.name}_reserved"] = round(back * 1000)
                r.check(back <= RESERVATION_RETURN_LIMIT,
                        f"{p.name}'s reservation back within {RESERVATION_RETURN_LIMIT:g} s",
                        f"after {back:.2f} s")

        await self._transfer(r, a, b, "relay-kill", self.opts.file_bytes, kill_and_return)
        r.times_ms.update(times)

    async def _impair(self) -> None:
        o = self.opts
        for i, side in enumerate(self.lab.sides.values()):
            ns, iface, chain = side.egress
            rule = [chain, "-i" if chain == "PREROUTING" else "-o", iface, "-j", "NFQUEUE",
                    "--queue-num", str(i), "--queue-bypass"]
            sh("ip", "netns", "exec", ns, "iptables", "-t", "raw", "-A", *rule)
            p = await self.procs.start(f"netem-{side.name}", ns, python_argv(
                "p2prtc.lab.netem", "--queue", str(i), "--delay", str(o.delay_ms),
                "--loss", str(o.loss_pct)))
            self._impaired.append((ns, rule, p))
            await p.wait_event("netem", START_TIMEOUT)
        self.note("impairment", delay_ms=o.delay_ms, loss_pct=o.loss_pct,
                  where="each side's egress towards the internet")

    async def _unimpair(self) -> dict[str, int]:
        stats = {"passed": 0, "dropped": 0}
        for ns, rule, p in self._impaired:
            sh("ip", "netns", "exec", ns, "iptables", "-t", "raw", "-D", *rule)
            await p.stop()
            for e in p.events:
                if e.get("event") == "netem-stats":
                    stats["passed"] += int(e.get("passed", 0))
                    stats["dropped"] += int(e.get("dropped", 0))
        self._impaired.clear()
        self.note("impairment-removed", **stats)
        return stats

    async def _loss(self, r: FaultResult, a: LabProcess, b: LabProcess) -> None:
        await self._impair()
        try:
            await self._transfer(r, a, b, "loss", self.opts.loss_file_bytes)
        finally:
            stats = await self._unimpair()
        total = stats["passed"] + stats["dropped"]
        r.details["netem"] = {**stats, "loss_pct": round(100 * stats["dropped"] / total, 2)
                              if total else None, "delay_ms": self.opts.delay_ms}
        r.check(stats["dropped"] > 0 or self.opts.loss_pct == 0,
                "packets really dropped", "netem dropped none")

    async def _peer_kill(self, r: FaultResult, a: LabProcess, b: LabProcess) -> None:
        t_kill = time.monotonic()
        await b.kill()
        self.note("peer-killed", peer="peer-b")
        ev = await a.wait_event("disconnected", PEER_GONE_TIMEOUT,
                                lambda e: e.get("transport") == "webrtc"
                                and a.arrived(e) > t_kill)
        gone = a.arrived(ev) - t_kill
        r.times_ms["peer_a_reported"] = round(gone * 1000)
        r.details["reason"] = ev.get("reason")
        relayed = [e for e in a.events if e.get("event") == "disconnected"
                   and e.get("transport") == "circuit" and a.arrived(e) > t_kill]
        if relayed:
            r.times_ms["peer_a_relayed_closed"] = round((a.arrived(relayed[0]) - t_kill) * 1000)
        r.check(gone <= PEER_GONE_LIMIT,
                f"peer-a reports the peer gone within {PEER_GONE_LIMIT:g} s", f"after {gone:.1f} s")
        r.check(bool(ev.get("reason")), "with a reason", "no reason given")


async def run_chaos(opts: ChaosOptions,
                    on_event: Callable[[str, dict[str, Any]], None] | None = None) -> ChaosResult:
    return await ChaosRun(opts, on_event).run()


# -- presenting results -----------------------------------------------------------------------

def _read_after(proc: LabProcess, t: float) -> Callable[[LabEvent], bool]:
    """A wait_event predicate: events `proc` printed after time.monotonic() `t`."""
    return lambda e: proc.arrived(e) > t


def _times(f: FaultResult) -> str:
    t = f.times_ms
    parts = []
    if "peer-a_reserved" in t:
        parts.append(f"relay down {t.get('relay_down', 0) / 1000:g} s, reservations back "
                     f"{t['peer-a_reserved']} / {t.get('peer-b_reserved')} ms after it (A / B)")
    if "peer_a_reported" in t:
        parts.append(f"A reported it after {t['peer_a_reported']} ms")
    if f.details.get("file", {}).get("seconds"):
        fi = f.details["file"]
        parts.append(f"file {fi['seconds']:.1f} s ({fi.get('MBps')} MB/s)")
    if f.chat and f.chat.get("max_rtt_ms") is not None:
        parts.append(f"chat max RTT {f.chat['max_rtt_ms']:.0f} ms")
    return "; ".join(parts)


TABLE_HEADER = ("| fault | result | survived | times | bytes sent / received / lost | "
                "chat sent / acked / lost |")


def table_row(f: FaultResult) -> str:
    chat = (f"{f.chat['sent']} / {f.chat['acked']} / {f.chat['lost']}" if f.chat else "-")
    byts = (f"{f.bytes_sent:,} / {f.bytes_received:,} / {f.bytes_lost:,}" if f.bytes_sent
            else "-")
    result = "ok" if f.ok else "FAILED: " + "; ".join(f.failed)
    return (f"| {f.fault} | {result} | {', '.join(f.survived)} | {_times(f)} | {byts} | "
            f"{chat} |")


def chaos_table(r: ChaosResult) -> str:
    sep = "|" + "---|" * (TABLE_HEADER.count("|") - 1)
    return "\n".join([TABLE_HEADER, sep] + [table_row(f) for f in r.faults])


def describe_chaos(r: ChaosResult) -> str:
    lines = [f"NAT lab chaos: A {r.nat_a} x B {r.nat_b}, engine {r.engine}, direct WebRTC in "
             f"{r.direct_ms} ms"]
    for f in r.faults:
        lines.append(f"  {f.fault}: {'survived' if f.ok else 'FAILED'}: {_times(f)}")
        for s in f.survived:
            lines.append(f"    ok      {s}")
        for s in f.failed:
            lines.append(f"    FAILED  {s}")
        if f.bytes_sent:
            lines.append(f"    bytes sent {f.bytes_sent:,}, received {f.bytes_received:,}, "
                         f"lost {f.bytes_lost:,}")
        if f.chat:
            lines.append(f"    chat: {f.chat['sent']} sent, {f.chat['acked']} acknowledged, "
                         f"{f.chat['lost']} lost, via {', '.join(f.chat['via'] or ['-'])}")
        if f.details.get("reason"):
            lines.append(f"    reason: {f.details['reason']}")
        if f.details.get("netem"):
            n = f.details["netem"]
            lines.append(f"    netem: {n['dropped']} of {n['passed'] + n['dropped']} packets "
                         f"dropped ({n['loss_pct']} %), +{n['delay_ms']:g} ms each way")
    if r.error:
        lines.append(f"  ERROR: {r.error}")
    if r.cpu_seconds:
        lines.append("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                             sorted(r.cpu_seconds.items())))
    lines.append(f"  faults survived: {r.faults_survived} of {len(r.faults)}, bytes lost: "
                 f"{r.bytes_lost}, {r.seconds:.0f} s")
    if r.logs:
        lines.append(f"  logs: {r.logs}")
    return "\n".join(lines)
