"""/webrtc (private-to-private) benchmark: dial-to-direct time and 20 MB throughput between
Python (p2prtc), js-libp2p in headless Chromium and js-libp2p in Node (node-datachannel), every
pair in one run, through one relay (`p2prtc relay`, the real CLI).

    scripts/netns-run .venv/bin/python bench/webrtc_bench.py [--runs 5] [--tp-runs 3] [--mb 20]
        [--pairs py-py,py-browser,...] [--json out.json]

WebRTC gathers no candidates on loopback, so this runs inside `scripts/netns-run` (a network
namespace whose only non-loopback interface is a veth pair with 198.51.100.7, both ends inside):
nothing can leave the machine. The script refuses to run anywhere else.

Every listener B reserves a slot on the relay through its WebSocket address (what a browser can
dial) and is dialed at `<relay ws>/p2p-circuit/webrtc/p2p/<B>`. Each run uses a FRESH dialer A
(a new process; for a browser a new Chromium, whose start is excluded): "cold" = its first dial
ever (connect to the relay, circuit, noise + yamux on it, /webrtc-signaling, ICE, DTLS, SCTP),
"warm" = its second dial, to another listener of the same kind (its relay connection is up).
Dial time = wall time of the `dial` control command until the dialer reports a direct WebRTC
connection (checked: remote address has /webrtc, not relayed, not limited). CPU per dial =
utime+stime of the dialer's and the two listeners' processes over a run's cold + warm dial,
halved (/proc ticks: 10 ms resolution, so medians over runs).

Throughput = `/perf/1.0.0` on that direct connection (warmed by 1 MiB each way): upload N MB
(A -> B; B replies 0 bytes), then download N MB (B -> A); wall time of the control command.
CPU: utime+stime of each peer's processes during the transfer (/proc; for a browser, every
process of its Chromium: renderer, network service, GPU, browser process). "load gen" = this
controller + the Playwright drivers; "rest of machine" = everything else on the (shared)
machine. Runs are round-robin over the pairs.

Python peers run on either WebRTC engine (issue 13): kind `py` = aiortc, `pyw` = libwebrtc through
wrtc (P2PRTC_ENGINE in the peer's environment). Memory per connection (`--mem-conns N`, per
engine): a child process opens N connected peer-connection pairs with an open data channel, in
process, and reports its RSS growth per peer connection.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from peers import (ROOT, GroupCpuMeter, JS_DIR, P2PRTC_PY, ControlledProcess, PeerProcessError,
                   cmdline, descendants, fmt_range, machine_info, markdown_table, med,
                   peer_process, ratio)

from tests.interop.jspeer import (BrowserPeerError, BrowserSession, JsHarnessMissing,  # noqa: E402
                                  NodePeer, chromium_send_failures, node_binary)

from p2prtc.netutil import ipv4_addresses, ipv6_addresses  # noqa: E402
from p2prtc.transports.webrtc import engine_base  # noqa: E402

DEFAULT_IP = "198.51.100.7"
NETNS_HINT = "scripts/netns-run .venv/bin/python bench/webrtc_bench.py"
KINDS = {"py": "Python (aiortc)", "pyw": "Python (wrtc)", "browser": "browser",
         "browser1": "browser (same Chromium)", "node": "Node"}
ENGINE_OF = {"py": "aiortc", "pyw": "wrtc"}
DEFAULT_PAIRS = ["py-py", "pyw-pyw", "py-browser", "pyw-browser", "browser-py", "browser-pyw",
                 "browser-browser", "browser1-browser1", "node-py", "py-node", "node-pyw", "pyw-node"]
# issue 13: the wrtc engine, Python <-> Python, vs aiortc and absolute (on a quiet machine)
GOAL_WRTC_VS_AIORTC = 3.0
GOAL_WRTC_MB_S = 80.0
GOAL_WRTC_BROWSER_VS_BB = 2.0
GOAL_PY_MB_S = 20.0
QUIET_PCT = 10
BIG = "1000000"
PEER_ERRORS = (PeerProcessError, BrowserPeerError, TimeoutError, asyncio.TimeoutError, LookupError,
               OSError)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_network(ip: str) -> str | None:
    """None if this namespace looks like scripts/netns-run's, else why not."""
    v4 = [a for a in ipv4_addresses() if not a.startswith("127.")]
    v6 = [a for a in ipv6_addresses() if a != "::1"]
    if not v4:
        return "no non-loopback interface here: WebRTC peers would gather no ICE candidates"
    if ip not in v4:
        return f"{ip} is not an address of this network namespace (have {v4})"
    others = [a for a in v4 + v6 if a != ip]
    if others:
        return (f"this namespace has other addresses ({', '.join(others)}): WebRTC peers would "
                "gather candidates on them and could send traffic off this machine")
    return None


# --- the relay -----------------------------------------------------------------------------------

