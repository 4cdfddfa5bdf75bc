"""`p2prtc lab run --peers browser` from the package alone: the browser peer's page ships in it
(src/p2prtc/lab/browser/), and a missing prerequisite is one line naming the command that
installs it, before anything is built (issue 16.7)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

from p2prtc.lab import browser_agent, browser_page

from .conftest import own_namespaces


def lab_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "p2prtc", "lab", "run", "--nat-a", "full-cone", "--nat-b",
         "full-cone", "--peers", "browser"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        stdin=subprocess.DEVNULL)


def test_the_page_ships_in_the_package():
    assert (browser_page.BUNDLE_DIR / "peer.js").stat().st_size > 100_000
    assert (browser_page.BUNDLE_DIR / "index.html").is_file()
    assert browser_agent.TURN_JS.parent == browser_page.BUNDLE_DIR
    assert browser_agent.TURN_JS.is_file()
    assert "tests.interop" not in inspect.getsource(browser_agent)
    assert browser_page.missing_prerequisite() is None  # this machine has everything


@pytest.mark.parametrize("peers", ["browser", "mixed"])
def test_no_chromium_is_one_line(lab, peers):
    proc = subprocess.run(
        [sys.executable, "-m", "p2prtc", "lab", "run", "--nat-a", "full-cone", "--nat-b",
         "full-cone", "--peers", peers],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "P2PRTC_CHROMIUM": "/nonexistent/chromium"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "/nonexistent/chromium not found" in lines[0]
    assert "apt-get install -y chromium" in lines[0]
    assert proc.stdout == ""
    assert own_namespaces() == []


def test_no_playwright_is_one_line(lab, tmp_path):
    fake = tmp_path / "playwright"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no playwright here')\n")
    proc = lab_run({"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'p2prtc[browser]'" in lines[0], proc.stderr
