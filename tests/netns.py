"""The network the tests run in.

scripts/test runs pytest inside its own network namespace with a veth pair, so WebRTC peers have a
non-loopback interface to gather candidates on (aiortc never offers 127.0.0.1; Chromium gathers
nothing on a loopback-only host) while nothing can leave the machine.
"""

from __future__ import annotations

import pytest

from p2prtc.netutil import ipv4_addresses


def lab_ip() -> str:
    """A non-loopback IPv4 address of the current namespace, for WebRTC tests."""
    ips = [ip for ip in ipv4_addresses() if not ip.startswith("127.")]
    if not ips:
        pytest.fail("WebRTC tests need a non-loopback interface: run them through scripts/test "
                    "(it starts pytest in a network namespace with a veth pair)", pytrace=False)
    return ips[0]
