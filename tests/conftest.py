"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest

from p2prtc.host import Host
from p2prtc.protocols.echo import ECHO, handle_echo


@pytest.fixture
async def host_factory():
    """`await host_factory(listen=[...], echo=True, **Host kwargs)` -> a started p2prtc Host."""
    hosts: list[Host] = []

    async def make(listen=("/ip4/127.0.0.1/tcp/0",), echo: bool = True, **kwargs) -> Host:
        host = Host(**kwargs)
        hosts.append(host)
        if echo:
            host.set_stream_handler(ECHO, handle_echo, allow_limited=True)
        if listen:
            await host.listen(*listen)
        return host

    yield make
    for host in reversed(hosts):
        await host.close()
