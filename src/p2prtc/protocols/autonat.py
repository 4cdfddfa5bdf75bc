"""AutoNAT v2 on a `Network` (`/libp2p/autonat/2/dial-request`, `/libp2p/autonat/2/dial-back`):
the asyncio adapter of `autonat_core`.

`AutoNATService(network, server=ServerConfig(...))` serves dial requests (the relay does by
default) and always answers dial-backs, so `check(peer, addrs)` can ask a server about our
addresses and `probe()` asks every connected server about our listen addresses and returns a
`Reachability`. The server dials back on a new connection (never the requester's existing one),
authenticated to the requester's peer id, and closes it after the nonce was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import P2PError, ProtocolError
from ..multiaddr import Multiaddr
from ..streams import Stream
from . import autonat_core as core
from .autonat_core import (DIAL_BACK, DIAL_REQUEST, CheckResult, Reachability, RateLimiter,
                           ServerPolicy)
from .reachability_core import (NEW_ADDRS_PROBE_DELAY, PROBE_TIMEOUT, REFRESH_INTERVAL,
                                SERVER_THROTTLE, Backoff, Confirmed, ReachabilityTracker,
                                ServerPicker)

if TYPE_CHECKING:
    from ..connection import Connection
    from ..events import Identified
    from ..identity import PeerId
    from ..network import Network

log = logging.getLogger(__name__)

# go-libp2p autonatv2 (autonat.go): streamTimeout, dialBackDialTimeout, dialBackStreamTimeout.
STREAM_TIMEOUT = 15.0
DIAL_BACK_DIAL_TIMEOUT = 10.0
DIAL_BACK_STREAM_TIMEOUT = 5.0
# How long a client waits for a dial-back still in flight when the response says OK (the server
# reads our DialBackResponse first, so it is normally there already).
DIAL_BACK_GRACE = 1.0
READ_SIZE = 65536


@dataclass
class ServerConfig:
    """The server's address policy and rate limits (defaults: go-libp2p's)."""

    policy: ServerPolicy = field(default_factory=ServerPolicy)
    limiter: RateLimiter = field(default_factory=RateLimiter)


class AutoNATService:
    def __init__(self, network: Network, *, server: ServerConfig | None = None) -> None:
        self.network = network
        self.server = server
        self._pending: dict[int, core.ClientRequest] = {}
        self._dial_back_seen: dict[int, asyncio.Event] = {}
        self.reachability = Reachability.UNKNOWN
        self.results: dict[Multiaddr, list[CheckResult]] = {}
        self.served = 0  # dial requests answered (any status)
        self.dial_data_received = 0  # bytes of dial data received, all requests
        network.handle(DIAL_BACK, self._handle_dial_back)
        if server is not None:
            # A relayed requester has no observed IP of its own: not served (as go and rust).
            network.handle(DIAL_REQUEST, self._handle_dial_request)

    # -- server --------------------------------------------------------------------------------

    async def _handle_dial_request(self, stream: Stream) -> None:
        assert self.server is not None
        conn = stream.connection
        assert conn is not None  # set for every inbound stream
        peer = conn.remote_peer
        limiter = self.server.limiter
        if not limiter.accept(str(peer), time.monotonic()):
            log.info("autonat: request from %s rejected: rate limit", peer.short())
            await self._finish(stream, core.rejected_response())
            return
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                await self._serve(stream, conn)
        except (ProtocolError, P2PError, OSError, TimeoutError) as e:
            log.info("autonat: request from %s ended: %s", peer.short(), e or type(e).__name__)
            stream.reset()
        finally:
            limiter.complete(str(peer))

    async def _serve(self, stream: Stream, conn: Connection) -> None:
        assert self.server is not None
        observed = core.addr_ip(conn.remote_addr)
        req = core.ServerRequest(self.server.policy, observed, limiter=self.server.limiter,
                                 now=time.monotonic())
        while req.state != "done":
            data = await stream.read(READ_SIZE)
            if not data:
                raise ProtocolError(f"autonat: stream ended in state {req.state}")
            for action in req.receive(data):
                if isinstance(action, core.Send):
                    if action.then_close:
                        self._log_refusals(req, conn)
                        await self._finish(stream, action.data)
                        return
                    await stream.write(action.data)
                else:
                    self.dial_data_received += req.dial_data_received
                    status = await self._dial_back(conn.remote_peer, action)
                    log.info("autonat: dial back to %s at %s: %s (dial data %d bytes)",
                             conn.remote_peer.short(), action.addr, core.dial_status_name(status),
                             req.dial_data_received)
                    await self._finish(stream, req.dial_result(status).data)
                    return

    def _log_refusals(self, req: core.ServerRequest, conn: Connection) -> None:
        for addr, why in req.refusals:
            log.info("autonat: not dialling %s for %s: %s", addr, conn.remote_peer.short(), why)

    async def _finish(self, stream: Stream, data: bytes) -> None:
        self.served += 1
        try:
            await stream.write(data)
            await stream.close()
        except (P2PError, OSError) as e:
            log.debug("autonat: response not delivered: %s", e)
            stream.reset()

    async def _dial_back(self, peer: PeerId, action: core.DialBack) -> int:
        # No /p2p in the address: Host.dial then makes a new connection even though we have one.
        try:
            conn = await self.network.dial(action.addr, timeout=DIAL_BACK_DIAL_TIMEOUT)
        except (P2PError, OSError, TimeoutError) as e:
            log.debug("autonat: dial back to %s failed: %s", action.addr, e)
            return core.DIAL_ERROR
        try:
            if conn.remote_peer != peer:
                log.info("autonat: %s is %s, not the requester %s", action.addr,
                         conn.remote_peer.short(), peer.short())
                return core.DIAL_ERROR
            async with asyncio.timeout(DIAL_BACK_STREAM_TIMEOUT):
                stream = await self.network.new_stream(conn, [DIAL_BACK])
                await stream.write(core.dial_back_message(action.nonce))
                await stream.close_write()
                # The DialBackResponse (or EOF) tells us the nonce was delivered before we close.
                await stream.read(core.DIAL_BACK_MAX_MSG_SIZE)
                await stream.close()
            return core.DIAL_OK
        except (P2PError, OSError, TimeoutError) as e:
            log.debug("autonat: dial-back stream to %s failed: %s", action.addr, e)
            return core.DIAL_BACK_ERROR
        finally:
            await conn.close()

    # -- client --------------------------------------------------------------------------------

    async def _handle_dial_back(self, stream: Stream) -> None:
        reader = core.MessageReader(core.DIAL_BACK_MAX_MSG_SIZE)
        try:
            async with asyncio.timeout(DIAL_BACK_STREAM_TIMEOUT):
                bodies: list[bytes] = []
                while not bodies:
                    data = await stream.read(core.DIAL_BACK_MAX_MSG_SIZE)
                    if not data:
                        raise ProtocolError("autonat: dial-back stream ended before its nonce")
                    bodies = reader.feed(data)
                nonce = core.parse_dial_back(bodies[0])
                req = self._pending.get(nonce)
                if req is None or not req.dial_back(nonce):
                    log.info("autonat: dial back with a nonce we did not send (from %s)",
                             stream.connection.remote_peer.short() if stream.connection else "?")
                    stream.reset()
                    return
                self._dial_back_seen[nonce].set()
                await stream.write(core.dial_back_response())
                await stream.close()
        except (ProtocolError, P2PError, OSError, TimeoutError) as e:
            log.info("autonat: dial-back stream ended: %s", e or type(e).__name__)
            stream.reset()

    async def check(self, target: PeerId | Connection, addrs: Sequence[Multiaddr | str], *,
                    send_dial_data: bool = True, timeout: float = STREAM_TIMEOUT) -> CheckResult:
        """Ask one server to dial the first of `addrs` it will; its verdict (raises P2PError or
        TimeoutError when the exchange fails)."""
        nonce = secrets.randbits(64)
        req = core.ClientRequest([Multiaddr(a) for a in addrs], nonce,
                                 send_dial_data=send_dial_data)
        self._pending[nonce] = req
        seen = self._dial_back_seen[nonce] = asyncio.Event()
        try:
            stream = await self.network.new_stream(target, [DIAL_REQUEST])
            try:
                async with asyncio.timeout(timeout):
                    result = await self._run_check(stream, req, seen)
            except BaseException:
                stream.reset()
                raise
        finally:
            self._pending.pop(nonce, None)
            self._dial_back_seen.pop(nonce, None)
        if result.addr is not None:
            self.results.setdefault(result.addr, []).append(result)
        return result

    async def _run_check(self, stream: Stream, req: core.ClientRequest,
                         seen: asyncio.Event) -> CheckResult:
        await stream.write(req.request())
        while True:
            data = await stream.read(READ_SIZE)
            if not data:
                raise ProtocolError("autonat: the server ended the stream without a response")
            for action in req.receive(data):
                if isinstance(action, core.SendDialData):
                    await self._send_dial_data(stream, action.total)
                    continue
                if isinstance(action, core.AwaitDialBack):
                    try:
                        await asyncio.wait_for(seen.wait(), DIAL_BACK_GRACE)
                    except TimeoutError:
                        pass  # held_result() names the missing dial-back
                    result = req.held_result()
                else:
                    result = action.result
                await stream.close()
                return result

    async def _send_dial_data(self, stream: Stream, total: int) -> None:
        chunk = core.dial_data_message()
        sent = 0
        while sent < total:
            await stream.write(chunk)
            sent += core.DIAL_DATA_CHUNK

    async def probe(self, addrs: Sequence[Multiaddr] | None = None, *,
                    servers: Sequence[PeerId] | None = None,
                    timeout: float = STREAM_TIMEOUT) -> Reachability:
        """Ask each connected AutoNAT v2 server (or `servers`) about `addrs` (default: our
        direct listen addresses) and set `reachability`: PUBLIC once one address was dialled
        back, PRIVATE when every answer was a dial error, else UNKNOWN."""
        mine = list(addrs) if addrs is not None else direct_addrs(self.network.addrs())
        if not mine:
            return self.reachability
        if servers is None:
            servers = self.servers()
        results: list[CheckResult] = []
        for peer in servers:
            try:
                results.append(await self.check(peer, mine, timeout=timeout))
            except (P2PError, TimeoutError, OSError) as e:
                log.info("autonat: asking %s failed: %s", peer.short(), e or type(e).__name__)
        verdicts = {r.reachability for r in results}
        if Reachability.PUBLIC in verdicts:
            self.reachability = Reachability.PUBLIC
        elif verdicts == {Reachability.PRIVATE}:
            self.reachability = Reachability.PRIVATE
        log.info("autonat: reachability %s (%d answers from %d servers)",
                 self.reachability.value, len(results), len(servers))
        return self.reachability

    def servers(self) -> list[PeerId]:
        """Connected peers whose identify lists the dial-request protocol."""
        out: list[PeerId] = []
        for conn in self.network.connections():
            if conn.limited or conn.remote_peer in out:
                continue
            info = self.network.peerstore.peek(conn.remote_peer)
            if info is not None and DIAL_REQUEST in info.protocols:
                out.append(conn.remote_peer)
        return out


def direct_addrs(addrs: Sequence[Multiaddr]) -> list[Multiaddr]:
    """The addresses a server can dial back: IP ones (TCP, WebSocket, webrtc-direct), not
    circuits, not /webrtc (which needs signalling through a relay)."""
    out: list[Multiaddr] = []
    for a in addrs:
        protos = a.protocols()
        if "p2p-circuit" in protos or ("webrtc" in protos and "webrtc-direct" not in protos):
            continue
        if core.addr_ip(a) is None:
            continue
        out.append(a.without_peer_id())
    return out


class ReachabilityMonitor:
    """Keeps a confident verdict on our direct addresses current (`reachability_core`'s rules,
    go-libp2p's): asks connected AutoNAT v2 servers, one at a time, each at most once per
    `throttle`, until every address has its target confidence; again after an address change
    (`NEW_ADDRS_PROBE_DELAY`), when a new server is identified, and every `REFRESH_INTERVAL`
    (only addresses whose word is old or disputed are asked). With no server, or requests
    failing in a row, it backs off (5 s doubling to 5 min). `on_change(confirmed)` is called
    whenever the verdicts change."""

    def __init__(self, service: AutoNATService, on_change: Callable[[Confirmed], None], *,
                 addrs: Callable[[], Sequence[Multiaddr]] | None = None,
                 throttle: float = SERVER_THROTTLE) -> None:
        self.service = service
        self.network = service.network
        self.on_change = on_change
        self._addrs = addrs or (lambda: direct_addrs(self.network.addrs()))
        self.tracker = ReachabilityTracker()
        self.picker: ServerPicker[PeerId] = ServerPicker(throttle)
        self.backoff = Backoff()
        self.confirmed = Confirmed()
        self.probes = 0  # requests made (any outcome)
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ReachabilityMonitor:
        from ..events import Identified, ListenAddrsChanged

        self.network.events.on(ListenAddrsChanged, lambda _e: self.poke(NEW_ADDRS_PROBE_DELAY))
        self.network.events.on(Identified, self._on_identified)
        self._task = self.network.spawn(self._run())
        self.poke(NEW_ADDRS_PROBE_DELAY)
        return self

    def _on_identified(self, e: Identified) -> None:
        if DIAL_REQUEST in e.info.protocols and not e.connection.limited and self.tracker.addrs:
            self.poke(0.0)  # a new server: ask it what is still undecided

    def poke(self, delay: float = 0.0) -> None:
        """Look for due probes after `delay` seconds."""
        if delay <= 0:
            self._wake.set()
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _run(self) -> None:
        wait = REFRESH_INTERVAL
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()
            self.tracker.update_addrs(self._addrs())
            self._update(time.monotonic())
            wait = await self._round()

    async def _round(self) -> float:
        """Probe while something is due; how long to sleep afterwards."""
        while True:
            now = time.monotonic()
            probe = self.tracker.next_probe(now)
            if not probe:
                self.backoff.reset()
                return REFRESH_INTERVAL
            servers = self.service.servers()
            peer = self.picker.pick(servers, now)
            if peer is None:
                free = self.picker.free_at(servers)
                if free is None:  # no server: back off (a new one wakes us at once)
                    return self.backoff.next()
                return max(0.05, free - now)
            await self._ask(peer, probe)
            if self.tracker.failing:
                return self.backoff.next()

    async def _ask(self, peer: PeerId, probe: Sequence[Multiaddr],
                   tracker: ReachabilityTracker | None = None) -> None:
        tracker = tracker or self.tracker
        tracker.start_probe(probe)
        result: CheckResult | None = None
        try:
            result = await self.service.check(peer, probe, timeout=PROBE_TIMEOUT)
            log.info("autonat: %s says %s of %s", peer.short(), result.reachability.value,
                     result.addr)
        except (P2PError, TimeoutError, OSError) as e:
            log.info("autonat: asking %s failed: %s", peer.short(), e or type(e).__name__)
        finally:
            self.probes += 1
            tracker.complete_probe(probe, result, time.monotonic())
            if tracker is self.tracker:
                self._update(time.monotonic())

    def _update(self, now: float) -> None:
        confirmed = self.tracker.confirmed(now)
        if confirmed != self.confirmed:
            self.confirmed = confirmed
            self.service.reachability = confirmed.reachability
            self.on_change(confirmed)

    async def probe_now(self, addrs: Sequence[Multiaddr] | None = None,
                        servers: Sequence[PeerId] | None = None) -> Confirmed:
        """Ask each of `servers` (default: every connected one) once, now, whatever the
        throttle: about our tracked addresses (only those still undecided; the answers count
        for the kept verdict), or about `addrs` alone (a verdict of their own, kept apart)."""
        servers = list(servers) if servers is not None else self.service.servers()
        if addrs is None:
            self.tracker.update_addrs(self._addrs())
            tracker = self.tracker
        else:
            tracker = ReachabilityTracker()
            tracker.update_addrs(addrs)
        for peer in servers:
            now = time.monotonic()
            probe = tracker.next_probe(now)
            if not probe:
                break
            self.picker.asked[peer] = now
            await self._ask(peer, probe, tracker)
        return tracker.confirmed(time.monotonic())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
