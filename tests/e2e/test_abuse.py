"""Abuse under load (issue 12.3) through bench/abuse.py against `p2prtc relay` as a subprocess:
honest peers reserve and dial through the relay while abusive connections hold half-open TCP,
stall Noise, drip WebSocket upgrade headers (slowloris), hold ping streams they never read,
and flood the STUN/TURN port. Every honest operation must succeed, quickly: p99 under the goal,
or within 2x of a control relay nobody abuses, measured at the same moment (the machine is
shared; its load shows in both).

CI runs a short version (10 honest peers, 60 abusive connections of each kind: 300, ~40 s);
the full one (50 honest peers, 2,000 abusive connections, 60 s per phase) is marked `soak`:

    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_abuse.py -m soak -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, *args: str, timeout: float) -> list[dict]:
    out = tmp_path / "abuse.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "abuse.py"), *args, "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"abuse bench failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    print(proc.stdout)
    return json.loads(out.read_text())["results"]


def check(results: list[dict], per_kind: int, p99_ms: float) -> None:
    abuse = next(r for r in results if r["phase"] == "honest + abuse" and r["relay"] == "abused")
    # every honest operation succeeds, on the abused relay and on the control relay beside it
    for r in results:
        assert r["ops"] > 0 and r["success_pct"] == 100.0, (r["phase"], r["relay"], r["errors"])
    # fast: under the goal, or, when the shared machine is too busy for that (the control
    # relay nobody abuses shows it, measured at the same moment), within 2x of the control
    for r in results:
        if r["relay"] != "abused":
            continue
        control = next(c for c in results if c["phase"] == r["phase"] and c["relay"] == "control")
        assert r["p99_ms"] < max(p99_ms, 2 * control["p99_ms"]), (r, control["p99_ms"])
    held = abuse["abusive_held"]
    # the abuse was real: every kind had connections open at the end, the relay held some
    # handshakes and refused many more (the per-IP budget)
    assert all(held.get(k, 0) > 0 for k in ("half-open", "noise-stall", "slowloris",
                                              "stream-hog", "stun-flood")), held
    assert held["stun-flood"] == per_kind and abuse["flood_sent"] > 0, abuse
    assert abuse["relay_pending"] and abuse["relay_pending"] > 0, abuse
    assert any("connections handshaking" in k for k in abuse["refusals"]), abuse["refusals"]


def test_abuse_short(tmp_path: Path) -> None:
    # p99 under 2 s here (the goal, 1 s, is the soak's): CI machines are shared and busy.
    results = run_bench(tmp_path, "--honest", "10", "--control", "5", "--per-kind", "60",
                        "--abuse-ips", "8",
                        "--duration", "8", "--ramp", "4", timeout=120)
    check(results, 60, p99_ms=2000)


@pytest.mark.soak
def test_abuse_full(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "--honest", "50", "--per-kind", "400", "--abuse-ips", "32",
                        "--duration", "60", timeout=600)
    check(results, 400, p99_ms=1000)
