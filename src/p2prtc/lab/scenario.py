"""One lab run (two peers behind two NATs, a relay between them) and the matrix of all NAT pairs.

A run: delete leftovers of crashed runs; build the namespaces; start the relay (with its STUN
server) and the probe server on the relay host; add delay/loss if asked; probe both NATs and
compare with what they should be; start peer A (listens via the relay) and peer B (dials A's
/webrtc address); collect B's report (direct or not and why, time to direct, candidate pair,
RTT over relay and direct, throughput, chat); stop everything and delete the namespaces, also on
errors and Ctrl-C.

TURN (`RunOptions.turn`): "builtin" runs the relay with its own TURN server (on the STUN port, its
relayed ports on the relay's internet address); "coturn" runs Debian's coturn beside it in the
relay's namespace (use-auth-secret) and the relay hands out coturn credentials (`--turn-url`,
`--turn-secret`); "none" runs the relay with `--no-turn` and the peers with `--turn none`. Either
way the peers fetch credentials from the relay by themselves (/p2prtc/turn-credentials/1.0.0).
A run's `path` is "direct" (a direct WebRTC candidate pair), "turn" (WebRTC through a TURN
relayed candidate) or "relay" (only the limited relayed circuit).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import shutil
import time
from collections.abc import Callable
from typing import Any
from dataclasses import asdict, dataclass, field

from .nat import EXPECTED, NAT_TYPES, predict
from .netns import LabError, remove_leftovers, sh
from .procs import LabEvent, LabProcess, ProcessGroup, python_argv
from .topology import (COTURN_MAX_PORT, COTURN_MIN_PORT, COTURN_PORT, PROBE_PORT, RELAY_IP,
                       RELAY_IP2, RELAY_PORT, RELAY_WS_PORT, STUN_ALT_PORT, STUN_PORT, Lab,
                       Side)

log = logging.getLogger(__name__)

PEER_MODES = ("python", "browser", "mixed")
TURN_MODES = ("builtin", "coturn", "none")
PATHS = ("direct", "turn", "relay")
# coturn's static-auth-secret in the lab (its namespace only; the relay hands out credentials).
COTURN_SECRET = "p2prtc-lab-coturn"
COTURN_READY_LINE = "Total General servers"  # coturn's log line once its servers are created
START_TIMEOUT = 30.0      # a process (Python + aiortc import, or Chromium) is up and reporting
RESERVATION_TIMEOUT = 45.0
DIAL_REPORT_TIMEOUT = 150.0  # dial + pings + 10 MB + chat, with delay/loss
NAT_EVENT_TIMEOUT = 5.0  # the listener's NAT detection (bounded at 1.4 s) has long ended by then


@dataclass
class RunOptions:
    nat_a: str
    nat_b: str
    peers: str = "python"          # python | browser | mixed (browser listener, Python dialer)
    delay_ms: float = 0.0          # added to packets leaving each side towards the internet
    loss_pct: float = 0.0
    bytes: int = 10 * 1000 * 1000  # throughput test over the direct connection
    turn: str = "builtin"          # builtin | coturn | none (see the module docstring)
    file_bytes: int | None = None  # file sent over WebRTC, SHA-256 checked (None: as bytes)
    pings: int = 5
    probe: bool = True
    probe_only: bool = False       # build, probe both NATs, tear down (no peers)
    keep_logs: str | None = None   # directory for the processes' logs (default: a temp dir)
    verbose: int = 0               # -v for the relay and the peers (their logs, see keep_logs)

    def check(self) -> None:
        for t in (self.nat_a, self.nat_b):
            if t not in NAT_TYPES:
                raise LabError(f"unknown NAT type {t!r}: one of {', '.join(NAT_TYPES)}")
        if self.turn not in TURN_MODES:
            raise LabError(f"--turn must be one of {', '.join(TURN_MODES)}")
        if self.peers not in PEER_MODES:
            raise LabError(f"--peers must be one of {', '.join(PEER_MODES)}")
        if not 0 <= self.loss_pct < 100 or self.delay_ms < 0 or self.delay_ms > 5000:
            raise LabError("--delay must be 0-5000 ms and --loss 0-99 %")


@dataclass
class RunResult:
    nat_a: str
    nat_b: str
    peers: str
    delay_ms: float
    loss_pct: float
    predicted_direct: bool
    prediction: str
    turn: str = "builtin"
    direct: bool = False             # a non-limited WebRTC connection (path "direct" or "turn")
    path: str | None = None          # direct | turn | relay (the limited circuit only)
    turn_relay: str | None = None    # the TURN server's relayed IP, with path "turn"
    # the path when the connection opened, if the engine then moved to another pair (libwebrtc
    # may start on the TURN pair and switch to a direct one as its checks succeed)
    path_at_connect: str | None = None
    time_to_direct_ms: float | None = None  # from the dial to the WebRTC connection
    relayed_ms: float | None = None
    # JSON fragments of the agents' events (read by key)
    candidate_pair: dict[str, Any] | None = None           # as the dialer (B) sees it
    listener_candidate_pair: dict[str, Any] | None = None  # as the listener (A) sees it
    rtt_ms: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, Any] | None = None
    chat: dict[str, Any] | None = None
    file: dict[str, Any] | None = None  # {ok, bytes, sha256, seconds, MBps} or {ok: False, error}
    failure: str | None = None       # why there is no direct connection (user-facing)
    error: str | None = None         # the dial error as reported by the peer
    failure_reported_ms: float | None = None  # from B's dial to its failure (no direct path)
    # The NAT types (lab names) as the peers detected them with the relay's STUN (RFC 5780);
    # None for a browser peer, which does not detect.
    nat_a_detected: str | None = None
    nat_b_detected: str | None = None
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # side -> probe report
    probe_mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    logs: str | None = None

    def __post_init__(self) -> None:
        if self.path is None:
            self.path = "direct" if self.direct else "relay"

    @property
    def expected_path(self) -> str:
        """A direct path where theory allows one, else TURN when it is on, else the relay."""
        if self.predicted_direct:
            return "direct"
        return "relay" if self.turn == "none" else "turn"

    @property
    def matches_theory(self) -> bool:
        return self.path == self.expected_path

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matches_theory"] = self.matches_theory
        return d


def _pair_types(pair: dict[str, Any] | None) -> str:
    if not pair:
        return "-"
    return f"{pair.get('local')}/{pair.get('remote')}"


class LabRun:
    def __init__(self, opts: RunOptions,
                 on_event: Callable[[str, LabEvent], None] | None = None) -> None:
        opts.check()
        self.opts = opts
        self.on_event = on_event
        self.lab: Lab | None = None
        self.procs = ProcessGroup(self._forward, opts.keep_logs)

    @property
    def _built(self) -> Lab:
        if self.lab is None:
            raise LabError("the lab is not built yet")
        return self.lab

    def _forward(self, source: str, ev: LabEvent) -> None:
        if self.on_event is not None:
            self.on_event(source, ev)

    def note(self, event: str, **fields: object) -> None:
        self._forward("lab", {"event": event, **fields})

    async def run(self) -> RunResult:
        o = self.opts
        pred = predict(o.nat_a, o.nat_b)
        result = RunResult(o.nat_a, o.nat_b, o.peers, o.delay_ms, o.loss_pct, pred.direct, pred.why,
                           turn=o.turn, logs=self.procs.log_dir)
        t0 = time.monotonic()
        removed = remove_leftovers()
        if removed:
            self.note("leftovers-removed", namespaces=removed)
        self.lab = Lab(o.nat_a, o.nat_b)
        _LIVE.add(self.lab)
        try:
            self.lab.build()
            self.note("lab-built", **self.lab.describe())
            await self._run(result)
        finally:
            # Cleanup runs to the end even if Ctrl-C comes (again) meanwhile.
            stopping = asyncio.ensure_future(self.procs.stop_all())
            while not stopping.done():
                try:
                    await asyncio.shield(stopping)
                except asyncio.CancelledError:
                    continue
            self.lab.destroy()
            _LIVE.discard(self.lab)
            result.seconds = round(time.monotonic() - t0, 2)
            if o.keep_logs is None and result.error is None and (
                    result.failure is None or result.matches_theory):
                shutil.rmtree(self.procs.log_dir, ignore_errors=True)
                result.logs = None
        return result

    async def _run(self, result: RunResult) -> None:
        o, lab = self.opts, self._built
        assert lab is not None
        coturn = None
        if o.turn == "coturn" and not o.probe_only:
            coturn = await self._start_coturn()
        relay = await self.procs.start("relay", lab.relay_ns, python_argv(
            "p2prtc", "relay", "--listen-ip", RELAY_IP, "--port", str(RELAY_PORT),
            "--websocket-port", str(RELAY_WS_PORT), "--stun-port", str(STUN_PORT),
            "--stun-alt-port", str(STUN_ALT_PORT), "--stun-alt-ip", RELAY_IP2, "--json",
            *self._relay_turn_args, *self._verbose))
        probe_srv = None
        if o.probe or o.probe_only:
            probe_srv = await self.procs.start("probe-server", lab.relay_ns, python_argv(
                "p2prtc.lab.probe", "server", RELAY_IP, RELAY_IP2, "--port", str(PROBE_PORT)))
        # Start the peers' processes now: their imports (aiortc, Playwright) overlap the rest.
        if not o.probe_only:
            a_proc, b_proc = await self._start_peers()
        ev = await relay.wait_event("listening", START_TIMEOUT)
        relay_tcp: str = next(a for a in ev["addrs"] if "/ws" not in a)
        relay_ws: str | None = next((a for a in ev["addrs"] if "/ws" in a), None)
        if probe_srv is not None:
            await probe_srv.wait_event("probe-server", START_TIMEOUT)
        if coturn is not None:
            await coturn.wait_event("output", START_TIMEOUT,
                                    lambda ev: COTURN_READY_LINE in ev.get("text", ""))
            self.note("coturn", urls=self._coturn_urls)
        if o.delay_ms or o.loss_pct:
            await self._impair()
        if o.probe or o.probe_only:
            await self._probe(result)
        if o.probe_only:
            return

        listener_relay = relay_ws if self._a_is_browser else relay_tcp
        if listener_relay is None:
            raise LabError("the relay printed no WebSocket address, which a browser peer needs")
        await a_proc.send_line(listener_relay)
        listening = await a_proc.wait_event("listening", RESERVATION_TIMEOUT)
        target = next(a for a in listening["addrs"] if "/p2p-circuit/webrtc" in a)
        # The browser dialer reaches the relay over WebSocket: point it at that address.
        if self._b_is_browser and relay_ws:
            target = relay_ws + target[target.index("/p2p-circuit"):]
        elif not self._b_is_browser and self._a_is_browser:
            target = relay_tcp + target[target.index("/p2p-circuit"):]
        await b_proc.send_line(target)
        done = await b_proc.wait_event("done", DIAL_REPORT_TIMEOUT)
        self._fill(result, done)
        result.nat_b_detected = (done.get("nat") or {}).get("type")
        if not self._a_is_browser:
            nat_a = await a_proc.wait_event("nat", NAT_EVENT_TIMEOUT)
            result.nat_a_detected = nat_a.get("type")
        a_direct = [e for e in a_proc.events if e.get("event") == "connected"
                    and e.get("transport") == "webrtc"]
        if a_direct:
            result.listener_candidate_pair = a_direct[-1].get("candidate_pair")
        if result.direct and not done.get("path"):
            # B could not tell its pair: the same ICE pair as A sees it decides the path
            pair = result.listener_candidate_pair or {}
            if "relay" in (pair.get("local"), pair.get("remote")):
                via = pair["local_addr"] if pair.get("local") == "relay" else pair["remote_addr"]
                result.path, result.turn_relay = "turn", via.rpartition(":")[0].strip("[]")

    @property
    def _coturn_urls(self) -> list[str]:
        return [f"turn:{RELAY_IP}:{COTURN_PORT}?transport={t}" for t in ("udp", "tcp")]

    @property
    def _relay_turn_args(self) -> list[str]:
        if self.opts.turn == "none":
            return ["--no-turn"]
        if self.opts.turn == "coturn":
            return [a for url in self._coturn_urls for a in ("--turn-url", url)] + [
                "--turn-secret", COTURN_SECRET]
        return []  # builtin: the relay serves TURN by default (on the STUN port)

    async def _start_coturn(self) -> LabProcess:
        exe = shutil.which("turnserver")
        if exe is None:
            raise LabError("--turn coturn needs coturn's turnserver (apt-get install coturn; "
                           "scripts/setup --test installs it)")
        d = self.procs.log_dir
        return await self.procs.start("coturn", self._built.relay_ns, [
            exe, "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", RELAY_IP,
            "--relay-ip", RELAY_IP, "--listening-port", str(COTURN_PORT),
            "--min-port", str(COTURN_MIN_PORT), "--max-port", str(COTURN_MAX_PORT),
            "--use-auth-secret", "--static-auth-secret", COTURN_SECRET, "--realm", "p2prtc.lab",
            "--db", f"{d}/coturn.db", "--pidfile", f"{d}/coturn.pid", "--log-file", "stdout",
            "--simple-log", "--no-software-attribute", *(["-v"] if self.opts.verbose else [])])

    @property
    def _verbose(self) -> list[str]:
        return ["-" + "v" * self.opts.verbose] if self.opts.verbose else []

    @property
    def _a_is_browser(self) -> bool:
        return self.opts.peers in ("browser", "mixed")

    @property
    def _b_is_browser(self) -> bool:
        return self.opts.peers == "browser"

    async def _start_peers(self) -> tuple[LabProcess, LabProcess]:
        o, lab = self.opts, self._built
        stun = f"stun:{RELAY_IP}:{STUN_PORT}"
        common = ["--stun", stun, *(["--turn", "none"] if o.turn == "none" else []),
                  *self._verbose]
        a_mod = "p2prtc.lab.browser_agent" if self._a_is_browser else "p2prtc.lab.agent"
        b_mod = "p2prtc.lab.browser_agent" if self._b_is_browser else "p2prtc.lab.agent"
        a = await self.procs.start("peer-a", lab.sides["a"].peer_ns,
                                   python_argv(a_mod, "listen", *common))
        b_args = ["dial", *common, "--pings", str(o.pings), "--bytes", str(o.bytes)]
        file_bytes = o.bytes if o.file_bytes is None else o.file_bytes
        if not self._b_is_browser and not self._a_is_browser:  # the harness page has no files
            b_args += ["--file-bytes", str(file_bytes)]
        if self._a_is_browser:
            b_args += ["--chat", ""]  # the browser harness page has no chat protocol
        b = await self.procs.start("peer-b", lab.sides["b"].peer_ns, python_argv(b_mod, *b_args))
        return a, b

    async def _impair(self) -> None:
        o, lab = self.opts, self._built
        for i, side in enumerate(lab.sides.values()):
            ns, iface, chain = side.egress
            flag = "-i" if chain == "PREROUTING" else "-o"
            sh("ip", "netns", "exec", ns, "iptables", "-t", "raw", "-A", chain, flag, iface,
               "-j", "NFQUEUE", "--queue-num", str(i), "--queue-bypass")
            p = await self.procs.start(f"netem-{side.name}", ns, python_argv(
                "p2prtc.lab.netem", "--queue", str(i), "--delay", str(o.delay_ms),
                "--loss", str(o.loss_pct)))
            await p.wait_event("netem", START_TIMEOUT)
        self.note("impairment", delay_ms=o.delay_ms, loss_pct=o.loss_pct,
                  where="each side's egress towards the internet")

    async def _probe(self, result: RunResult) -> None:
        lab = self._built
        wait = max(0.25, 3 * self.opts.delay_ms / 1000 + 0.05)

        async def one(side: Side) -> LabEvent:
            p = await self.procs.start(f"probe-{side.name}", side.peer_ns, python_argv(
                "p2prtc.lab.probe", "client", RELAY_IP, RELAY_IP2, "--port", str(PROBE_PORT),
                "--stun-port", str(STUN_PORT), "--wait", f"{wait:.3f}"))
            ev = await p.wait_event(("probe",), START_TIMEOUT)
            return ev

        reports = await asyncio.gather(*(one(s) for s in lab.sides.values()))
        for side, rep in zip(lab.sides.values(), reports, strict=True):
            rep = {k: v for k, v in rep.items() if k not in ("event", "t")}
            result.probes[side.name] = rep
            want = EXPECTED[side.nat]
            got = (rep.get("mapping"), rep.get("filtering"), rep.get("hops"))
            if rep.get("type") != side.nat:
                msg = (f"side {side.name}: built {side.nat} (mapping {want[0]}, filtering "
                       f"{want[1]}) but the probe measured {rep.get('type')} (mapping {got[0]}, "
                       f"filtering {got[1]}, {got[2]} NAT hops)"
                       + (f": {rep['error']}" if rep.get("error") else ""))
                result.probe_mismatches.append(msg)
        self.note("probed", probes=result.probes, mismatches=result.probe_mismatches)

    def _fill(self, result: RunResult, done: LabEvent) -> None:
        result.direct = bool(done.get("direct"))
        result.rtt_ms = done.get("rtt_ms") or {}
        result.throughput = done.get("throughput")
        result.chat = done.get("chat")
        result.file = done.get("file")
        result.path = done.get("path") or ("direct" if result.direct else "relay")
        result.turn_relay = done.get("turn_relay")
        if done.get("path_at_connect") not in (None, result.path):
            result.path_at_connect = done["path_at_connect"]
        if result.direct:
            result.time_to_direct_ms = done.get("ms")
            result.relayed_ms = done.get("relayed_ms")
            result.candidate_pair = done.get("candidate_pair")
        else:
            result.error = done.get("reason")
            result.failure_reported_ms = done.get("ms")
            pred = predict(result.nat_a, result.nat_b)
            why = pred.why if not pred.direct else (
                "theory expected a direct connection: " + (done.get("reason") or "unknown"))
            chat = result.chat or {}
            if chat.get("ok"):
                why += f"; chat continued over the {chat.get('via') or 'relay'}"
            elif result.chat is not None:
                why += f"; chat over the relay failed too ({chat.get('error')})"
            result.failure = why


_LIVE: set[Lab] = set()


@atexit.register
def _cleanup_at_exit() -> None:
    """Last resort (e.g. an exception escaping the event loop): never leave namespaces behind."""
    for lab in list(_LIVE):
        try:
            lab.destroy()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


async def run_one(opts: RunOptions,
                  on_event: Callable[[str, LabEvent], None] | None = None) -> RunResult:
    return await LabRun(opts, on_event).run()


def matrix_pairs(types: tuple[str, ...] = NAT_TYPES) -> list[tuple[str, str]]:
    """Every unordered pair of NAT types, each type with itself included."""
    return list(itertools.combinations_with_replacement(types, 2))


async def run_matrix(base: RunOptions, types: tuple[str, ...] = NAT_TYPES,
                     on_event: Callable[[str, LabEvent], None] | None = None,
                     on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    results = []
    for a, b in matrix_pairs(types):
        opts = RunOptions(**{**asdict(base), "nat_a": a, "nat_b": b})
        try:
            r = await run_one(opts, on_event)
        except LabError as e:
            pred = predict(a, b)
            r = RunResult(a, b, base.peers, base.delay_ms, base.loss_pct, pred.direct, pred.why,
                          turn=base.turn, error=f"lab error: {e}",
                          failure=f"the run failed: {e}")
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results


async def run_probes(types: tuple[str, ...] = NAT_TYPES,
                     on_event: Callable[[str, LabEvent], None] | None = None,
                     ) -> dict[str, dict[str, Any]]:
    """Build each NAT type (two per lab) and probe it: {type: probe report + "ok"}."""
    out: dict[str, dict[str, Any]] = {}
    todo = list(types)
    while todo:
        a, b = todo[0], todo[1] if len(todo) > 1 else todo[0]
        todo = todo[2:]
        r = await run_one(RunOptions(a, b, probe_only=True), on_event)
        for side, nat in (("a", a), ("b", b)):
            rep = dict(r.probes.get(side, {}))
            rep["ok"] = rep.get("type") == nat
            out[nat] = rep
    return out


# -- presenting results ---------------------------------------------------------------------------

def detected_as(nat: str) -> str:
    """The lab type a peer's NAT detection should report for NAT type `nat`: a double NAT (two
    port-restricted routers) behaves as one port-restricted NAT."""
    return "port-restricted" if nat == "double" else nat


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def describe_result(r: RunResult) -> str:
    lines = [f"NAT lab: A {r.nat_a} x B {r.nat_b}, {r.peers} peers, TURN {r.turn}"
             + (f", {r.delay_ms:g} ms delay" if r.delay_ms else "")
             + (f", {r.loss_pct:g}% loss" if r.loss_pct else "")]
    for name, p in sorted(r.probes.items()):
        lines.append(f"  probe {name}: {p.get('type')} (mapping {p.get('mapping')}, filtering "
                     f"{p.get('filtering')}, mapped {p.get('mapped', {}).get('stun')})")
    for m in r.probe_mismatches:
        lines.append(f"  PROBE MISMATCH: {m}")
    if r.nat_a_detected or r.nat_b_detected:
        lines.append(f"  NAT detected by the peers: A {r.nat_a_detected or '-'}, "
                     f"B {r.nat_b_detected or '-'}")
    theory = "direct" if r.predicted_direct else "no direct path"
    if r.direct:
        how = (f"WebRTC via TURN (relay {r.turn_relay})" if r.path == "turn"
               else "direct WebRTC")
        lines.append(f"  {how} in {_fmt_ms(r.time_to_direct_ms)} ms from the dial "
                     + (f"(relayed connection after {_fmt_ms(r.relayed_ms)} ms)"
                        if r.relayed_ms is not None else ""))
        if r.path_at_connect:
            lines.append(f"  path when the connection opened: {r.path_at_connect} (the engine "
                         f"then moved to the {r.path} pair)")
        for who, pair in (("B", r.candidate_pair), ("A", r.listener_candidate_pair)):
            if pair:
                lines.append(f"  candidate pair as {who} sees it: {pair.get('local')} "
                             f"{pair.get('local_addr')} <-> {pair.get('remote')} "
                             f"{pair.get('remote_addr')}")
    else:
        lines.append(f"  no direct connection (reported {_fmt_ms(r.failure_reported_ms)} ms after "
                     f"the dial): {r.failure}")
        if r.error:
            lines.append(f"  peer said: {r.error}")
    rtt = r.rtt_ms or {}
    lines.append(f"  RTT: relayed {_fmt_ms(rtt.get('relay'))} ms, WebRTC ({r.path}) "
                 f"{_fmt_ms(rtt.get('direct'))} ms")
    if r.throughput:
        t = r.throughput
        lines.append(f"  throughput ({r.path}): {t['bytes'] / 1e6:.0f} MB in {t['seconds']:.2f} s "
                     f"= {t['MBps']:.1f} MB/s")
    if r.file:
        f = r.file
        lines.append(f"  file: {f['bytes'] / 1e6:g} MB, SHA-256 {f['sha256'][:16]}... confirmed by "
                     f"the receiver, {f['MBps']:.1f} MB/s" if f.get("ok")
                     else f"  file: FAILED ({f.get('error')})")
    if r.chat is not None:
        c = r.chat
        lines.append(f"  chat: {'ok over ' + str(c.get('via')) if c.get('ok') else 'FAILED: ' + str(c.get('error'))}")
    verdict = "matches theory" if r.matches_theory else "MISMATCH with theory"
    lines.append(f"  theory: {theory} -> expected path {r.expected_path}, got {r.path}: {verdict}")
    if r.logs:
        lines.append(f"  logs: {r.logs}")
    return "\n".join(lines)


MATRIX_HEADER = ("| A (listens) | B (dials) | theory | measured | path | NAT detected A / B | "
                 "time to WebRTC (ms) | "
                 "pair at B (local/remote) | pair at A | RTT relay / WebRTC (ms) | MB/s | file | "
                 "chat | note |")


def matrix_row(r: RunResult) -> str:
    theory = {"direct": "direct", "turn": "TURN"}.get(r.expected_path, "relay only")
    measured = "direct" if r.path == "direct" else "TURN" if r.path == "turn" else "relay only"
    path = (r.path or "") + (f" ({r.turn_relay})" if r.path == "turn" and r.turn_relay else "")
    file = "-" if r.file is None else "sha256 ok" if r.file.get("ok") else "FAILED"
    rtt = r.rtt_ms or {}
    rtts = f"{_fmt_ms(rtt.get('relay'))} / {_fmt_ms(rtt.get('direct'))}"
    mbps = f"{r.throughput['MBps']:.1f}" if r.throughput else "-"
    chat = "-" if r.chat is None else (r.chat.get("via") or "ok") if r.chat.get("ok") else "FAILED"
    notes = []
    if not r.matches_theory:
        notes.append("**MISMATCH**")
    if r.path_at_connect:
        notes.append(f"{r.path_at_connect} first")
    if r.probe_mismatches:
        notes.append("probe mismatch: " + "; ".join(r.probe_mismatches))
    if not r.direct and r.failure_reported_ms is not None:
        notes.append(f"failure reported after {_fmt_ms(r.failure_reported_ms)} ms")
    wrong = [f"{side} detected {got}" for side, nat, got in (("A", r.nat_a, r.nat_a_detected),
                                                              ("B", r.nat_b, r.nat_b_detected))
             if got is not None and got != detected_as(nat)]
    if wrong:
        notes.append("NAT " + ", ".join(wrong))
    ttd = _fmt_ms(r.time_to_direct_ms) if r.direct else "-"
    detected = f"{r.nat_a_detected or '-'} / {r.nat_b_detected or '-'}"
    return (f"| {r.nat_a} | {r.nat_b} | {theory} | {measured} | {path} | {detected} | {ttd} | "
            f"{_pair_types(r.candidate_pair)} | {_pair_types(r.listener_candidate_pair)} | "
            f"{rtts} | {mbps} | {file} | {chat} | {', '.join(notes)} |")


def matrix_table(results: list[RunResult]) -> str:
    sep = "|" + "---|" * (MATRIX_HEADER.count("|") - 1)
    return "\n".join([MATRIX_HEADER, sep] + [matrix_row(r) for r in results])
