"""Issue 10, point 6: dialers that come and go must not use up a listener's circuits on our relay.

One `p2prtc relay`, one `p2prtc listen`, then DIALERS `p2prtc dial` processes one after another:
each reaches the listener over direct WebRTC, sends a chat line the listener receives, and
leaves (end of stdin, `/quit`, or SIGKILL). The relay allows 4 circuits per peer (rust's
default), so the fifth dial failed with RESOURCE_LIMIT_EXCEEDED while the relay held the slots
of dialers long gone.
Every one must connect, the relay must end each dialer's circuit as soon as the dialer exits
(the listener sees its relayed connection close), and its metrics must count no circuit left.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time

from ..netns import lab_ip
from .webpage import Cli, free_port

DIALERS = 30
# How each dialer leaves, in turn.
LEAVE = ("end of input", "/quit", "killed")
# Each step waits on one event; a dial to direct WebRTC takes ~0.5 s here (process start included).
STEP_TIMEOUT = 20.0
CLOSED_LINE = re.compile(r"circuit (\S+) -> (\S+) closed: (.+) \(\d+ B up")


async def relay_metrics(ip: str, port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 10)).decode()
    finally:
        writer.close()
    assert body.startswith("HTTP/1.") and " 200 " in body.splitlines()[0], body[:200]
    values = {}
    for line in body.split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


async def relayed_connection_ended(listener: Cli, peer: str) -> dict:
    """The listener's event for the end of its relayed connection to `peer`: `relayed-closed`
    once a direct connection replaced it, else `disconnected` with a relay transport (older
    builds called it "circuit")."""
    waits = [asyncio.ensure_future(listener.wait_event("relayed-closed", STEP_TIMEOUT, peer=peer))]
    waits += [asyncio.ensure_future(listener.wait_event("disconnected", STEP_TIMEOUT, peer=peer,
                                                        transport=kind))
              for kind in ("relay", "circuit")]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        found = [w.result() for w in done if w.exception() is None]
        if not found:
            raise next(iter(done)).exception()
        return found[0]
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def test_thirty_dialers_in_a_row_through_our_relay():
    ip = lab_ip()
    metrics_port = free_port(ip)
    relay = await Cli("relay", "--port", str(free_port(ip)), "--listen-ip", ip, "--stun-port", "0",
                      "--metrics-port", str(metrics_port), "--json", "-v", name="relay").start()
    listener: Cli | None = None
    try:
        relay_addr = (await relay.wait_event("listening"))["addrs"][0]
        before = await relay_metrics(ip, metrics_port)
        assert before["p2prtc_relay_circuits_active"] == 0
        listener = await Cli("listen", relay_addr, "--json", "--stun", "none",
                             name="listener").start()
        me = (await listener.wait_event("peer"))["peer"]
        target = next(a for a in (await listener.wait_event("listening"))["addrs"]
                      if a.endswith(f"/p2p-circuit/webrtc/p2p/{me}"))

        t0 = time.perf_counter()
        dial_ms = []
        for i in range(DIALERS):
            dialer = await Cli("dial", target, "--json", "--stun", "none", "--quit-on-eof",
                               name=f"dialer {i}").start()
            try:
                peer = (await dialer.wait_event("peer", STEP_TIMEOUT))["peer"]
                conn = await dialer.wait_event("connected", STEP_TIMEOUT, transport="webrtc")
                assert conn["direct"] is True and conn["peer"] == me, conn
                dial_ms.append(conn["ms"])
                text = f"hello {i} from {peer}"
                await dialer.send_line(text)
                await listener.wait_event("message", STEP_TIMEOUT, peer=peer, text=text)
                how = LEAVE[i % len(LEAVE)]
                if how == "/quit":
                    await dialer.send_line("/quit")
                elif how == "end of input":
                    dialer.proc.stdin.close()  # as a script's pipe ends
                else:
                    dialer.proc.kill()  # a crash: nothing is closed, the kernel ends the TCP
                rc = await asyncio.wait_for(dialer.proc.wait(), STEP_TIMEOUT)
                assert rc == (-signal.SIGKILL if how == "killed" else 0), dialer.describe()
                # The relay ends the gone dialer's circuit at once: the listener's relayed
                # connection to it closes (and the relay freed the slot before saying so).
                await relayed_connection_ended(listener, peer)
            finally:
                await dialer.close()
        took = time.perf_counter() - t0

        after = await relay_metrics(ip, metrics_port)
        closed = [m for m in map(CLOSED_LINE.search, relay.stderr_text().splitlines()) if m]
        print(f"\n{DIALERS} dials in a row in {took:.1f} s; dial to direct WebRTC median "
              f"{sorted(dial_ms)[len(dial_ms) // 2]:.0f} ms; circuits_active before "
              f"{before['p2prtc_relay_circuits_active']:.0f}, after "
              f"{after['p2prtc_relay_circuits_active']:.0f}; "
              f"close reasons {sorted({m[3] for m in closed})}")
        assert after["p2prtc_relay_circuits_active"] == 0, after
        assert after["p2prtc_relay_circuits_total"] == DIALERS, after
        assert len(closed) == DIALERS and all(m[2] == me for m in closed), relay.describe()
        # The listener kept its one reservation throughout.
        assert after["p2prtc_relay_reservations_active"] == 1, after
        assert listener.proc.returncode is None, listener.describe()
    finally:
        if listener is not None:
            await listener.close()
        await relay.close()
