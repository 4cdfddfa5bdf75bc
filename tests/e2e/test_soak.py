"""bench/soak.py as CI runs it (`--quick`: the relay holding 50 renewed reservations, 120
circuit open/close cycles, 2 + 8 Python<->Python WebRTC connect/disconnect cycles on each
engine; about a minute) and the full soak of issue 12, with 50 browser<->Python cycles too
(marked `soak`: not run by default, see pyproject's addopts):

    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_soak.py -m soak -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..netns import lab_ip

ROOT = Path(__file__).resolve().parents[2]


def run_soak(tmp_path, *args: str, timeout: float) -> dict:
    lab_ip()  # the webrtc phase needs the test namespace's interface
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), *args, "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"soak failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "OK:" in proc.stdout
    return json.loads(out.read_text())


def check(results: dict, sizes: dict, warmup: dict) -> None:
    assert set(results) == set(sizes)
    for res in results.values():
        assert not res["errors"], res["errors"][:3]
        ats = [s["at"] for s in res["samples"]]
        assert ats[:3] == ["start", "middle", "end"], ats
    live = results["reservations"]["samples"]
    assert all(s["reservations"] == sizes["reservations"] for s in live[:3])
    assert live[-1]["at"] == "closed" and live[-1]["reservations"] == 0
    assert results["circuits"]["samples"][2]["done"] == sizes["circuits"]
    for name in {"webrtc/aiortc", "webrtc/wrtc", "browser"} & set(sizes):
        end = results[name]["samples"][2]
        assert end["done"] == warmup[name] + sizes[name]
        assert end["pcs"] == 0 and end["channels"] == 0


def test_soak_quick(tmp_path):
    check(run_soak(tmp_path, "--quick", timeout=240),
          {"reservations": 50, "circuits": 120, "webrtc/aiortc": 8, "webrtc/wrtc": 8},
          {"webrtc/aiortc": 2, "webrtc/wrtc": 2})


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_full(tmp_path, js_installed):
    check(run_soak(tmp_path, timeout=3500),
          {"reservations": 1000, "circuits": 2000, "webrtc/aiortc": 300, "webrtc/wrtc": 300,
           "browser": 50},
          {"webrtc/aiortc": 500, "webrtc/wrtc": 500, "browser": 50})