class Relay(ControlledProcess):
    """`p2prtc relay` (the real CLI) on the veth address: TCP + WebSocket, no STUN. Counts and
    rate limits lifted (every peer here has the same IP and the benchmark opens many circuits),
    the per-circuit limits (2 min, 128 KiB) kept, so relayed connections are `limited` as in a
    real deployment and perf cannot run over them by mistake."""

    def __init__(self, ip: str) -> None:
        rate = f"{BIG}/1"
        argv = [str(ROOT / ".venv/bin/p2prtc"), "relay", "--port", "0", "--websocket-port", "0",
                "--listen-ip", ip, "--stun-port", "0", "--json",
                "--max-reservations", BIG, "--max-reservations-per-peer", BIG,
                "--max-circuits", BIG, "--max-circuits-per-peer", BIG,
                "--reservation-rate-per-peer", rate, "--reservation-rate-per-ip", rate,
                "--circuit-rate-per-peer", rate, "--circuit-rate-per-ip", rate,
                "--max-connections-per-ip", BIG, "--connection-rate-per-ip", rate]
        super().__init__(argv, name="relay", cwd=str(ROOT))

    async def start(self, timeout: float = 60) -> dict:
        self.ready = {"event": "ready"}
        self._events.append(self.ready)  # ControlledProcess.start waits for "ready"
        await super().start(timeout)
        ev = await self.wait_event("listening", timeout=timeout)
        self.ready = {"peerId": ev["peer"], "addrs": ev["addrs"]}
        return self.ready

    @property
    def ws_addr(self) -> str:
        return next(a for a in self.ready["addrs"] if "/ws/" in a)


# --- peers of each kind behind one interface -----------------------------------------------------

class Peer:
    kind = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peer_id = ""
        self.addr = ""  # our dialable <relay>/p2p-circuit/webrtc/p2p/<me>, once listening

    async def start(self) -> None: ...
    async def listen_on(self, relay_ws: str) -> str: ...
    async def call(self, cmd: str, timeout: float = 60, **args) -> dict: ...
    async def stop(self) -> None: ...

    def pids(self, table) -> set[int]: ...

    def cpu_key(self) -> str:
        """Peers with the same key share processes (pages of one Chromium)."""
        return self.name

    def log_lines(self) -> list[str]:
        return []

    def send_failures(self) -> int | None:
        """Packets its Chromium failed to send so far (None: not a browser)."""
        return None

    def new_log_errors(self) -> list[str]:
        """Error lines logged since the last call (tracebacks show as their last line)."""
        lines = self.log_lines()
        seen = getattr(self, "_log_seen", 0)
        self._log_seen = len(lines)
        return [ln.strip()[:200] for ln in lines[seen:]
                if re.search(r"Error|error|Exception|exception|assert", ln)][-4:]

    async def dial(self, addr: str, timeout: float = 45) -> dict:
        return await self.call("dial", timeout=timeout, addr=addr)

    async def perf(self, peer: str, up: int, down: int, timeout: float = 600) -> dict:
        return await self.call("perf", timeout=timeout, peer=peer, upload_bytes=up,
                               download_bytes=down)

    async def control_rtt(self) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            await self.call("connections")
            best = min(best, time.perf_counter() - t0)
        return best


