"""Table of a before/after comparison made with bench/before_after.sh (issue 16).

    .venv/bin/python bench/before_after_table.py OUTDIR     # OUTDIR/before1, after1, before2, ...

Per metric: the median over the before rounds' samples, the same for after, their ratio
(after / before) and the noise = the relative spread between the before rounds' own medians
(|b1 - b2| / mean). A metric is flagged WORSE when it moved the bad way by more than that noise
and by more than 10 %. CPU figures are per operation or per MB (comparable across load); rates
are printed but depend on what else ran at that moment.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Iterator

Samples = list[float]


def _load(d: Path, name: str) -> dict | None:
    p = d / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def relay(d: dict) -> Iterator[tuple[str, str, bool, Samples]]:
    r = d["relays"]["p2prtc"]
    for ph, unit in (("reservations", "reservation"), ("circuits", "circuit")):
        runs = r.get(ph, {}).get("runs", [])
        yield f"relay: {ph}/s", "/s", True, [x["per_s"] for x in runs]
        yield f"relay: relay CPU ms per {unit}", "ms", False, [x["relay_cpu_ms_per_op"] for x in runs]
        yield (f"relay: load generator CPU ms per {unit}", "ms", False,
               [x["loadgen_cpu_ms_per_op"] for x in runs])
    tp = r.get("throughput", {}).get("runs", [])
    mbs = [m for x in tp for m in x["mb_s"]]
    yield "relay: relayed echo MB/s", "MB/s", True, mbs
    yield ("relay: relay CPU-s per GB forwarded", "s", False,
           [v for x in tp for v in x["relay_cpu_s_per_gb"]])
    # endpoint (testpeer dialer + listener) CPU ms per MB echoed (one direction)
    yield ("relay: endpoints CPU ms per MB echoed", "ms", False,
           [10 * (a + b) / m for x in tp for a, b, m in
            zip(x["dialer_cpu_pct"], x["listener_cpu_pct"], x["mb_s"])])
    mem = r.get("memory")
    if mem:
        yield "relay: idle RSS MiB", "MiB", False, [mem["idle_kib"] / 1024]
        yield "relay: KiB per live reservation", "KiB", False, [mem["per_reservation_kib"]]


def webrtc(d: dict) -> Iterator[tuple[str, str, bool, Samples]]:
    names = {"py-py": "aiortc", "pyw-pyw": "wrtc"}
    for pair, p in d["pairs"].items():
        n = names.get(pair, pair)
        yield f"webrtc {n}: dial to direct, cold ms", "ms", False, [1000 * s for s in p["cold_s"]]
        yield f"webrtc {n}: dial to direct, warm ms", "ms", False, [1000 * s for s in p["warm_s"]]
        for way in ("up", "down"):
            runs = p.get(way, [])
            yield f"webrtc {n}: 20 MB {way} MB/s", "MB/s", True, [x["mb_s"] for x in runs]
            for role in ("dialer", "listener"):
                yield (f"webrtc {n}: 20 MB {way}, {role} CPU ms per MB", "ms", False,
                       [10 * x["pct"][role] / x["mb_s"] for x in runs])
    for eng, m in (d.get("memory") or {}).items():
        yield f"webrtc {eng}: KiB per peer connection", "KiB", False, [m["kib_per_pc"]]
        yield f"webrtc {eng}: 20 in-process pairs connect, s", "s", False, [m["setup_s"]]


def seed(d: dict) -> Iterator[tuple[str, str, bool, Samples]]:
    for relay_key, conds in d["python"].items():
        for cond, c in conds.items():
            k = f"seed {relay_key}/{cond}"
            yield f"{k}: dial to direct ms", "ms", False, [1000 * s for s in c["dial_s"]]
            for role in ("dialer", "listener", "relay"):
                yield f"{k}: {role} CPU ms per dial", "ms", False, c["cpu_ms"][role]


def turn(d: dict) -> Iterator[tuple[str, str, bool, Samples]]:
    car = d.get("cpu_at_rate", {})
    for way, runs in car.get("p2prtc", {}).items():
        ours = [x["server_ms_per_mb"] for x in runs]
        yield f"turn {way} @30 MB/s: relay CPU ms per MB", "ms", False, ours
        cot = [x["server_ms_per_mb"] for x in car.get("coturn", {}).get(way, [])]
        if cot:
            yield (f"turn {way} @30 MB/s: relay CPU per MB / coturn's (same run)", "x", False,
                   [statistics.median(ours) / statistics.median(cot)])
    for way, steps in d.get("throughput", {}).get("p2prtc", {}).items():
        ok = [s["mbps"] for s in steps if s["loss"] <= 0.01]
        yield f"turn {way}: best sustained MB/s (<= 1% loss)", "MB/s", True, [max(ok)] if ok else []
    mem = d.get("memory", {}).get("p2prtc")
    if mem:
        yield "turn: KiB per allocation", "KiB", False, [mem["kib_each"]]
    for mode, a in d.get("allocations", {}).get("p2prtc", {}).items():
        yield f"turn allocations {mode}: relay CPU ms each", "ms", False, [a["server_ms_each"]]
        yield f"turn allocations {mode}: cycles/s", "/s", True, [a["per_s"]]


BENCHES: dict[str, Callable[[dict], Iterator[tuple[str, str, bool, Samples]]]] = {
    "relay": relay, "webrtc": webrtc, "seed": seed, "turn": turn}


def collect(d: Path) -> dict[str, tuple[bool, Samples]]:
    out: dict[str, tuple[bool, Samples]] = {}
    for name, fn in BENCHES.items():
        j = _load(d, name)
        if j is None:
            continue
        for metric, _unit, higher, samples in fn(j):
            out[metric] = (higher, [s for s in samples if s is not None])
    return out


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def main() -> int:
    root = Path(sys.argv[1])
    befores = sorted(root.glob("before*"))
    afters = sorted(root.glob("after*"))
    B = [collect(d) for d in befores]
    A = [collect(d) for d in afters]
    commits = {d.name: (d / "commit").read_text().strip() for d in befores + afters
               if (d / "commit").exists()}
    print(f"rounds: {', '.join(f'{k} {v}' for k, v in commits.items())}\n")
    print("| metric | better | before median | after median | after / before | "
          "noise (before rounds) | before rounds | after rounds | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    metrics = list(dict.fromkeys(m for run in B + A for m in run))
    for m in metrics:
        higher = next(run[m][0] for run in B + A if m in run)
        bs = [run[m][1] for run in B if m in run and run[m][1]]
        as_ = [run[m][1] for run in A if m in run and run[m][1]]
        if not bs or not as_:
            print(f"| {m} | | {'-' if not bs else ''} | {'-' if not as_ else ''} | | | | | missing |")
            continue
        bmed = statistics.median([x for s in bs for x in s])
        amed = statistics.median([x for s in as_ for x in s])
        bround = [statistics.median(s) for s in bs]
        around = [statistics.median(s) for s in as_]
        noise = (abs(bround[0] - bround[-1]) / statistics.mean(bround)
                 if len(bround) > 1 and statistics.mean(bround) else 0.0)
        ratio = amed / bmed if bmed else float("nan")
        worse = (ratio < 1 - max(noise, 0.10)) if higher else (ratio > 1 + max(noise, 0.10))
        better = (ratio > 1 + max(noise, 0.10)) if higher else (ratio < 1 - max(noise, 0.10))
        verdict = "**WORSE**" if worse else "better" if better else "same (within noise)"
        print(f"| {m} | {'higher' if higher else 'lower'} | {fmt(bmed)} | {fmt(amed)} | "
              f"{ratio:.2f}x | {100 * noise:.0f}% | {' / '.join(fmt(x) for x in bround)} | "
              f"{' / '.join(fmt(x) for x in around)} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
