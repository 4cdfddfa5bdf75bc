"""Fixtures shared by the end-to-end tests: CLI subprocesses and a namespace with UDP blocked."""

from __future__ import annotations

import os
import subprocess

import pytest

from p2prtc.transports.webrtc.engine_base import ENV_VAR as ENGINE_ENV

from ..netns import lab_ip
from .webpage import Cli

# Commands that make WebRTC connections and print "WebRTC engine: <name> ..." on stderr at start.
WEBRTC_COMMANDS = ("listen", "dial", "demo")


@pytest.fixture
async def clis(request):
    """`await clis(*args, name=...)` -> a started `p2prtc ...` subprocess; all killed afterwards.
    Under the `engine` fixture, each listen/dial/demo must have said it ran that engine."""
    started: list[tuple[Cli, str]] = []  # and the engine it was started with

    async def make(*args: str, name: str) -> Cli:
        cli = Cli(*args, name=name)
        started.append((cli, os.environ.get(ENGINE_ENV, "")))
        return await cli.start()

    yield make
    for cli, _ in reversed(started):
        await cli.close()
    if "engine" in request.fixturenames:
        for cli, engine in started:
            check_engine_line(cli, engine)


def check_engine_line(cli: Cli, engine: str) -> None:
    """A listen/dial/demo command said it ran `engine` (its first stderr line; the `engine`
    fixture sets $P2PRTC_ENGINE for the commands a test starts)."""
    command = cli.argv[cli.argv.index("p2prtc") + 1]
    if command in WEBRTC_COMMANDS:
        assert f"WebRTC engine: {engine}" in cli.stderr_text(), \
            f"{cli.name} did not run the {engine} engine; {cli.describe()}"


@pytest.fixture
def udp_blocked():
    """Drop every UDP datagram to this namespace's veth address: ICE cannot work, the relay (TCP)
    still does. (Only inside the test namespace made by scripts/netns-run.)"""
    rule = ["-d", lab_ip(), "-p", "udp", "-j", "DROP"]
    subprocess.run(["iptables", "-I", "INPUT", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", "INPUT", *rule], check=False)
