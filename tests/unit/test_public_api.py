"""The public API surface (`from p2prtc import ...`): the names, their docstrings, the API
reference built from them (scripts/build-docs, pdoc, no warnings), and an import that stays
light (the CLI's relay does not load the WebRTC stack)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import p2prtc
from p2prtc import api_events

REPO = Path(__file__).resolve().parents[2]


def _public_members(obj: type) -> list[tuple[str, object]]:
    out = []
    for name, member in vars(obj).items():
        if name.startswith("_") or name == "name":
            continue
        if callable(member) or isinstance(member, property):
            out.append((name, member))
    return out


def test_every_public_name_has_a_docstring():
    missing = []
    for name in p2prtc.__all__:
        obj = getattr(p2prtc, name)
        if name in ("__version__", "Handler"):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj) and obj.__module__.startswith("p2prtc.") and \
                obj.__module__ in ("p2prtc.node", "p2prtc.api_events"):
            for mname, member in _public_members(obj):
                fn = member.fget if isinstance(member, property) else member
                if not inspect.getdoc(fn):
                    missing.append(f"{name}.{mname}")
    assert missing == []


def test_every_json_event_has_a_type():
    # the --json events of listen/dial (DEVELOPERS.md)
    documented = ("peer dialing listening relay-connected reservation relayed connected message "
                  "sent undelivered file-incoming file file-sent disconnected relayed-closed "
                  "path warning error nat nat-peer published found reachability relay-lost "
                  "relay-added relay-released relays-needed").split()
    assert sorted(api_events.EVENT_TYPES) == sorted(documented)
    for name, cls in api_events.EVENT_TYPES.items():
        assert cls.name == name and issubclass(cls, api_events.Event)


def test_import_is_light():
    code = ("import sys, p2prtc; print(p2prtc.__version__); "
            "print(any(m.startswith(('aiortc', 'aioice', 'p2prtc.host')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [p2prtc.__version__, "False"]


def test_version_matches_the_project():
    text = (REPO / "pyproject.toml").read_text()
    assert f'version = "{p2prtc.__version__}"' in text
    out = subprocess.run([sys.executable, "-m", "p2prtc", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"p2prtc {p2prtc.__version__}"


def test_api_reference_builds_without_warnings(tmp_path):
    proc = subprocess.run([str(REPO / "scripts" / "build-docs"), str(tmp_path / "docs")],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "docs" / "p2prtc.html").read_text()
    for name in ("Node", "Connection", "Stream", "NoDirectPath", "open_stream", "allow_relayed"):
        assert name in page
    assert "Connected" in (tmp_path / "docs" / "p2prtc" / "api_events.html").read_text()
    assert not (tmp_path / "docs" / "p2prtc" / "host.html").exists()  # internals stay out
