"""Soak: does anything grow while the relay and the peers run for a long time? (issue 12, point 1)

    scripts/netns-run .venv/bin/python bench/soak.py            # full: ~25 min
    scripts/netns-run .venv/bin/python bench/soak.py --quick    # CI size: ~1 min
        [--reservations N --minutes T --refresh S] [--circuits M] [--webrtc K] [--browser B]
        [--phases reservations,circuits,webrtc,browser] [--json out.json]

Phases (each against a fresh `p2prtc relay` subprocess, the real CLI, limits lifted, with
`--metrics-port`):
- reservations: N clients (p2prtc Hosts in this process, one TCP connection each) hold live
  reservations for T minutes, each renewing (RESERVE again) every S seconds, with the relay's
  reservation duration set to 3 S so a missed renewal shows as a lost reservation.
- circuits: one listener holds a reservation; 8 dialers open M circuits through the relay
  (hop CONNECT, STOP, noise + yamux over the circuit, one ping) and close each.
- webrtc: one Python listener (reservation + /webrtc) in this process; K times a fresh Python
  dialer Host dials it over the relay, upgrades to direct WebRTC, pings over a data channel and
  closes; once per engine (`--engines`: aiortc, wrtc). Needs a non-loopback interface: run
  inside scripts/netns-run.
- browser: one js-libp2p page in headless Chromium (tests/interop/jspeer.py; needs
  tests/interop/js/install.sh) dials that Python listener B times through the relay's
  WebSocket, upgrades to direct WebRTC, pings and hangs up. Not in --quick.

Each phase prints a row at start (after warm-up: the first renewal round; 20 % of the circuit
cycles; `--webrtc-warmup` WebRTC cycles, 500 in the full soak, see FULL), middle and end, plus
one after everything was closed: the relay's fds and RSS and its metrics (live reservations,
circuits, connections), this process's fds, RSS and asyncio tasks, and for webrtc/browser the
live peer connections and data channels of either engine (counted with gc).
Growth from start to end beyond the goal (fds +-2, RSS +5 %) on either process, or anything
left after close (circuits, reservations, connections, data channels, tasks), is a failure:
the script says which and exits 1.

Every cycle's wait is bounded; every address is 127.0.0.1 (relay) or this namespace's own
interface (WebRTC host candidates).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from p2prtc.events import ConnectionOpened  # noqa: E402
from p2prtc.host import Host, default_transports  # noqa: E402
from p2prtc.identity import Identity  # noqa: E402
from p2prtc.multiaddr import Multiaddr  # noqa: E402
from p2prtc.netutil import ipv4_addresses  # noqa: E402
from p2prtc.protocols import relay_hop as hop  # noqa: E402
from p2prtc.protocols.relay_hop import HopMessage  # noqa: E402
from p2prtc.transports.circuit import CircuitListener  # noqa: E402

# The goal (issue 12): flat after warm-up.
FD_SLACK = 2
RSS_SLACK = 0.05
# Relay RSS also gets an absolute floor for the slack: on a ~40 MB process, 5 % is 2 MB, which
# one arena the allocator keeps around can use up without anything leaking.
RSS_SLACK_MIN_KIB = 1024
BIG = "1000000"
CONCURRENCY = 50
SETTLE_TIMEOUT = 20.0  # after closing: how long gauges may take to drop to zero
# How long the WebRTC listener may take to see that its dialers left: ICE consent (5 misses,
# 2 s apart, aiortc_compat) plus margin.
LISTENER_END_TIMEOUT = 30.0

# WebRTC warm-up: this process's RSS climbs to its high-water mark over the first ~500
# connections on both engines (native DTLS/SCTP/libwebrtc allocations and allocator arenas; no
# Python object outlives a connection, counted with gc), then stays flat (measured: +-1 % from
# 540 to 900 cycles). So the full soak measures its 300 cycles after 500.
FULL = {"reservations": 1000, "minutes": 10.0, "refresh": 30.0, "circuits": 2000, "webrtc": 300,
        "webrtc_warmup": 500, "browser": 50}
QUICK = {"reservations": 50, "minutes": 0.1, "refresh": 2.0, "circuits": 120, "webrtc": 8,
         "webrtc_warmup": 2, "browser": 5}


# ---------------------------------------------------------------------------------------------
# probes


def fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


PEER_CONNECTION_CLASSES = {"PeerConnection", "WrtcPeerConnection"}  # engine.py, engine_wrtc.py
DATA_CHANNEL_CLASSES = {"DataChannel", "WrtcDataChannel"}


def webrtc_objects() -> tuple[int, int]:
    """(live peer connections, live data channels) in this process: our engines' wrappers
    (aiortc's and wrtc's), counted with gc, so anything still referenced counts."""
    gc.collect()
    pcs = chans = 0
    for o in gc.get_objects():
        t = type(o)
        if not str(getattr(t, "__module__", "")).startswith("p2prtc.transports.webrtc."):
            continue
        if t.__name__ in PEER_CONNECTION_CLASSES:
            pcs += 1
        elif t.__name__ in DATA_CHANNEL_CLASSES:
            chans += 1
    return pcs, chans


@dataclass
class Sample:
    phase: str
    at: str
    done: int
    t: float
    relay_fds: int
    relay_rss_kib: int
    reservations: int
    circuits: int
    relay_conns: int
    fds: int
    rss_kib: int
    tasks: int
    pcs: int | None = None
    channels: int | None = None


# ---------------------------------------------------------------------------------------------
# the relay under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """`p2prtc relay` as a subprocess, every rate/count limit lifted, metrics on a local port."""

    def __init__(self, reservation_duration: float | None = None, websocket: bool = False) -> None:
        self.metrics_port = free_port()
        rate = f"{BIG}/1"
        self.argv = [str(ROOT / ".venv/bin/p2prtc"), "relay", "--port", "0",
                     "--listen-ip", "127.0.0.1", "--stun-port", "0", "--json",
                     "--metrics-port", str(self.metrics_port), "--no-circuit-limits",
                     "--max-reservations", BIG, "--max-reservations-per-peer", BIG,
                     "--max-circuits", BIG, "--max-circuits-per-peer", BIG,
                     "--reservation-rate-per-peer", rate, "--reservation-rate-per-ip", rate,
                     "--circuit-rate-per-peer", rate, "--circuit-rate-per-ip", rate,
                     "--max-connections-per-ip", BIG, "--connection-rate-per-ip", rate]
        if reservation_duration is not None:
            self.argv += ["--reservation-duration", str(reservation_duration)]
        self.websocket = websocket
        if websocket:
            self.argv += ["--websocket-port", str(free_port())]
        self.ws_addr: Multiaddr | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.addr: Multiaddr | None = None
        self._session = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT))
        async with asyncio.timeout(30):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("p2prtc relay exited before listening")
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "listening":
                    break
        tcp = [a for a in ev["addrs"] if "/tcp/" in a and "/ws" not in a]
        self.addr = Multiaddr(tcp[0])
        if self.addr.peer_id() is None:
            self.addr = self.addr.with_peer_id(ev["peer"])
        ws = [a for a in ev["addrs"] if a.endswith("/ws") or "/ws/p2p/" in a]
        if ws:
            self.ws_addr = Multiaddr(ws[0])
            if self.ws_addr.peer_id() is None:
                self.ws_addr = self.ws_addr.with_peer_id(ev["peer"])
        import aiohttp

        self._session = aiohttp.ClientSession()
        async with asyncio.timeout(10):  # the metrics server starts with the relay
            while True:
                try:
                    await self.metrics()
                    break
                except OSError:
                    await asyncio.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def metrics(self) -> dict[str, float]:
        async with self._session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            text = await r.text()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^(p2prtc_relay_\w+)(\{[^}]*\})?\s+(\S+)$", line)
            if m and not m.group(2):
                out[m.group(1)] = float(m.group(3))
        return out

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def sample(relay: Relay, phase: str, at: str, done: int, t0: float,
                 webrtc: bool = False) -> Sample:
    m = await relay.metrics()
    pcs = chans = None
    if webrtc:
        pcs, chans = webrtc_objects()
    return Sample(phase, at, done, round(time.monotonic() - t0, 1), fds(relay.pid),
                  rss_kib(relay.pid), int(m.get("p2prtc_relay_reservations_active", -1)),
                  int(m.get("p2prtc_relay_circuits_active", -1)),
                  int(m.get("p2prtc_relay_connections_active", -1)), fds(), rss_kib(),
                  len(asyncio.all_tasks()), pcs, chans)


async def settle(relay: Relay, want: dict[str, int], timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait (bounded) until the relay's gauges reach the wanted values (they fall as the relay
    notices closed connections); returns either way, the sample shows what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = await relay.metrics()
        if all(int(m.get(f"p2prtc_relay_{k}", -1)) == v for k, v in want.items()):
            return
        await asyncio.sleep(0.2)


def task_stacks(limit: int = 5) -> list[str]:
    """What this process's asyncio tasks are waiting in, most common first (for a report of
    tasks that grew)."""
    import collections

    c: collections.Counter = collections.Counter()
    for t in asyncio.all_tasks():
        frames = t.get_stack(limit=4)
        c[" > ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_code.co_name}:{f.f_lineno}"
                     for f in frames) or repr(t.get_coro())] += 1
    return [f"{n} x {where}" for where, n in c.most_common(limit)]


# How long fds_settle waits at most: libwebrtc frees a closed connection's sockets on its own
# threads; at load 10 on 2 cores that took over 8 s once (fds 18 -> 21 at the end of the quick
# soak in a full test run, flat when run alone). A real leak stays above the baseline anyway.
FDS_SETTLE_TIMEOUT = 20.0


async def fds_settle(before: int, tasks_before: int,
                     timeout: float = FDS_SETTLE_TIMEOUT) -> None:
    """Wait (bounded) until our fds and asyncio tasks are back to what they were before a batch.
    A peer connection frees its sockets a moment after it reports closed (its close() runs as a
    task), and WebRTCTransport looks at every new connection's ICE pair again PATH_SETTLE (2 s)
    after connecting, in a task that holds the peer connection until then."""
    deadline = time.monotonic() + timeout
    while (fds() > before or len(asyncio.all_tasks()) > tasks_before) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def bounded(items, fn, concurrency: int = CONCURRENCY) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(x):
        async with sem:
            try:
                await fn(x)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one(x) for x in items))
    return errors


_closing: set[asyncio.Task] = set()


async def reserve(conn) -> None:
    """One RESERVE (a new reservation, or the renewal of a live one) on conn."""
    stream = await conn.new_stream([hop.HOP])
    try:
        await hop.write_message(stream, HopMessage(type=HopMessage.RESERVE))
        reply = await hop.read_message(stream, HopMessage)
    except BaseException:
        stream.reset()
        raise
    # Do not wait for the relay's FIN (yamux close lingers): close in the background.
    t = asyncio.ensure_future(stream.close())
    _closing.add(t)
    t.add_done_callback(_closing.discard)
    if reply.type != HopMessage.STATUS or reply.status != hop.OK:
        raise RuntimeError(f"reservation refused: {hop.status_name(reply.status)}")


# ---------------------------------------------------------------------------------------------
# phases


async def phase_reservations(n: int, minutes: float, refresh: float, log) -> dict:
    relay = Relay(reservation_duration=max(3 * refresh, 10))
    await relay.start()
    clients = [Host(Identity.generate(), identify=False) for _ in range(n)]
    conns: list = [None] * n
    samples: list[Sample] = []
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        base = await sample(relay, "reservations", "before", 0, t0)

        async def first(i):
            conns[i] = await clients[i].dial(relay.addr)
            await reserve(conns[i])

        errors += await bounded(range(n), first)
        rounds = 1
        # warm-up: one renewal round before the start sample
        errors += await bounded(range(n), lambda i: reserve(conns[i]))
        rounds += 1
        samples.append(await sample(relay, "reservations", "start", rounds, t0))
        end = time.monotonic() + minutes * 60
        middle_done = False
        next_round = time.monotonic() + refresh
        while True:
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(max(0.0, min(next_round, end) - now))
            if time.monotonic() >= end:
                break
            errors += await bounded(range(n), lambda i: reserve(conns[i]))
            rounds += 1
            next_round += refresh
            if not middle_done and time.monotonic() >= end - minutes * 30:
                samples.append(await sample(relay, "reservations", "middle", rounds, t0))
                middle_done = True
        if not middle_done:
            samples.append(await sample(relay, "reservations", "middle", rounds, t0))
        samples.append(await sample(relay, "reservations", "end", rounds, t0))
        log(f"  reservations: {n} clients, {rounds} rounds, {len(errors)} errors")
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await settle(relay, {"reservations_active": 0, "connections_active": 0})
        samples.append(await sample(relay, "reservations", "closed", rounds, t0))
        return {"baseline": base, "samples": samples, "errors": errors, "n": n,
                "rounds": rounds, "expect_live": {"reservations": n}}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.stop()


async def phase_circuits(m: int, log) -> dict:
    relay = Relay()
    await relay.start()
    listener = Host(Identity.generate(), identify=False)
    dialers = [Host(Identity.generate(), identify=False) for _ in range(8)]
    samples: list[Sample] = []
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        await listener.listen_via_relay(relay.addr)
        for d in dialers:
            await d.dial(relay.addr)
        base = await sample(relay, "circuits", "before", 0, t0)
        done = 0

        target = relay.addr.encapsulate(f"/p2p-circuit/p2p/{listener.peer_id}")

        async def worker(dialer: Host, k: int) -> None:
            nonlocal done
            for _ in range(k):
                try:
                    conn = await dialer.dial(target)
                    try:
                        if not conn.transport == "circuit":
                            raise RuntimeError(f"dial went over {conn.transport}, not the relay")
                        await dialer.ping_service.ping(conn)
                    finally:
                        await conn.close()
                    done += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(e).__name__}: {e}")

        async def batch(k):
            # one worker per dialer, each cycle after the other: a dialer never has two
            # circuits to the listener at once (a dial would reuse the open one)
            shares = [k // len(dialers) + (j < k % len(dialers)) for j in range(len(dialers))]
            await asyncio.gather(*(worker(d, n) for d, n in zip(dialers, shares, strict=True)))
            await settle(relay, {"circuits_active": 0})

        warm = max(1, m // 5)
        await batch(warm)
        samples.append(await sample(relay, "circuits", "start", done, t0))
        await batch((m - warm) // 2)
        samples.append(await sample(relay, "circuits", "middle", done, t0))
        await batch(m - warm - (m - warm) // 2)
        samples.append(await sample(relay, "circuits", "end", done, t0))
        log(f"  circuits: {done}/{m} cycles, {len(errors)} errors" + (f" e.g. {errors[0]}" if errors else ""))
        await asyncio.gather(*(d.close() for d in dialers), listener.close(),
                             return_exceptions=True)
        await settle(relay, {"circuits_active": 0, "reservations_active": 0,
                             "connections_active": 0})
        samples.append(await sample(relay, "circuits", "closed", done, t0))
        return {"baseline": base, "samples": samples, "errors": errors, "n": m,
                "expect_live": {"circuits": 0}}
    finally:
        await asyncio.gather(*(d.close() for d in dialers), listener.close(),
                             return_exceptions=True)
        await relay.stop()


def lab_ip() -> str | None:
    ips = [ip for ip in ipv4_addresses() if not ip.startswith("127.")]
    return ips[0] if ips else None


async def phase_webrtc(k: int, log, engine: str, warmup: int) -> dict:
    from p2prtc.transports.webrtc.transport import WebRTCTransport

    if lab_ip() is None:
        raise SystemExit("the webrtc phase needs a non-loopback interface: run this inside "
                         "scripts/netns-run")
    relay = Relay()
    await relay.start()
    listener = Host(Identity.generate(), identify=False, transports=[
        functools.partial(WebRTCTransport, ice_servers=[], engine=engine), *default_transports()])
    samples: list[Sample] = []
    errors: list[str] = []
    inbound: list = []
    relay_peer: list = []
    listener.events.on(ConnectionOpened, lambda e: None if e.connection.remote_peer in relay_peer
                       else inbound.append(e.connection))
    t0 = time.monotonic()
    try:
        relay_peer.append(relay.addr.peer_id())
        await listener.listen(relay.addr.encapsulate("/p2p-circuit"), "/webrtc")
        await listener.listeners(CircuitListener)[0].reserved(20)
        addr = next(a for a in listener.listen_addrs if a.has("webrtc")).with_peer_id(
            listener.peer_id)
        base = await sample(relay, f"webrtc/{engine}", "before", 0, t0, webrtc=True)
        done = 0
        direct = 0

        async def cycle():
            nonlocal done, direct
            dialer = Host(Identity.generate(), identify=False, transports=[
                functools.partial(WebRTCTransport, ice_servers=[], engine=engine),
                *default_transports()])
            try:
                conn = await dialer.dial(addr)
                if conn.transport == "webrtc" and not conn.limited:
                    direct += 1
                await dialer.ping_service.ping(conn, allow_limited=False)
            finally:
                await dialer.close()
            done += 1

        async def batch(n):
            fds_before, tasks_before = fds(), len(asyncio.all_tasks())
            for _ in range(n):
                try:
                    await cycle()
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(e).__name__}: {e}")
            # The listener's side of every connection must end too. It learns that a dialer
            # left from ICE consent failing (~10 s: aiortc's connection state ignores the
            # remote's SCTP ABORT and DTLS close_notify), so wait for all of them at once.
            waiting, inbound[:] = list(inbound), []
            try:
                async with asyncio.timeout(LISTENER_END_TIMEOUT):
                    await asyncio.gather(*(c.wait_closed() for c in waiting))
            except TimeoutError:
                left = sum(not c.is_closed for c in waiting)
                errors.append(f"{left} listener-side connections still open "
                              f"{LISTENER_END_TIMEOUT:.0f} s after their dialers left")
            await settle(relay, {"circuits_active": 0})
            await fds_settle(fds_before, tasks_before)

        await batch(max(1, warmup))
        samples.append(await sample(relay, f"webrtc/{engine}", "start", done, t0, webrtc=True))
        await batch(k // 2)
        samples.append(await sample(relay, f"webrtc/{engine}", "middle", done, t0, webrtc=True))
        await batch(k - k // 2)
        samples.append(await sample(relay, f"webrtc/{engine}", "end", done, t0, webrtc=True))
        log(f"  webrtc/{engine}: {done}/{k} cycles, {direct} direct, {len(errors)} errors"
            + (f" e.g. {errors[0]}" if errors else ""))
        if samples[-1].tasks > base.tasks + 2:
            log("  tasks left: " + "; ".join(task_stacks()))
        if direct < done:
            errors.append(f"only {direct} of {done} connections were direct WebRTC")
        return {"baseline": base, "samples": samples, "errors": errors, "n": k,
                "expect_live": {"circuits": 0}}
    finally:
        await listener.close()
        await relay.stop()


async def phase_browser(k: int, log, warmup: int) -> dict:
    """K times one js-libp2p page (headless Chromium, tests/interop/jspeer.py) dials the Python
    listener over the relay's WebSocket, upgrades to direct WebRTC, pings and hangs up."""
    sys.path.insert(0, str(ROOT))
    from tests.interop.jspeer import BrowserSession

    from p2prtc.transports.webrtc.transport import WebRTCTransport

    if lab_ip() is None:
        raise SystemExit("the browser phase needs a non-loopback interface: run this inside "
                         "scripts/netns-run")
    relay = Relay(websocket=True)
    await relay.start()
    listener = Host(Identity.generate(), identify=True, transports=[
        functools.partial(WebRTCTransport, ice_servers=[]), *default_transports()])
    samples: list[Sample] = []
    errors: list[str] = []
    inbound: list = []
    listener.events.on(ConnectionOpened,
                       lambda e: None if e.connection.remote_peer == relay.addr.peer_id()
                       else inbound.append(e.connection))
    session = BrowserSession()
    t0 = time.monotonic()
    try:
        await session.start()
        page = await session.new_peer("soak")
        await page.start()
        await listener.listen(relay.ws_addr.encapsulate("/p2p-circuit"), "/webrtc")
        await listener.listeners(CircuitListener)[0].reserved(20)
        addr = next(a for a in listener.listen_addrs if a.has("webrtc") and a.has("ws")
                    ).with_peer_id(listener.peer_id)  # a browser dials the relay's WebSocket
        base = await sample(relay, "browser", "before", 0, t0, webrtc=True)
        done = direct = 0

        async def batch(n):
            nonlocal done, direct
            fds_before, tasks_before = fds(), len(asyncio.all_tasks())
            for _ in range(n):
                try:
                    info = await page.dial(str(addr))
                    if "/webrtc" in info.get("remoteAddr", "") and not info.get("limited"):
                        direct += 1
                    await page.ping(peer=str(listener.peer_id))
                    await page.hangup(peer=str(listener.peer_id))
                    done += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(e).__name__}: {str(e)[:300]}")
            waiting, inbound[:] = list(inbound), []
            try:
                async with asyncio.timeout(LISTENER_END_TIMEOUT):
                    await asyncio.gather(*(c.wait_closed() for c in waiting))
            except TimeoutError:
                left = sum(not c.is_closed for c in waiting)
                errors.append(f"{left} listener-side connections still open "
                              f"{LISTENER_END_TIMEOUT:.0f} s after the page hung up")
            await settle(relay, {"circuits_active": 0})
            await fds_settle(fds_before, tasks_before)

        await batch(max(1, warmup))
        samples.append(await sample(relay, "browser", "start", done, t0, webrtc=True))
        await batch(k // 2)
        samples.append(await sample(relay, "browser", "middle", done, t0, webrtc=True))
        await batch(k - k // 2)
        samples.append(await sample(relay, "browser", "end", done, t0, webrtc=True))
        log(f"  browser: {done}/{k} cycles, {direct} direct, {len(errors)} errors"
            + (f" e.g. {errors[0]}" if errors else ""))
        if direct < done:
            errors.append(f"only {direct} of {done} connections were direct WebRTC")
        return {"baseline": base, "samples": samples, "errors": errors, "n": k,
                "expect_live": {"circuits": 0}}
    finally:
        await session.close()
        await listener.close()
        await relay.stop()


# ---------------------------------------------------------------------------------------------
# verdict and table


def judge(name: str, res: dict) -> list[str]:
    """Why this phase failed, in words (empty: it passed)."""
    problems = [f"{name}: {len(res['errors'])} operations failed, e.g. {res['errors'][0]}"
                ] if res["errors"] else []
    by = {s.at: s for s in res["samples"]}
    start, end, closed = by["start"], by["end"], by.get("closed")
    for who, f0, f1, r0, r1 in (("relay", start.relay_fds, end.relay_fds, start.relay_rss_kib,
                                 end.relay_rss_kib),
                                ("load generator", start.fds, end.fds, start.rss_kib,
                                 end.rss_kib)):
        if f1 - f0 > FD_SLACK:  # growth; fewer is fine (libwebrtc frees some fds late)
            problems.append(f"{name}: {who} fds {f0} -> {f1} (goal +-{FD_SLACK})")
        if r1 - r0 > max(RSS_SLACK * r0, RSS_SLACK_MIN_KIB):
            problems.append(f"{name}: {who} RSS {r0} -> {r1} KiB "
                            f"(+{100 * (r1 - r0) / r0:.1f} %, goal < {100 * RSS_SLACK:.0f} %)")
    if end.tasks > start.tasks + 2:
        problems.append(f"{name}: asyncio tasks {start.tasks} -> {end.tasks}")
    if end.channels is not None and (end.channels > start.channels or end.pcs > start.pcs):
        problems.append(f"{name}: live peer connections {start.pcs} -> {end.pcs}, "
                        f"data channels {start.channels} -> {end.channels}")
    for s in res["samples"]:
        if s.at in ("start", "middle", "end"):
            for key, want in res["expect_live"].items():
                if getattr(s, key) != want:
                    problems.append(f"{name}: {key} at {s.at} = {getattr(s, key)}, expected "
                                    f"{want}")
    if closed is not None:
        for key in ("reservations", "circuits", "relay_conns"):
            if getattr(closed, key) != 0:
                problems.append(f"{name}: {key} left after closing everything: "
                                f"{getattr(closed, key)}")
        if closed.relay_fds > res["baseline"].relay_fds + FD_SLACK and name != "circuits":
            problems.append(f"{name}: relay fds after closing {closed.relay_fds}, before "
                            f"{res['baseline'].relay_fds}")
    return problems


COLUMNS = [("phase", "phase"), ("at", "at"), ("done", "done"), ("t", "t s"),
           ("relay_fds", "relay fds"), ("relay_rss_kib", "relay RSS KiB"),
           ("reservations", "reservations"), ("circuits", "circuits"),
           ("relay_conns", "relay conns"), ("fds", "our fds"), ("rss_kib", "our RSS KiB"),
           ("tasks", "tasks"), ("pcs", "peer conns"), ("channels", "data channels")]


def table(results: dict) -> str:
    rows = []
    for res in results.values():
        for s in [res["baseline"], *res["samples"]]:
            d = asdict(s)
            rows.append(["" if d[k] is None else str(d[k]) for k, _ in COLUMNS])
    head = [h for _, h in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def main_async(a) -> int:
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    results: dict = {}
    phases = a.phases.split(",")
    t0 = time.monotonic()
    if "reservations" in phases:
        log(f"reservations: {a.reservations} for {a.minutes} min, renewing every {a.refresh} s")
        results["reservations"] = await phase_reservations(a.reservations, a.minutes, a.refresh,
                                                           log)
    if "circuits" in phases:
        log(f"circuits: {a.circuits} open/close cycles")
        results["circuits"] = await phase_circuits(a.circuits, log)
    if "webrtc" in phases:
        for engine in a.engines.split(","):
            log(f"webrtc/{engine}: {a.webrtc} connect/disconnect cycles after "
                f"{a.webrtc_warmup} to warm up")
            results[f"webrtc/{engine}"] = await phase_webrtc(a.webrtc, log, engine,
                                                             a.webrtc_warmup)
    if "browser" in phases:
        log(f"browser: {a.browser} js-libp2p (Chromium) <-> Python connect/disconnect cycles")
        results["browser"] = await phase_browser(a.browser, log, a.webrtc_warmup // 10)
    if _closing:
        await asyncio.wait(list(_closing), timeout=15)
    print(table(results))
    problems = [p for name, res in results.items() for p in judge(name, res)]
    print(f"\n{'FAIL' if problems else 'OK'}: {', '.join(phases)} in "
          f"{time.monotonic() - t0:.0f} s" + ("" if problems else
                                               f" (flat: fds +-{FD_SLACK}, RSS < "
                                               f"{100 * RSS_SLACK:.0f} %, nothing left)"))
    for p in problems:
        print(f"  - {p}")
    if a.json:
        Path(a.json).write_text(json.dumps(
            {k: {**v, "baseline": asdict(v["baseline"]),
                 "samples": [asdict(s) for s in v["samples"]]} for k, v in results.items()},
            indent=1))
    return 1 if problems else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI size (under a minute)")
    p.add_argument("--reservations", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--refresh", type=float, help="seconds between renewals")
    p.add_argument("--circuits", type=int)
    p.add_argument("--webrtc", type=int)
    p.add_argument("--webrtc-warmup", type=int,
                   help="WebRTC cycles before the start sample (the browser phase: a tenth)")
    p.add_argument("--browser", type=int, help="browser<->Python cycles (phase 'browser')")
    p.add_argument("--engines", default="aiortc,wrtc",
                   help="the Python WebRTC engines the webrtc phase runs on, one after the "
                        "other (default: both; the browser phase's listener uses the default)")
    p.add_argument("--phases", help="comma-separated; default: reservations,circuits,webrtc"
                   ",browser (--quick: without browser, which needs ~40 s for Chromium and the "
                   "listener's ICE consent timeouts)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    sizes = QUICK if a.quick else FULL
    if a.phases is None:
        a.phases = "reservations,circuits,webrtc" + ("" if a.quick else ",browser")
    for k, v in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main())