class ProcessPeer(Peer):
    """A peer in one OS process speaking the control protocol (Python testpeer, Node peer.mjs)."""

    proc: ControlledProcess

    async def start(self) -> None:
        await self.proc.start()
        self.peer_id = self.proc.ready["peerId"]

    async def call(self, cmd: str, timeout: float = 60, **args) -> dict:
        return await self.proc.call(cmd, timeout=timeout, **args)

    async def stop(self) -> None:
        await self.proc.stop()

    def pids(self, table) -> set[int]:
        return descendants(table, self.proc.proc.pid) if self.proc.proc else set()

    def log_lines(self) -> list[str]:
        try:
            with open(self.proc.log_path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []


class PyPeer(ProcessPeer):
    kind = "py"

    def __init__(self, name: str, kind: str = "py") -> None:
        super().__init__(name)
        self.kind = kind
        self.proc = peer_process("p2prtc", ["/webrtc"], name=name, extra=["--webrtc"])
        self.proc.env = {**(self.proc.env or {}), "P2PRTC_ENGINE": ENGINE_OF[kind]}

    async def listen_on(self, relay_ws: str) -> str:
        await self.call("listen_relay", addr=relay_ws, timeout=30)
        self.addr = f"{relay_ws}/p2p-circuit/webrtc/p2p/{self.peer_id}"
        return self.addr


class NodeWebRTCPeer(ProcessPeer):
    kind = "node"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.proc = NodePeer(webrtc=True, listen=["/p2p-circuit"], ice_servers=[], name=name)

    async def listen_on(self, relay_ws: str) -> str:
        await self.call("dial", addr=relay_ws, timeout=30)
        self.addr = await self.proc.wait_for_addr("/p2p-circuit/webrtc", timeout=30)
        return self.addr


class Chromium:
    """One headless Chromium (BrowserSession: its own Playwright driver) and its process tree."""

    def __init__(self, name: str) -> None:
        self.name = name
        # no 127.0.0.1 candidates, as a real browser: with them Chromium sometimes ran on a
        # 127.0.0.1 <-> 198.51.100.7 pair and moved to the veth pair mid-transfer (captured once:
        # its loopback socket dropped SACKs, the other side answered on the old pair ~90 ms)
        # its own log, for the packets it fails to send (bench/README.md, "Why a Chromium sender
        # stalls")
        self._logdir = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.log_path = Path(self._logdir.name) / "chromium.log"
        self.session = BrowserSession(loopback=False, log_path=self.log_path)
        self.driver_pid: int | None = None

    async def start(self) -> None:
        from peers import process_table

        before = set(descendants(process_table(), os.getpid()))
        await self.session.start()
        table = process_table()
        new = descendants(table, os.getpid()) - before
        # the Playwright driver is the new direct child of ours; Chromium runs under it
        drivers = [p for p in new if table[p][0] == os.getpid()]
        if len(drivers) != 1:
            raise RuntimeError(f"cannot tell the Playwright driver among new processes {sorted(new)}")
        self.driver_pid = drivers[0]
        self.version = self.session.browser.version

    def pids(self, table) -> set[int]:
        return descendants(table, self.driver_pid, include_root=False) if self.driver_pid else set()

    def send_failures(self) -> int:
        return chromium_send_failures(self.log_path)

    async def close(self) -> None:
        await self.session.close()
        self._logdir.cleanup()


def chromium_role(pid: int) -> str:
    """What a Chromium process does, from its command line (Chromium rewrites its children's
    argv into one space-separated string)."""
    argv = cmdline(pid)
    if not argv:
        return "gone"
    text = " ".join(argv)
    kind = re.search(r"--type=(\S+)", text)
    if kind is None:
        return "browser" if "chrom" in os.path.basename(argv[0]) else os.path.basename(argv[0])
    if kind.group(1) == "utility":
        sub = re.search(r"--utility-sub-type=(\S+)", text)
        sub = sub.group(1) if sub else ""
        return "network" if "NetworkService" in sub else f"utility:{sub.split('.')[0]}"
    return {"gpu-process": "gpu"}.get(kind.group(1), kind.group(1))


class BrowserWebRTCPeer(Peer):
    """js-libp2p in a Chromium page. own=True: its own Chromium (all of whose processes are its
    CPU); else a page in a shared Chromium (`shared`), whose CPU cannot be split between pages."""

    def __init__(self, name: str, kind: str = "browser", shared: Chromium | None = None) -> None:
        super().__init__(name)
        self.kind = kind
        self.chromium = shared or Chromium(name)
        self.own = shared is None
        self.page = None

    async def start(self) -> None:
        if self.own:
            await self.chromium.start()
        self.page = await self.chromium.session.new_peer(self.name)
        await self.page.start(ice_servers=[])
        self.peer_id = self.page.peer_id

    async def listen_on(self, relay_ws: str) -> str:
        await self.page.dial(relay_ws, timeout=30)
        self.addr = await self.page.wait_for_addr("/p2p-circuit/webrtc", timeout=30)
        return self.addr

    async def call(self, cmd: str, timeout: float = 60, **args) -> dict:
        return await self.page.call(cmd, timeout=timeout, **args)

    async def control_rtt(self) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            await self.call("addrs")
            best = min(best, time.perf_counter() - t0)
        return best

    def pids(self, table) -> set[int]:
        return self.chromium.pids(table)

    def cpu_key(self) -> str:
        return self.chromium.name

    def send_failures(self) -> int | None:
        return self.chromium.send_failures()

    def log_lines(self) -> list[str]:
        return self.page.console_lines() if self.page is not None else []

    async def stop(self) -> None:
        if self.page is not None:
            await self.page.close()
            self.page = None
        if self.own:
            await self.chromium.close()


# --- measurement ---------------------------------------------------------------------------------

class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.relay: Relay | None = None
        self.listeners: dict[str, list[Peer]] = {}
        self.shared_chromium: Chromium | None = None
        self.alive: list[Peer] = []
        self.drivers: set[int] = set()
        self.serial = 0

    def new_peer(self, kind: str, role: str) -> Peer:
        self.serial += 1
        name = f"{kind}-{role}{self.serial}"
        if kind in ENGINE_OF:
            return PyPeer(name, kind)
        if kind == "node":
            return NodeWebRTCPeer(name)
        if kind == "browser":
            return BrowserWebRTCPeer(name)
        if kind == "browser1":
            return BrowserWebRTCPeer(name, "browser1", shared=self.shared_chromium)
        raise ValueError(kind)

    async def start_peer(self, kind: str, role: str) -> Peer:
        p = self.new_peer(kind, role)
        self.alive.append(p)
        await p.start()
        if isinstance(p, BrowserWebRTCPeer) and p.chromium.driver_pid:
            self.drivers.add(p.chromium.driver_pid)
        return p

    async def stop_peer(self, p: Peer) -> None:
        try:
            await asyncio.wait_for(p.stop(), 30)
        except Exception as e:  # noqa: BLE001 - cleanup
            log(f"  stopping {p.name}: {type(e).__name__}: {e}")
        if p in self.alive:
            self.alive.remove(p)

    async def setup(self, kinds: set[str]) -> None:
        self.relay = Relay(self.args.ip)
        await self.relay.start()
        log(f"relay {self.relay.ws_addr}")
        if "browser1" in kinds:
            self.shared_chromium = Chromium("chromium-shared")
            await self.shared_chromium.start()
            self.drivers.add(self.shared_chromium.driver_pid)
        for kind in sorted(kinds):
            ls = []
            for _ in range(2):
                p = await self.start_peer(kind, "L")
                await p.listen_on(self.relay.ws_addr)
                p.new_log_errors()  # start-up noise is not a failure
                ls.append(p)
            self.listeners[kind] = ls
            log(f"listeners {kind}: {[p.addr for p in ls]}")

    async def close(self) -> None:
        for p in list(self.alive):
            await self.stop_peer(p)
        if self.shared_chromium is not None:
            await self.shared_chromium.close()
        if self.relay is not None:
            await self.relay.stop()

    def controller_pids(self, table) -> set[int]:
        return ({os.getpid()} | self.drivers) & set(table)

    async def timed_dial(self, dialer: Peer, target: Peer) -> tuple[float, dict]:
        t0 = time.perf_counter()
        reply = await dialer.dial(target.addr)
        wall = time.perf_counter() - t0
        why = not_direct(reply, target.peer_id)
        if why:
            raise PeerProcessError(f"dial {dialer.name} -> {target.name}: {why}: {reply}")
        return wall, reply

    async def run_once(self, a_kind: str, b_kind: str, run: int, res: dict) -> None:
        """One run of a pair: fresh dialer, cold + warm dial, and (first --tp-runs runs) perf
        on the warm dial's connection. A failed dial or transfer is counted and retried with a
        fresh dialer (a retried transfer dials first, not counted as a dial sample)."""
        l1, l2 = self.listeners[b_kind]
        nbytes = int(self.args.mb * 1e6)
        dialed = False
        todo = ["up", "down"] if run <= self.args.tp_runs else []
        for attempt in range(self.args.retries + 1):
            dialer = await self.start_peer(a_kind, "D")
            try:
                if not dialed:
                    res["control_rtt_s"].append(await dialer.control_rtt())
                    groups = {"dialer": dialer.pids,
                              "listener": lambda t: l1.pids(t) | l2.pids(t)}
                    with GroupCpuMeter(groups) as m:
                        try:
                            res["dials"] += 1
                            cold, r1 = await self.timed_dial(dialer, l1)
                            res["dials"] += 1
                            warm, r2 = await self.timed_dial(dialer, l2)
                        except PEER_ERRORS as e:
                            msg = first_line(e)
                            res["dial_failures"].append(msg + self.listener_errors([l1, l2]))
                            log(f"  run {run} attempt {attempt + 1}: dial failed: {msg}")
                            continue
                    dialed = True
                    res["cold_s"].append(cold)
                    res["warm_s"].append(warm)
                    res["dial_replies"].append([strip(r1), strip(r2)])
                    res["dial_others_pct"].append(m.percent("others"))
                    # CPU per dial (the two dials' mean), each side's processes
                    res.setdefault("dial_cpu_ms", []).append(
                        {k: m.cpu[k] * 1000 / 2 for k in ("dialer", "listener")})
                    log(f"  run {run}: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms "
                        f"({r2.get('remoteAddr')}), rest of machine {m.percent('others'):.0f}%")
                elif todo:
                    try:
                        await self.timed_dial(dialer, l2)
                    except PEER_ERRORS as e:
                        res["perf_failures"].append(f"re-dial: {first_line(e)}")
                        continue
                if todo:
                    todo = await self.throughput(dialer, l2, nbytes, run, res, todo)
                if not todo:
                    return
            finally:
                await self.stop_peer(dialer)
        log(f"  run {run}: gave up after {self.args.retries + 1} attempts")

    def listener_errors(self, listeners: list[Peer]) -> str:
        """New error lines in listeners' logs (a crashed connection shows up there)."""
        found = []
        for p in listeners:
            lines = p.new_log_errors()
            if lines:
                found.append(f"{p.name} log: {' | '.join(lines)}")
        return ("; " + "; ".join(found)) if found else ""

    async def throughput(self, dialer: Peer, target: Peer, nbytes: int, run: int, res: dict,
                         todo: list[str]) -> list[str]:
        """Measure the directions in `todo`; return those that failed."""
        try:
            await dialer.perf(target.peer_id, 1 << 20, 1 << 20, timeout=120)
        except PEER_ERRORS as e:
            res["perf_failures"].append(f"warm-up: {first_line(e)}{self.listener_errors([target])}")
            log(f"  run {run}: perf warm-up failed: {first_line(e)}")
            return todo
        shared = dialer.cpu_key() == target.cpu_key()
        groups = {"dialer": dialer.pids, "listener": target.pids, "loadgen": self.controller_pids}
        failed = []
        for direction in todo:
            up, down = (nbytes, 0) if direction == "up" else (0, nbytes)
            browsers = {p.cpu_key(): p for p in (dialer, target) if p.send_failures() is not None}
            failed0 = {k: p.send_failures() for k, p in browsers.items()}
            try:
                with GroupCpuMeter(groups) as m:
                    reply = await dialer.perf(target.peer_id, up, down)
            except PEER_ERRORS as e:
                res["perf_failures"].append(f"{direction}: {first_line(e)}{self.listener_errors([target])}")
                log(f"  run {run}: perf {direction} failed: {res['perf_failures'][-1]}")
                failed.append(direction)
                continue
            both = m.used(m.pids["dialer"] | m.pids["listener"])
            sample = {"run": run, "wall_s": m.wall, "mb_s": nbytes / 1e6 / m.wall,
                      "mb_per_cpu_s": nbytes / 1e6 / both if both > 0 else None,
                      "shared_processes": shared,
                      "pct": {k: round(m.percent(k), 1) for k in m.cpu},
                      "roles": {who: roles_pct(m, who) for who in ("dialer", "listener")
                                if isinstance(dialer if who == "dialer" else target, BrowserWebRTCPeer)},
                      "reply": strip(reply)}
            if browsers:  # packets the Chromiums lost inside themselves during the transfer
                sample["chromium_send_failed"] = sum(p.send_failures() - failed0[k]
                                                     for k, p in browsers.items())
            if shared:  # one Chromium: its CPU is both peers' together
                sample["pct"]["both"] = round(100.0 * both / m.wall, 1)
            res[direction].append(sample)
            log(f"  run {run}: {direction} {sample['mb_s']:.2f} MB/s, "
                f"{sample['mb_per_cpu_s'] or 0:.1f} MB/CPU-s, dialer {m.percent('dialer'):.0f}%, "
                f"listener {m.percent('listener'):.0f}%, load gen {m.percent('loadgen'):.0f}%, "
                f"rest {m.percent('others'):.0f}%"
                + (f", Chromium's failed sends {sample['chromium_send_failed']}" if browsers else ""))
        return failed


def roles_pct(m: GroupCpuMeter, who: str) -> dict[str, float]:
    """CPU % of a Chromium's processes by role (renderer, network, gpu, browser, ...)."""
    by: dict[str, set[int]] = {}
    for pid in m.pids[who]:
        by.setdefault(chromium_role(pid), set()).add(pid)
    return {role: round(100.0 * m.used(p) / m.wall, 1) for role, p in sorted(by.items())}


def not_direct(reply: dict, peer: str) -> str | None:
    addr = str(reply.get("remoteAddr", ""))
    if reply.get("peer") not in (None, peer):
        return f"connected to {reply.get('peer')}, not {peer}"
    if "/webrtc" not in addr or "/webrtc-direct" in addr:
        return "not a /webrtc connection"
    if reply.get("limited") or reply.get("direct") is False:
        return "relayed/limited connection"
    return None


def dial_cpu(r: dict) -> str:
    """Median CPU ms per dial of the dialer's and the listener's processes (cold and warm dial
    together, halved; a browser peer's whole Chromium)."""
    cpu = r.get("dial_cpu_ms") or []
    if not cpu:
        return "-"
    return f"{med([c['dialer'] for c in cpu]):.0f} / {med([c['listener'] for c in cpu]):.0f}"


def strip(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


def first_line(e: BaseException) -> str:
    """The error in one line, without peer names or console tails, so that alike failures
    group in the report."""
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    msg = re.sub(r"\b(?:browser1?|pyw?|node)-[DL]\d+(?::| console \(last lines\):?)\s*", "", msg)
    return f"{type(e).__name__}: {msg.rstrip('; ')[:200]}"


# --- report --------------------------------------------------------------------------------------

def label(kind: str) -> str:
    return KINDS[kind]


def pair_label(key: str) -> str:
    a, b = key.split("-")
    if a == b == "browser":
        return "browser -> browser (2 Chromiums)"
    if a == b == "browser1":
        return "browser -> browser (1 Chromium, 2 pages)"
    return f"{label(a)} -> {label(b)}"


def samples(res: dict, direction: str, field: str, quiet: bool = False) -> list[float]:
    """Values of one field; quiet=True keeps the runs during which the rest of the machine
    used at most QUIET_PCT (other sessions' load is what spreads these numbers)."""
    return [s[field] for s in res.get(direction, []) if s.get(field) is not None
            and (not quiet or s["pct"]["others"] <= QUIET_PCT)]


def quiet_note(xs: list[float], ys: list[float] | None = None) -> str:
    if not xs or (ys is not None and not ys):
        return ""
    if ys is None:
        return f"; quiet runs (rest of machine <= {QUIET_PCT}%): {med(xs):.1f} MB/s (n={len(xs)})"
    return (f"; quiet runs (rest of machine <= {QUIET_PCT}%): {med(xs):.1f} vs {med(ys):.1f} = "
            f"{med(xs) / med(ys):.2f}x (n={len(xs)}/{len(ys)})")


def pct_med(res: dict, direction: str, who: str) -> str:
    xs = [s["pct"][who] for s in res.get(direction, []) if who in s["pct"]]
    return f"{med(xs):.0f}%" if xs else "-"


def report(results: dict) -> str:
    args = results["args"]
    pairs = results["pairs"]
    m = results["machine"]
    v = m["versions"]
    out = [f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['date']}; "
           f"load average at start {m['loadavg'][0]:.2f}",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    ref = "browser-browser"
    bb = pairs.get(ref, {})

    # dial table
    rows = []
    for key, r in pairs.items():
        if "error" in r:
            rows.append([pair_label(key), f"not run: {r['error']}", "", "", "", "", "", "", "", ""])
            continue
        c, w = med(r["cold_s"]), med(r["warm_s"])
        own = [[d.get("ms") for d in pair] for pair in r["dial_replies"]]
        own_c = med([o[0] for o in own if o[0] is not None])
        own_w = med([o[1] for o in own if o[1] is not None])
        rows.append([pair_label(key), fmt_range(r["cold_s"], 0, 1000), fmt_range(r["warm_s"], 0, 1000),
                     f"{own_c:.0f} / {own_w:.0f}",
                     f"{len(r['dial_failures'])}/{r['dials']}",
                     ratio(c, med(bb.get("cold_s", []))), ratio(w, med(bb.get("warm_s", []))),
                     f"{med(r['control_rtt_s']) * 1000:.1f}", f"{med(r['dial_others_pct']):.0f}%",
                     dial_cpu(r)])
    out.append(f"#### Dial to direct WebRTC, ms, median (min-max) of {args['runs']} (fresh dialer each run)")
    out.append("")
    out.append(markdown_table(
        ["dialer -> listener", "cold (1st dial of a fresh dialer)", "warm (2nd dial, relay connection up)",
         "dialer's own clock, cold / warm", "failed dials", "cold vs browser->browser", "warm vs browser->browser", "control RTT ms",
         "rest of machine", "CPU ms per dial, dialer / listener"], rows))
    out.append("")
    out.append("Time ratios vs browser -> browser (2 Chromiums): lower is faster. `failed dials` counts "
               "every dial attempt (failed runs are retried with a fresh dialer). The control round "
               "trip (Playwright's page.evaluate for browsers) is inside the dial time; the dialer's own "
               "clock (the `ms` its dial command reports) leaves it out.")
    out.append("")

    # throughput table
    rows = []
    for key, r in pairs.items():
        if "error" in r:
            continue
        for direction, arrow in (("up", "A -> B"), ("down", "B -> A")):
            mbs = samples(r, direction, "mb_s")
            eff = samples(r, direction, "mb_per_cpu_s")
            if not mbs:
                rows.append([pair_label(key), f"{direction} ({arrow})", "failed", "", "", "", "", "", "", "", ""])
                continue
            shared = any(s["shared_processes"] for s in r[direction])
            d_cpu = "shared: " + pct_med(r, direction, "both") if shared else pct_med(r, direction, "dialer")
            l_cpu = "(same)" if shared else pct_med(r, direction, "listener")
            vs_bb = ratio(med(mbs), med(samples(bb, direction, "mb_s")))
            vs_goal = ratio(med(mbs), GOAL_PY_MB_S) if key == "py-py" else ""
            lost = [s["chromium_send_failed"] for s in r[direction] if "chromium_send_failed" in s]
            rows.append([pair_label(key), f"{'upload' if direction == 'up' else 'download'} ({arrow})",
                         fmt_range(mbs, 1), f"{med(eff):.1f}" if eff else "-", d_cpu, l_cpu,
                         pct_med(r, direction, "loadgen"), pct_med(r, direction, "others"), vs_bb, vs_goal,
                         " ".join(str(n) for n in lost) if lost else "-"])
    out.append(f"#### {args['mb']:g} MB over /perf/1.0.0 on the direct connection, MB/s (1 MB = 1e6 bytes), "
               f"median (min-max) of {args['tp_runs']}")
    out.append("")
    out.append(markdown_table(
        ["dialer A -> listener B", "direction", "MB/s", "MB per CPU-s", "A CPU", "B CPU", "load gen CPU",
         "rest of machine", "MB/s vs browser->browser", "MB/s vs 20 MB/s goal",
         "Chromium's failed sends, per run"], rows))
    out.append("")
    out.append("CPU = the peer's processes' CPU time / wall time (100% = one core); a browser peer is "
               "its whole Chromium (one Chromium per peer, except the 1-Chromium row, where both pages "
               "share every process). MB per CPU-s = MB / CPU-seconds of A and B together. load gen = "
               "this controller + Playwright drivers; rest of machine = every other process (noise). "
               "Chromium's failed sends = packets its renderer could not hand to its network service "
               "during the transfer (lost inside Chromium; its SCTP then waits ~400 ms retransmission "
               "timeouts: bench/README.md, \"Why a Chromium sender stalls\").")
    out.append("")

    # Chromium roles
    role_rows = []
    for key, r in pairs.items():
        for direction in ("up", "down"):
            for who in ("dialer", "listener"):
                xs = [s["roles"][who] for s in r.get(direction, []) if who in s.get("roles", {})]
                if not xs:
                    continue
                if who == "listener" and any(s["shared_processes"] for s in r[direction]):
                    continue  # same Chromium as the dialer: already listed
                roles = sorted({k for x in xs for k in x})
                parts = [f"{role} {med([x.get(role, 0.0) for x in xs]):.0f}%" for role in roles]
                parts = [p for p in parts if not p.endswith(" 0%")]
                role_rows.append([pair_label(key), f"{'upload' if direction == 'up' else 'download'}",
                                  "both pages" if any(s["shared_processes"] for s in r[direction]) else who,
                                  ", ".join(parts)])
    if role_rows:
        out.append("#### Chromium CPU by process (median % of one core during the transfer)")
        out.append("")
        out.append(markdown_table(["pair", "direction", "browser peer", "processes"], role_rows))
        out.append("")

    # goals
    out.append("#### Goals (issues 4 and 13)")
    out.append("")
    goals = []
    for key in ("py-browser", "browser-py"):
        r = pairs.get(key)
        if not r or "error" in r or not bb or "error" in bb:
            continue
        for phase in ("cold_s", "warm_s"):
            a, b = med(r[phase]), med(bb[phase])
            if a == a and b == b:
                goals.append(f"- dial ({phase[:-2]}) {pair_label(key)}: {a * 1000:.0f} ms vs browser -> browser "
                             f"{b * 1000:.0f} ms = {a / b:.2f}x (goal <= 1.00x): {'MET' if a <= b else 'MISSED'}")
        for direction in ("up", "down"):
            xs, ys = samples(r, direction, "mb_s"), samples(bb, direction, "mb_s")
            a, b = med(xs), med(ys)
            if a == a and b == b:
                goals.append(f"- {args['mb']:g} MB {'upload' if direction == 'up' else 'download'} "
                             f"{pair_label(key)}: {a:.1f} MB/s vs browser -> browser {b:.1f} MB/s = "
                             f"{a / b:.2f}x (goal >= 1.00x): {'MET' if a >= b else 'MISSED'}; "
                             f"best runs {max(xs):.1f} vs {max(ys):.1f} = {max(xs) / max(ys):.2f}x"
                             + quiet_note(samples(r, direction, "mb_s", True), samples(bb, direction, "mb_s", True)))
    r = pairs.get("py-py")
    if r and "error" not in r:
        for direction in ("up", "down"):
            xs = samples(r, direction, "mb_s")
            a = med(xs)
            if a == a:
                goals.append(f"- {args['mb']:g} MB {'upload' if direction == 'up' else 'download'} Python -> Python: "
                             f"{a:.1f} MB/s (goal >= {GOAL_PY_MB_S:.0f} MB/s): "
                             f"{'MET' if a >= GOAL_PY_MB_S else 'MISSED'}; best run {max(xs):.1f} MB/s"
                             + quiet_note(samples(r, direction, "mb_s", True)))
    goals += engine_goals(results)
    out += goals or ["- (pairs missing)"]
    mem = results.get("memory") or {}
    if mem:
        out += ["", f"#### Memory per peer connection (RSS growth of one process holding "
                    f"{args['mem_conns']} connected pairs with an open data channel, in process)", ""]
        rows = [[e, f"{m['kib_per_pc']:.0f} KiB" if "kib_per_pc" in m else m.get("error", "?"),
                 f"{m.get('rss_before_kib', 0) / 1024:.0f} MB", f"{m.get('rss_after_kib', 0) / 1024:.0f} MB",
                 f"{m.get('setup_s', 0):.2f} s"] for e, m in mem.items()]
        out.append(markdown_table(["engine", "per peer connection", "RSS before (1 pair warm)",
                                   "RSS after", f"time to connect {args['mem_conns']} pairs"], rows))
    out += ["", "On a shared machine the medians of 3 move with other sessions' load (see `rest of machine`); "
            "the best run of each pair is the least disturbed one."]
    fails = []
    for key, r in pairs.items():
        for what in ("dial_failures", "perf_failures"):
            counts: dict[str, int] = {}
            for msg in r.get(what, []):
                counts[msg] = counts.get(msg, 0) + 1
            for msg, n in counts.items():
                fails.append(f"- {pair_label(key)}, {what.split('_')[0]}: {n}x {msg}")
    if fails:
        out += ["", "#### Failures (each retried with a fresh dialer)", ""] + fails
    return "\n".join(out)


def engine_goals(results: dict) -> list[str]:
    """Issue 13: the wrtc engine vs aiortc and browsers, same run."""
    args, pairs = results["args"], results["pairs"]
    ok = {k: r for k, r in pairs.items() if "error" not in r}
    goals = []
    aio, wrtc, bb = ok.get("py-py"), ok.get("pyw-pyw"), ok.get("browser-browser")
    for direction in ("up", "down"):
        name = "upload (A -> B)" if direction == "up" else "download (B -> A)"
        if aio and wrtc:
            xs, ys = samples(wrtc, direction, "mb_s"), samples(aio, direction, "mb_s")
            if xs and ys:
                a, b = med(xs), med(ys)
                goals.append(f"- {args['mb']:g} MB {name} Python -> Python, wrtc vs aiortc: {a:.1f} vs "
                             f"{b:.1f} MB/s = {a / b:.2f}x (goal >= {GOAL_WRTC_VS_AIORTC:g}x): "
                             f"{'MET' if a >= GOAL_WRTC_VS_AIORTC * b else 'MISSED'}; wrtc >= "
                             f"{GOAL_WRTC_MB_S:g} MB/s: {'MET' if a >= GOAL_WRTC_MB_S else 'MISSED'}; "
                             f"best runs {max(xs):.1f} vs {max(ys):.1f}"
                             + quiet_note(samples(wrtc, direction, "mb_s", True),
                                          samples(aio, direction, "mb_s", True)))
            for key, r in (("py-py", aio), ("pyw-pyw", wrtc)):
                eff = samples(r, direction, "mb_per_cpu_s")
                if eff:
                    goals.append(f"  - {pair_label(key)} {direction}: {1000 / med(eff):.1f} CPU-ms per MB "
                                 f"(A and B together), A {pct_med(r, direction, 'dialer')} / "
                                 f"B {pct_med(r, direction, 'listener')} of a core")
        for key in ("pyw-browser", "browser-pyw", "py-browser", "browser-py"):
            r = ok.get(key)
            if not r or not bb:
                continue
            xs, ys = samples(r, direction, "mb_s"), samples(bb, direction, "mb_s")
            if xs and ys:
                a, b = med(xs), med(ys)
                goal = (f" (goal >= {GOAL_WRTC_BROWSER_VS_BB:g}x): "
                        f"{'MET' if a >= GOAL_WRTC_BROWSER_VS_BB * b else 'MISSED'}"
                        if "pyw" in key else "")
                goals.append(f"- {args['mb']:g} MB {name} {pair_label(key)} vs browser -> browser: "
                             f"{a:.1f} vs {b:.1f} MB/s = {a / b:.2f}x{goal}")
    if aio and wrtc:
        for phase in ("cold_s", "warm_s"):
            a, b = med(wrtc[phase]), med(aio[phase])
            if a == a and b == b:
                goals.append(f"- dial to direct ({phase[:-2]}) Python -> Python, wrtc vs aiortc: "
                             f"{a * 1000:.0f} vs {b * 1000:.0f} ms = {a / b:.2f}x (goal <= 1x): "
                             f"{'MET' if a <= b else 'MISSED'}")
    return goals


MEM_CHILD = """
import asyncio, json, sys, time
from p2prtc.transports.webrtc.engine_base import make_peer_connection

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

async def pair(engine):
    a, b = make_peer_connection([], engine=engine), make_peer_connection([], engine=engine)
    got = asyncio.get_running_loop().create_future()
    b.on_datachannel = lambda ch: got.done() or got.set_result(ch)
    ch = a.create_channel("m")
    answer = await b.accept_offer(await a.create_offer())
    await a.accept_answer(answer)
    async def pump(src, dst):
        async for c in src.local_candidates():
            await dst.add_candidate(c)
    pumps = [asyncio.ensure_future(pump(a, b)), asyncio.ensure_future(pump(b, a))]
    await asyncio.wait_for(ch.wait_open(), 20)
    far = await asyncio.wait_for(got, 20)
    for t in pumps:
        t.cancel()
    return a, b, ch, far

async def main(engine, n):
    keep = [await pair(engine)]
    before = rss_kib()
    t0 = time.perf_counter()
    for _ in range(n):
        keep.append(await pair(engine))
    setup = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # let the engines settle (buffers, threads), not synchronisation
    after = rss_kib()
    print(json.dumps({"engine": engine, "n": n, "rss_before_kib": before, "rss_after_kib": after,
                      "setup_s": setup, "kib_per_pc": (after - before) / (2 * n)}))
    for a, b, _, _ in keep:
        await a.close(); await b.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def measure_memory(n: int) -> dict:
    out = {}
    for engine in engine_base.ENGINES:
        if engine == "wrtc" and engine_base.wrtc_problem():
            out[engine] = {"error": engine_base.wrtc_problem()}
            continue
        log(f"memory: {n} connected pairs on {engine}")
        proc = await asyncio.create_subprocess_exec(
            P2PRTC_PY, "-c", MEM_CHILD, engine, str(n), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 300)
            out[engine] = json.loads(stdout.decode().strip().splitlines()[-1])
        except (TimeoutError, ValueError, IndexError) as e:
            out[engine] = {"error": f"{type(e).__name__}: {stderr.decode()[-300:] if proc.returncode else e}"}
            if proc.returncode is None:
                proc.kill()
        log(f"  {engine}: {out[engine]}")
    return out


# --- main ----------------------------------------------------------------------------------------

def versions(bench: Bench) -> dict:
    info = machine_info()
    info["versions"].pop("py-libp2p", None)
    info["versions"].pop("rust-libp2p", None)
    for dist in ("aiortc", "aioice", "uvloop"):
        try:
            info["versions"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        pkg = JS_DIR / "node_modules/@libp2p/webrtc/package.json"
        info["versions"]["@libp2p/webrtc"] = json.loads(pkg.read_text())["version"]
        pkg = JS_DIR / "node_modules/node-datachannel/package.json"
        info["versions"]["node-datachannel"] = json.loads(pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    for p in bench.alive:
        if isinstance(p, BrowserWebRTCPeer) and getattr(p.chromium, "version", None):
            info["versions"]["chromium"] = p.chromium.version
            break
    return info


async def main_async(args) -> int:
    why = check_network(args.ip)
    if why:
        log(f"webrtc_bench: {why}.\nRun it inside a network namespace with a veth pair:\n\n    {NETNS_HINT}\n")
        return 2
    pairs = [tuple(p.split("-")) for p in args.pairs.split(",") if p]
    for a, b in pairs:
        if a not in KINDS or b not in KINDS or ("browser1" in (a, b) and a != b):
            log(f"bad pair {a}-{b}: kinds are {', '.join(KINDS)} (browser1 only with itself)")
            return 2
    kinds = {k for p in pairs for k in p}
    missing = {}
    if not os.access(P2PRTC_PY, os.X_OK):
        missing["py"] = missing["pyw"] = f"{P2PRTC_PY} missing"
    elif "pyw" in kinds and engine_base.wrtc_problem():
        missing["pyw"] = f"wrtc: {engine_base.wrtc_problem()}"
    if kinds & {"node", "browser", "browser1"}:
        try:
            node_binary()
        except JsHarnessMissing as e:
            for k in ("node", "browser", "browser1"):
                missing[k] = str(e)
    bench = Bench(args)
    results = {"args": vars(args), "pairs": {}, "machine": None}
    try:
        run_kinds = {k for k in kinds if k not in missing}
        await bench.setup(run_kinds)
        results["machine"] = versions(bench)
        for a, b in pairs:
            key = f"{a}-{b}"
            if a in missing or b in missing:
                results["pairs"][key] = {"error": missing.get(a) or missing.get(b)}
            else:
                results["pairs"][key] = {"cold_s": [], "warm_s": [], "dials": 0, "dial_failures": [],
                                         "control_rtt_s": [], "dial_others_pct": [], "dial_replies": [], "dial_cpu_ms": [],
                                         "up": [], "down": [], "perf_failures": []}
        # round-robin: run 1 of every pair, then run 2, ...
        for run in range(1, args.runs + 1):
            for a, b in pairs:
                key = f"{a}-{b}"
                if "error" in results["pairs"][key]:
                    continue
                log(f"run {run}: {pair_label(key)}")
                try:
                    await bench.run_once(a, b, run, results["pairs"][key])
                except PEER_ERRORS as e:  # a dialer that cannot even start: say so, go on
                    results["pairs"][key]["dial_failures"].append(f"start: {first_line(e)}")
                    log(f"  run {run} failed: {first_line(e)}")
    finally:
        await bench.close()
    if results["machine"] is None:
        results["machine"] = versions(bench)
    if args.mem_conns:
        results["memory"] = await measure_memory(args.mem_conns)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="dial runs per pair (fresh dialer each)")
    p.add_argument("--tp-runs", type=int, default=3, help="of which the first N also measure throughput")
    p.add_argument("--mb", type=float, default=20, help="perf size each way, MB (1e6 bytes)")
    p.add_argument("--pairs", default=",".join(DEFAULT_PAIRS),
                   help="comma-separated dialer-listener pairs of: " + ", ".join(KINDS))
    p.add_argument("--retries", type=int, default=3, help="fresh-dialer retries of a failed run")
    p.add_argument("--ip", default=DEFAULT_IP, help="the namespace's veth address (listeners bind to it)")
    p.add_argument("--json", help="write raw results (every run, every CPU reading) here")
    p.add_argument("--mem-conns", type=int, default=20,
                   help="memory per connection: this many in-process pairs per engine (0: skip)")
    args = p.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
