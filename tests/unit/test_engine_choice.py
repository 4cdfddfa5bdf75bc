"""Which WebRTC engine runs (engine_base): the argument, else $P2PRTC_ENGINE, else auto (wrtc when
it imports and passes its self-check, else aiortc); both engines implement the interface; the CLI
says which engine at start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from p2prtc.transports.webrtc import engine_base
from p2prtc.transports.webrtc.engine_base import (DataChannel, EngineUnavailable, PeerConnection,
                                                  make_peer_connection, resolve_engine)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(engine_base.ENV_VAR, raising=False)


def test_wrtc_works_here():
    """CI installs wrtc ([test] extra): its self-check must pass, or half the suite is untested."""
    assert engine_base.wrtc_problem() is None


def test_argument_then_environment_then_auto(no_env, monkeypatch):
    assert resolve_engine() == "wrtc"  # auto, and wrtc works here
    assert resolve_engine("auto") == "wrtc"
    monkeypatch.setenv(engine_base.ENV_VAR, "aiortc")
    assert resolve_engine() == "aiortc"
    assert resolve_engine("wrtc") == "wrtc"  # the argument wins
    monkeypatch.setenv(engine_base.ENV_VAR, "WRTC ")
    assert resolve_engine() == "wrtc"
    with pytest.raises(ValueError, match="unknown WebRTC engine 'libdatachannel'"):
        resolve_engine("libdatachannel")


def test_auto_falls_back_to_aiortc_when_wrtc_cannot_run(no_env, monkeypatch):
    monkeypatch.setattr(engine_base, "wrtc_problem", lambda: "not installed (test)")
    assert resolve_engine() == "aiortc"
    assert "aiortc" in engine_base.describe_engine() and "not installed (test)" in \
        engine_base.describe_engine()
    with pytest.raises(EngineUnavailable, match="not installed"):
        resolve_engine("wrtc")


@pytest.mark.parametrize("name", engine_base.ENGINES)
async def test_each_engine_implements_the_interface(name):
    pc = make_peer_connection([], engine=name)
    try:
        assert isinstance(pc, PeerConnection)
        assert type(pc).__module__.endswith("engine" if name == "aiortc" else "engine_wrtc")
        ch = pc.create_channel("x")
        assert isinstance(ch, DataChannel) and ch.ready_state == "connecting"
        sdp = await pc.create_offer()
        assert "m=application" in sdp and "a=fingerprint:sha-256" in sdp
        assert pc.connection_state == "new"
    finally:
        await pc.close()
    assert pc.connection_state == "closed"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != engine_base.ENV_VAR} | env
    # a relay nobody listens on: the command says its engine, then fails to reach it
    relay = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    return subprocess.run([sys.executable, "-m", "p2prtc", "listen", relay, "--json",
                           "--quit-on-eof", *args], env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, env, says", [
    (["--engine", "aiortc"], {}, "WebRTC engine: aiortc"),
    (["--engine", "wrtc"], {engine_base.ENV_VAR: "aiortc"}, "WebRTC engine: wrtc (libwebrtc"),
    ([], {engine_base.ENV_VAR: "aiortc"}, "WebRTC engine: aiortc"),
    ([], {}, "WebRTC engine: wrtc (libwebrtc"),
])
def test_cli_says_which_engine_at_start(args, env, says):
    r = cli(*args, env=env)
    assert r.stderr.splitlines()[0].startswith(says), r.stderr


def test_cli_refuses_an_unknown_engine():
    r = cli("--engine", "pion", env={})
    assert r.returncode == 2 and "--engine" in r.stderr
    r = cli(env={engine_base.ENV_VAR: "pion"})
    assert r.returncode != 0 and "unknown WebRTC engine 'pion'" in r.stderr, r.stderr


def test_event_loop_not_needed_for_the_choice(no_env):
    """The CLI resolves the engine before its event loop runs."""
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert resolve_engine() in engine_base.ENGINES
