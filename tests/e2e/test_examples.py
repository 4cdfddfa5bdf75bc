"""The programs in examples/ as a user runs them: `python examples/X.py <relay address> ...`
against a real `p2prtc relay` subprocess, in the test namespace.

With P2PRTC_PYTHON set (scripts/check-wheel), the relay and the examples run on that
interpreter: an installed wheel in a fresh venv, not this checkout.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ..netns import lab_ip
from .webpage import PYTHON, REPO, Cli, free_port

EXAMPLES = REPO / "examples"


def example(*args: str, name: str) -> Cli:
    """`python examples/<args>` as a Cli (stdout lines, stderr log, stdin pipe)."""
    proc = Cli(name=name)
    proc.argv = [PYTHON, str(EXAMPLES / args[0]), *args[1:]]
    return proc


@pytest.fixture
async def relay():
    """`p2prtc relay` on the namespace's address with its STUN server on the default port 3478,
    so that the examples need nothing but the relay's address."""
    ip = lab_ip()
    proc = await Cli("relay", "--port", str(free_port(ip)), "--listen-ip", ip, "--json",
                     name="relay").start()
    ev = await proc.wait_event("listening")
    yield ev["addrs"][0]
    assert await proc.interrupt() == 0, proc.describe()


async def test_uses_the_interpreter_asked_for():
    """Under scripts/check-wheel the package comes from the wheel's venv, not from src/."""
    proc = Cli(name="where")
    proc.argv = [PYTHON, "-c", "import p2prtc; print(p2prtc.__file__)"]
    await proc.start()
    line = (await proc.wait_line(r"__init__\.py$")).string
    if "P2PRTC_PYTHON" in os.environ:
        assert str(REPO / "src") not in line and "site-packages" in line, line
    else:
        assert line == str(REPO / "src" / "p2prtc" / "__init__.py")
    await proc.close()


async def test_chat(relay):
    listener = await example("chat.py", relay, name="chat listener").start()
    dialer = None
    try:
        addr = (await listener.wait_line(r"^address: (/\S+)")).group(1)
        assert "/p2p-circuit/webrtc/p2p/" in addr and addr.startswith(relay)
        dialer = await example("chat.py", relay, addr, name="chat dialer").start()
        await dialer.wait_line(r"^connected to \S+ \(direct\)$")
        await listener.wait_line(r"^connected to \S+ \(direct\)$")
        await dialer.send_line("hello from the dialer")
        await listener.wait_line(r"^<\S{6}> hello from the dialer$")
        await listener.send_line("hi back")
        await dialer.wait_line(r"^<\S{6}> hi back$")
        # the dialer leaves (end of stdin): both see the other go and exit 0
        dialer.proc.stdin.close()
        await listener.wait_line("^the peer left$")
        await dialer.wait_line("^the peer left$")
        assert await listener.proc.wait() == 0, listener.describe()
        assert await dialer.proc.wait() == 0, dialer.describe()
    finally:
        await listener.close()
        if dialer is not None:
            await dialer.close()


async def test_file_drop_with_progress(relay, tmp_path):
    src = tmp_path / "photo.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    receiver = await example("filedrop.py", "receive", relay, str(inbox), name="receiver").start()
    sender = None
    try:
        addr = (await receiver.wait_line(r"^address: (/\S+)")).group(1)
        sender = await example("filedrop.py", "send", addr, str(src), name="sender").start()
        await sender.wait_line(r"^connected \(direct\)$")
        await sender.wait_line(rf"^delivered photo.bin: {src.stat().st_size} bytes, "
                               rf"sha256 {digest} verified$", timeout=60)
        await receiver.wait_line(rf"^saved .*photo.bin \({src.stat().st_size} bytes, "
                                 rf"sha256 {digest}\)$")
        assert await sender.proc.wait() == 0, sender.describe()
        assert await receiver.proc.wait() == 0, receiver.describe()
        for who, verb in ((sender, "sent"), (receiver, "received")):
            steps = [int(line.split()[1].rstrip("%")) for line in who.lines
                     if line.startswith(f"{verb} ")]
            assert steps == sorted(steps) and steps[-1] == 100 and len(steps) >= 5, who.lines
        assert (inbox / "photo.bin").read_bytes() == src.read_bytes()
    finally:
        await receiver.close()
        if sender is not None:
            await sender.close()


async def test_request_response(relay):
    server = await example("rpc.py", "serve", relay, name="rpc server").start()
    try:
        addr = (await server.wait_line(r"^address: (/\S+)")).group(1)
        for args, want in ((("add", "2", "3.5"), "5.5"), (("upper", "hello", "world"),
                                                          "HELLO WORLD")):
            client = await example("rpc.py", "call", addr, *args, name="rpc client").start()
            await client.wait_line(rf"^{want}$")
            assert await client.proc.wait() == 0, client.describe()
            await server.wait_line(rf"called {args[0]}")
        client = await example("rpc.py", "call", addr, "whoami", name="rpc client").start()
        caller = (await client.wait_line(r"^(12D3Koo\S+)$")).group(1)
        assert await client.proc.wait() == 0
        client = await example("rpc.py", "call", addr, "nosuch", name="rpc client").start()
        assert await client.proc.wait() == 1
        assert "no method 'nosuch'" in client.stderr_text()
        assert caller != addr.rsplit("/", 1)[1]
        assert await server.interrupt() == 0, server.describe()
    finally:
        await server.close()
