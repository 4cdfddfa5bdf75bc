"""Fixtures shared by the end-to-end tests: CLI subprocesses and a namespace with UDP blocked."""

from __future__ import annotations

import subprocess

import pytest

from ..netns import lab_ip
from .webpage import Cli


@pytest.fixture
async def clis():
    """`await clis(*args, name=...)` -> a started `p2prtc ...` subprocess; all killed afterwards."""
    started: list[Cli] = []

    async def make(*args: str, name: str) -> Cli:
        cli = Cli(*args, name=name)
        started.append(cli)
        return await cli.start()

    yield make
    for cli in reversed(started):
        await cli.close()


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
