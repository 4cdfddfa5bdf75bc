"""The public API: a `Node` that meets other peers through a circuit-relay-v2 relay and upgrades
to a direct WebRTC connection, with `Connection` and `Stream` objects on top.

    from p2prtc import Node

    async with Node() as node:
        node.handle("/echo/1.0.0", echo)               # async def echo(stream) -> None
        addrs = await node.listen(relay_multiaddr)     # share one with the other side
        ...
        conn = await node.dial(addr)                   # returns once direct
        stream = await conn.open_stream("/echo/1.0.0")
        await stream.write(b"hi")
        await stream.close()                           # FIN: our half is done
        reply = await stream.read(65536)               # b"" at the end

It is a thin layer over the internal `Host` and its transports; everything else in the package is
internal and may change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import api_events as ev
from .dialrace import ATTEMPT_DELAY, race
from .errors import DialError, P2PError, StreamClosed
from .identity import Identity, PeerId
from .multiaddr import Multiaddr
from .relaykeeper import LOST_GRACE, Action, FindRelays, RelayKeeper, Release, Reserve
from .resources import ResourceLimits, ResourceManager
from .streams import read_exactly

if TYPE_CHECKING:
    from .connection import Connection as _Conn
    from .host import Host
    from .transports.webrtc.engine import IceServer

log = logging.getLogger(__name__)

__all__ = ["Node", "Connection", "Stream", "NoDirectPath", "Handler"]

# How long listen() waits for the relay's reservation, as `p2prtc listen` (peerapp.RELAY_TIMEOUT).
RESERVATION_TIMEOUT = 20.0
# With several relays, how long listen() still waits for the others once one has granted a
# reservation (ours: a relay that drops packets would otherwise hold listen() for the whole
# RESERVATION_TIMEOUT; the late ones keep trying in the background and join addrs()).
OTHER_RELAYS_GRACE = 2.0
# An event iterator that is not read keeps at most this many events; older ones are dropped
# (with one log line per iterator) so that a forgotten iterator cannot grow without bound.
EVENT_QUEUE_MAX = 1024
# Republishing our DHT records (besides each address change): go republishes provider records
# every 22 h and ipns records hourly; circuit addresses change with relays, so hourly.
REPUBLISH_INTERVAL = 3600.0
# A publish (first or re-) that failed (the DHT unreachable, no server took the record) is
# retried after PUBLISH_RETRY_START, doubling to PUBLISH_RETRY_MAX (ours: the schedule of
# go-libp2p's AutoNAT v2 tracker backoff, 5 s to 5 min; go-libp2p-kad-dht itself only
# republishes on its next interval).
PUBLISH_RETRY_START = 5.0
PUBLISH_RETRY_MAX = 300.0
# `listen()` with no relay given (and a DHT) reserves on this many relays found in the DHT, and
# the relay keeper keeps that many (issue 15.3; go-libp2p autorelay's desiredRelays is 2 too).
RELAYS_FROM_DHT = 2


class NoDirectPath(DialError):
    """The peer was reached through the relay, but no direct WebRTC connection could be made
    (NATs that rule it out, ICE finding no pair in time). The message says why. Pass
    `allow_relayed=True` to `Node.dial` to get the relayed connection instead."""


Handler = Callable[["Stream"], Awaitable[None]]
"""A protocol handler: `async def handler(stream: Stream) -> None`. The stream is reset if the
handler raises, closed (FIN) if it returns without closing it."""


class Stream:
    """One bidirectional byte stream of a connection, negotiated to one protocol.

    Reliable and ordered; each side can half-close (`close()`) and keep reading. Not to be
    created directly: `Connection.open_stream` and protocol handlers give them.
    """

    def __init__(self, inner: Any, connection: Connection) -> None:
        self._inner = inner
        self._connection = connection
        self._closed = False

    @property
    def protocol(self) -> str:
        """The protocol negotiated on this stream, e.g. "/my/proto/1.0.0"."""
        return str(self._inner.protocol)

    @property
    def connection(self) -> Connection:
        """The connection this stream runs on."""
        return self._connection

    @property
    def remote_peer(self) -> str:
        """The peer id of the other side."""
        return self._connection.remote_peer

    async def read(self, n: int = 65536) -> bytes:
        """Between 1 and `n` bytes, or b"" once the other side has closed its half and
        everything before has been read. Raises `StreamReset` if the stream was reset."""
        return bytes(await self._inner.read(n))

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes; raises `IncompleteRead` (a `ProtocolError`) if the stream ends
        first."""
        return await read_exactly(self._inner, n)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send `data`; returns once the layer below took it (waits while the other side's
        window is full). Raises `StreamClosed` after `close()` or `reset()`."""
        await self._inner.write(data)

    async def close(self) -> None:
        """Half-close: send end-of-stream (FIN). Reading still works until the other side
        closes its half. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._inner.close_write()

    def reset(self) -> None:
        """Abort the stream at once, both directions; data in flight may be lost."""
        self._closed = True
        self._inner.reset()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.close()
        else:
            self.reset()

    def __repr__(self) -> str:
        return f"<Stream {self.protocol} with {self.remote_peer}>"


class Connection:
    """A connection to one peer: direct WebRTC (`direct`), via TURN, or through the relay.

    Not to be created directly: `Node.dial` and `Stream.connection` give them.
    """

    def __init__(self, inner: _Conn, node: Node) -> None:
        self._inner = inner
        self._node = node

    @property
    def remote_peer(self) -> str:
        """The peer id of the other side (authenticated)."""
        return str(self._inner.remote_peer)

    @property
    def remote_addr(self) -> str:
        """The other side's address as this connection sees it."""
        return str(self._inner.remote_addr)

    @property
    def transport(self) -> str:
        """"webrtc" (direct or via TURN), "relay" (through the circuit relay), or "tcp", "ws",
        "webrtc-direct" for connections to servers such as the relay itself."""
        return "relay" if self._inner.transport == "circuit" else self._inner.transport

    @property
    def path(self) -> str:
        """"direct", "turn" (WebRTC relayed by a TURN server) or "relay"."""
        if self._inner.transport == "circuit":
            return "relay"
        return self._inner.details.path or "direct"

    @property
    def direct(self) -> bool:
        """True for a direct peer-to-peer path (not through the relay, nor TURN)."""
        return self.path == "direct"

    @property
    def limited(self) -> bool:
        """True when the relay limits this connection's time and bytes."""
        return bool(self._inner.limited)

    @property
    def limit(self) -> ev.RelayLimit | None:
        """The relay's limit on this relayed connection, `{"duration": seconds, "data": bytes}`
        (0: none), or None (not relayed, or the relay set none)."""
        return self._inner.details.limit_dict()

    def limit_refuses(self, nbytes: int) -> str | None:
        """Why writing `nbytes` more now would pass the relay's limits on this relayed
        connection (the relay would cut it off, and what is in flight would be lost), in
        words; None when it fits or there are no limits. Both directions count, and what is
        still queued."""
        meter = self._inner.limit_meter
        return None if meter is None else meter.refuse(nbytes, time.monotonic())

    def limit_room(self) -> int | None:
        """How many more bytes fit under the relay's data limit on this connection; None when
        it has none."""
        meter = self._inner.limit_meter
        return None if meter is None else meter.room()

    @property
    def limit_used_up(self) -> bool:
        """True once nothing useful fits under the relay's data limit any more: closing the
        connection then frees the relay's slot."""
        meter = self._inner.limit_meter
        return meter is not None and bool(meter.data_used_up())

    @property
    def candidate_pair(self) -> ev.CandidatePair | None:
        """The ICE candidate pair of a WebRTC connection, else None."""
        return self._inner.details.candidate_pair_dict()

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return bool(self._inner.is_closed)

    @property
    def end_reason(self) -> str | None:
        """Why the connection ended, in words (None while open)."""
        return self._inner.end_reason

    async def open_stream(self, protocol: str | Sequence[str]) -> Stream:
        """Open a stream and negotiate `protocol` (or the first of a list the other side
        supports). Raises `NegotiationFailed` when it supports none, `StreamClosed` when the
        connection is closed."""
        protocols = [protocol] if isinstance(protocol, str) else list(protocol)
        host = self._node._require_host()
        if self._inner.is_closed:
            raise StreamClosed(f"the connection to {self.remote_peer} is closed")
        inner = await host.new_stream(self._inner, protocols, allow_limited=True)
        return Stream(inner, self)

    async def close(self) -> None:
        """Close the connection (its streams end)."""
        await self._inner.close()

    async def wait_closed(self) -> None:
        """Return once the connection has ended, whichever side ended it."""
        await self._inner.wait_closed()

    def __repr__(self) -> str:
        return f"<Connection {self.transport} {self.path} {self.remote_peer}>"


async def _first_then_grace(coros: Sequence[Awaitable[Any]],
                            grace: float) -> list[Any | BaseException | None]:
    """Run `coros` together; return when all are done, or `grace` seconds after the first one
    succeeded. Each result is its value, its exception, or None when it was still running (it is
    then cancelled: `CircuitListener.reserved` is shielded, the listener goes on trying)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    pending = set(tasks)
    try:
        while pending:
            wait = None if deadline is None else max(0.0, deadline - loop.time())
            done, pending = await asyncio.wait(pending, timeout=wait,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # the grace is over
            if deadline is None and any(t.exception() is None for t in done):
                deadline = loop.time() + grace
    finally:
        for t in pending:
            t.cancel()
    return [None if t in pending else (t.exception() or t.result()) for t in tasks]


def _relay_peers(relays: Sequence[str]) -> list[PeerId]:
    """The peer id of each relay address; DialError for one without `/p2p/<relay peer id>`."""
    peers = [Multiaddr(r).peer_id() for r in relays]
    if None in peers:
        raise DialError("the relay address must end with /p2p/<relay peer id>")
    return [p for p in peers if p is not None]


def _browser_dialable(addr: Multiaddr) -> bool:
    """A browser reaches the relay of this address over WebSocket or WebRTC-direct."""
    parts = addr.split_last("p2p-circuit")
    protos = (parts[0] if parts is not None else addr).protocols()
    return any(p in protos for p in ("ws", "wss", "webrtc-direct"))


def _load_identity(identity: Identity | int | str | os.PathLike[str] | None) -> Identity:
    if identity is None:
        return Identity.generate()
    if isinstance(identity, Identity):
        return identity
    if isinstance(identity, bool):
        raise TypeError("identity: a key file path, an int seed, an Identity or None")
    if isinstance(identity, int):
        return Identity.from_seed(identity)
    return Identity.load_or_create(identity)


class _EventIterator:
    """What `Node.events()` returns: an async iterator of events, subscribed from the moment it
    was created; it ends when the node closes."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._queue: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self._dropped = 0
        node._subscribers.append(self)
        if node._closed:
            self._queue.put_nowait(None)

    def _put(self, event: ev.Event | None) -> None:
        if event is not None and self._queue.qsize() >= EVENT_QUEUE_MAX:
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped == 1:
                log.warning("an events() iterator is not read: dropping its oldest events")
        self._queue.put_nowait(event)

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> ev.Event:
        item = await self._queue.get()
        if item is None:
            self._put(None)  # stays ended
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop receiving events."""
        with contextlib.suppress(ValueError):
            self._node._subscribers.remove(self)
        self._put(None)


class Node:
    """A peer: listens through relays and dials others, upgrading to direct WebRTC.

    - `identity`: a key file path (created on first use, mode 0600), an int seed (0-255: the
      same seed gives the same peer id, as rust-libp2p's `--secret-key-seed`), or None for a
      new random identity.
    - `stun`: STUN (and TURN) server URLs for ICE, e.g. `["stun:relay.example.org:3478"]`;
      None uses the STUN server on the host of the relay in use (`p2prtc relay` serves one on
      3478); `[]` none.
    - `turn`: "auto" (TURN credentials from the relay in use, when it hands them out), "none",
      or a list of `IceServer`s or `turn:` URLs.
    - `engine`: the WebRTC engine, "aiortc", "wrtc" or "auto"; None: `$P2PRTC_ENGINE`, else
      auto.
    - `nat`: detect our NAT behaviour (`Nat` events) and exchange it with peers, so that a
      direct path the NATs rule out fails at once instead of after the ICE timeout.
    - `tls_ca`: a CA file to trust for relays on /tls/ws or /wss, besides the system's.
    - `bootstrap`: DHT servers (multiaddrs; `p2prtc relay` is one) for `publish()` and
      `find()`: the Kademlia DHT, in client mode (p2prtc.kad).
    - `resources`: budgets of connections, streams and unread bytes (a
      `p2prtc.resources.ResourceLimits`); None: the defaults (go-libp2p's resource manager's).
    - `autonat`: answer AutoNAT v2 dial-backs, so `reachability()` can ask the relays (and
      other servers) we are connected to whether our direct addresses are publicly reachable;
      with a direct address the node keeps asking by itself (`needs_relay`, `Reachability`).
    - `direct`: addresses to listen on directly besides the relays, e.g.
      `["/ip4/0.0.0.0/udp/4001/webrtc-direct"]` (what browsers and other libp2p peers dial) or
      `/ip4/0.0.0.0/tcp/4001`; they join `addrs()` once AutoNAT v2 servers confirm them
      public (see `listen_direct`).

    Use it as `async with Node(...) as node:` (or `await node.start()` ... `await
    node.close()`). Event iterators made before `start()` also see its `Peer` event.
    """

    def __init__(
        self,
        identity: Identity | int | str | os.PathLike[str] | None = None,
        *,
        stun: Sequence[str] | None = None,
        turn: str | Sequence[IceServer | str] = "auto",
        engine: str | None = None,
        nat: bool = True,
        tls_ca: str | None = None,
        bootstrap: Sequence[str] = (),
        resources: ResourceLimits | None = None,
        autonat: bool = True,
        direct: Sequence[str] = (),
    ) -> None:
        self._identity = _load_identity(identity)
        self._resources = resources
        self._autonat_on = autonat
        self._autonat: Any = None
        self._monitor: Any = None  # protocols.autonat.ReachabilityMonitor, when autonat
        self._direct = list(direct)
        self._needs_relay = True
        self._published_stale = asyncio.Event()  # set when addrs() changed: republish
        self._bootstrap = list(bootstrap)
        self._kad: Any = None
        self._kad_joined: asyncio.Task[Any] | None = None
        self._republisher: asyncio.Task[Any] | None = None
        self._keeper: RelayKeeper | None = None  # the relay keeper, from the first listen()
        self._keeper_wake = asyncio.Event()
        self._stun = list(stun) if stun is not None else None
        self._turn = turn
        self._engine = engine
        self._nat = nat
        self._tls_ca = tls_ca
        self._host: Host | None = None
        self._webrtc: Any = None
        self._natinfo: Any = None
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._subscribers: list[_EventIterator] = []
        self._wrappers: dict[int, Connection] = {}
        self._closed = False
        self._t0 = time.monotonic()
        self._tracker = _Tracker(self)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """Our peer id (base58, "12D3KooW...")."""
        return str(self._identity.peer_id)

    async def start(self) -> None:
        """Start the node (done by `async with`). Idempotent."""
        if self._host is not None:
            return
        if self._closed:
            raise P2PError("this node is closed")
        from .host import Host, default_transports
        from .protocols.natinfo import NatInfoService
        from .transports.webrtc.engine import IceServer
        from .transports.webrtc.transport import WebRTCTransport

        turn: Any = self._turn
        if not isinstance(turn, str):
            turn = [s if isinstance(s, IceServer) else IceServer.parse(s) for s in turn]
        host = Host(self._identity, transports=[
            functools.partial(WebRTCTransport, ice_servers=self._stun, engine=self._engine,
                              turn=turn),
            *default_transports()])
        if self._resources is not None:
            host.upgrader.resources = ResourceManager(self._resources)
        if self._tls_ca:
            from .transports.tls import client_context
            from .transports.websocket import WebSocketTransport

            host.transport(WebSocketTransport).client_ssl = client_context(self._tls_ca)
        self._webrtc = host.transport(WebRTCTransport)
        if self._nat:
            self._natinfo = NatInfoService(host)
            self._webrtc.natinfo = self._natinfo
        self._host = host
        for protocol, (handler, allow_relayed) in self._handlers.items():
            self._register(protocol, handler, allow_relayed)
        self._tracker.attach(host)
        if self._bootstrap:
            from .kad.service import KadService

            self._kad = KadService(host, server=False).start()
        if self._autonat_on:
            from .protocols.autonat import AutoNATService, ReachabilityMonitor

            self._autonat = AutoNATService(host)
            self._monitor = ReachabilityMonitor(self._autonat, self._on_verdict).start()
        self._emit(ev.Peer(peer=self.peer_id))
        if self._direct:
            await self.listen_direct(*self._direct)

    async def close(self) -> None:
        """Close every connection and listener; event iterators end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            self._monitor.close()
        if self._host is not None:
            await self._host.close()
        for sub in list(self._subscribers):
            sub._put(None)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_host(self) -> Host:
        if self._host is None:
            raise P2PError("the node is not started: use `async with Node() as node` "
                           "or `await node.start()`")
        if self._closed:
            raise P2PError("this node is closed")
        return self._host

    # -- protocols -------------------------------------------------------------------------

    def handle(self, protocol: str, handler: Handler, *, allow_relayed: bool = False) -> None:
        """Run `await handler(stream)` for each stream another peer opens with `protocol`.

        Handlers run on direct (WebRTC) connections; with `allow_relayed` also on relayed ones,
        which relays limit (e.g. 2 minutes and 128 KiB per connection by default). The stream
        is reset when the handler raises, and half-closed when it returns.
        """
        if not protocol.startswith("/"):
            raise ValueError(f"a protocol id starts with '/': {protocol!r}")
        self._handlers[protocol] = (handler, allow_relayed)
        if self._host is not None:
            self._register(protocol, handler, allow_relayed)

    def _register(self, protocol: str, handler: Handler, allow_relayed: bool) -> None:
        assert self._host is not None

        async def run(inner: Any) -> None:
            stream = Stream(inner, self._wrap(inner.connection))
            await handler(stream)
            await stream.close()

        self._host.handle(protocol, run, allow_limited=allow_relayed)

    # -- listening and dialing -------------------------------------------------------------

    async def listen(self, *relays: str | Sequence[str],
                     timeout: float = RESERVATION_TIMEOUT,
                     relay_grace: float = LOST_GRACE) -> list[str]:
        """Reserve a slot on each relay given (its multiaddr, ending with `/p2p/<relay peer
        id>`; `listen(a, b)` or `listen([a, b])`) and keep every reservation alive (refreshed
        before it expires, made again when a relay restarts or the connection drops). With no
        relay given and a DHT (`bootstrap`), `RELAYS_FROM_DHT` relays come from
        `find_relays()`. Returns our dialable addresses `<relay>/p2p-circuit/webrtc/p2p/<our
        id>`, one or more through each relay, those a browser can dial first. Others dial one
        (or several: `Node.dial` races them) of them.

        Waits for each relay's first answer (at most `timeout` seconds each, in parallel).
        Raises `DialError` when no relay grants a reservation; relays that failed while others
        succeeded are retried in the background (`Warning` events) and join `addrs()` once
        they grant one.

        The relay keeper then holds as many relays as this started with: one unreachable for
        `relay_grace` seconds (default `relaykeeper.LOST_GRACE`, 30 s) is replaced by one
        from the DHT when the node has one (`RelayLost`, `RelayAdded` events; the lost relay
        is still retried, slowly). Once `reachability()` finds us publicly reachable the
        reservations are released, and made again when it no longer does."""
        host = self._require_host()
        flat = [r for item in relays for r in ([item] if isinstance(item, str) else item)]
        given = bool(flat)
        if not flat and self._kad is None:
            raise ValueError("listen: give at least one relay address (or a DHT: "
                             "Node(bootstrap=[...]) to find relays in)")
        if not self.needs_relay:
            # publicly reachable already (AutoNAT): reserve nowhere; the keeper reserves (on
            # these relays, else on relays from the DHT) if that changes
            _relay_peers(flat)  # a bad address fails now, not when reachability changes
            if not self._webrtc.listening:
                await host.listen("/webrtc")
            self._keep_relays(flat, set(), given=given, grace=relay_grace, wanted=False)
            return self.addrs()
        if not flat:
            flat = await self.find_relays(RELAYS_FROM_DHT)
        addrs = [Multiaddr(r) for r in flat]
        self._tracker.relays.update(_relay_peers(flat))
        self._start_nat(addrs[0])
        if not self._webrtc.listening:
            await host.listen("/webrtc")
        results = await _first_then_grace(
            [host.listen_via_relay(a, timeout) for a in addrs], OTHER_RELAYS_GRACE)
        failures: list[tuple[str, str]] = []
        for relay, result in zip(flat, results, strict=True):
            if result is None:
                failures.append((relay, f"no reservation on {relay} yet"))
            elif isinstance(result, TimeoutError):
                failures.append((relay, f"no reservation on {relay} within {timeout:.0f} s"))
            elif isinstance(result, DialError):
                failures.append((relay, f"{result}" if len(flat) == 1 else f"{relay}: {result}"))
            elif isinstance(result, BaseException):
                raise result
        if len(failures) == len(flat):
            raise DialError("; ".join(reason for _, reason in failures))
        for relay, reason in failures:
            self._emit(ev.Warning(reason=f"{reason}; retrying", relay=relay))
        self._keep_relays(flat, {r for r, _ in failures}, given=given, grace=relay_grace)
        return self.addrs()

    def addrs(self) -> list[str]:
        """Our dialable addresses: the direct ones AutoNAT v2 servers confirmed public (see
        `listen_direct`; never before: they would send dialers to an address that fails),
        then the `/p2p-circuit/webrtc` ones (one per relay reservation held),
        browser-dialable ones first."""
        if self._host is None:
            return []
        host = self._host
        direct = [a.with_peer_id(host.peer_id) for a in self._confirmed_direct()]
        addrs = [a.with_peer_id(host.peer_id) for a in host.listen_addrs if a.has("webrtc")]
        return [str(a) for a in direct + sorted(addrs, key=lambda a: not _browser_dialable(a))]

    def _confirmed_direct(self) -> list[Multiaddr]:
        if self._monitor is None or self._host is None:
            return []
        from .protocols.autonat import direct_addrs

        listening = set(direct_addrs(self._host.listen_addrs))
        return [a for a in self._monitor.confirmed.reachable if a in listening]

    async def listen_direct(self, *addrs: str) -> list[str]:
        """Listen directly on `addrs` (e.g. "/ip4/0.0.0.0/udp/0/webrtc-direct", which browsers
        and other libp2p peers dial; "/ip4/0.0.0.0/tcp/0" works too): those are the addresses
        AutoNAT v2 servers are asked about. Returns what was bound (0.0.0.0 expanded; the
        webrtc-direct ones with their /certhash), without /p2p. They join `addrs()` (and the
        published DHT record) only once confirmed public (`Reachability` event, `needs_relay`
        False), as go-libp2p advertises only confirmed addresses."""
        host = self._require_host()
        if not addrs:
            raise ValueError("listen_direct: give at least one address")
        bound = await host.listen(*addrs)
        return [str(a) for a in bound]

    async def dial(self, addr: str | Sequence[str], *, allow_relayed: bool = False,
                   timeout: float | None = None,
                   attempt_delay: float = ATTEMPT_DELAY) -> Connection:
        """Connect to the peer at `addr` (a `<relay>/p2p-circuit/webrtc/p2p/<peer>` address from
        its `listen()`); returns once the connection is direct WebRTC (or via TURN).

        Several addresses of one peer (e.g. through different relays) are raced, happy-eyeballs
        style (RFC 8305): one attempt starts every `attempt_delay` seconds (at once when all
        running ones have failed; 0 starts them all together), the first direct connection
        wins, and the other attempts are cancelled and their relayed connections closed (the
        relays keep no circuit for them).

        Raises `NoDirectPath` when a relay reached the peer but no direct connection came
        about (the relayed connections are closed), unless `allow_relayed`: then a relayed
        connection is returned (`direct` False, limited by the relay). Raises `DialError` when
        the peer cannot be reached at all. `timeout` bounds each attempt (default: the
        transport's, about 20 s)."""
        host = self._require_host()
        targets = [Multiaddr(a) for a in ([addr] if isinstance(addr, str) else addr)]
        if not targets:
            raise ValueError("dial: give at least one address")
        peers = {t.peer_id() for t in targets}
        if None in peers:
            raise DialError("the peer address must end with /p2p/<peer id>")
        if len(peers) > 1:
            raise DialError("dial: the addresses name different peers; give one peer's")
        peer = targets[0].peer_id()
        assert peer is not None
        relay_parts = []
        for target in targets:
            split = target.split_last("p2p-circuit")
            relay_part = split[0] if split is not None else None
            relay_peer = relay_part.peer_id() if relay_part is not None else None
            if relay_peer is not None:
                self._tracker.relays.add(relay_peer)
            relay_parts.append(relay_part)
        self._start_nat(relay_parts[0])
        self._tracker.dial_started[peer] = time.perf_counter()
        before = {c.id for c in host.connections(peer)}

        async def attempt(target: Multiaddr) -> _Conn:
            self._emit(ev.Dialing(addr=str(target)))
            if timeout is None:
                return await host.dial(target)
            return await host.dial(target, timeout=timeout)

        result = await race(targets, attempt, lambda c: c.transport != "circuit",
                            delay=attempt_delay)
        direct = result.winner

        def relayed_since() -> list[_Conn]:  # relayed connections this dial made, oldest first
            return [c for c in host.connections(peer) if c.transport == "circuit"
                    and not c.is_closed and c.id not in before]

        if direct is not None:
            self._tracker.report_connected(direct)  # first: the closes below are no news
            keep = direct.details.relayed_via  # the one its upgrade ran over
            for c in relayed_since():
                if str(c.remote_addr) != keep:
                    await c.close()
            return self._wrap(direct)
        relayed_addr, relayed = result.relayed[-1] if result.relayed else (None, None)
        upgrade_failed = [e for t, e in result.errors if t.has("webrtc")]
        if relayed is None and upgrade_failed:
            relayed = next(iter(reversed(relayed_since())), None)
        if relayed is None:
            if len(result.errors) == 1:
                raise result.errors[0][1]
            raise DialError("; ".join(str(e) for _, e in result.errors) or f"cannot reach {peer}")
        for c in relayed_since():
            if c is not relayed:
                await c.close()
        if upgrade_failed:
            reason = "; ".join(str(e) for e in upgrade_failed)
            self._emit(ev.Error(reason=reason, peer=str(peer)))
            if not allow_relayed:
                await relayed.close()
                raise NoDirectPath(reason)
        elif relayed.limited and not allow_relayed:
            await relayed.close()
            raise NoDirectPath(f"{relayed_addr} is reached only through the relay (a "
                               "relayed connection); dial its /webrtc address, or pass "
                               "allow_relayed=True")
        self._tracker.report_connected(relayed)
        return self._wrap(relayed)

    # -- the DHT (p2prtc.kad; DEVELOPERS.md, "The DHT") ----------------------------------------

    async def _dht(self) -> Any:
        """The DHT service, joined through `bootstrap` (once; again when nobody answered)."""
        host = self._require_host()
        if self._kad is None:
            raise P2PError("no DHT: give Node(bootstrap=[...]) a DHT server")
        if self._kad_joined is None or (self._kad_joined.done() and not self._kad_joined.result()):
            self._kad_joined = host.spawn(self._kad.bootstrap(self._bootstrap))
        if not await asyncio.shield(self._kad_joined):
            raise DialError("no DHT bootstrap peer reachable: " + ", ".join(self._bootstrap))
        return self._kad

    async def publish(self) -> ev.Published:
        """Put our signed peer record (our `addrs()`) and a provider record for our peer id
        into the DHT, so that `find(our peer id)` works; done again by itself whenever the
        addresses change and every `REPUBLISH_INTERVAL`. Emits (and returns) `Published`.

        Raises `DialError` when the DHT is unreachable or no DHT server took either record;
        the node then keeps trying by itself (`PUBLISH_RETRY_START` doubling to
        `PUBLISH_RETRY_MAX`, a `Warning` each time), as after a failed republish."""
        try:
            kad = await self._dht()
            event = await self._publish_once(kad)
        except (P2PError, OSError) as e:
            self._start_republisher(retry=True)
            if isinstance(e, P2PError):
                raise
            raise DialError(f"publishing failed: {e}") from e
        self._start_republisher(retry=False)
        return event

    def _start_republisher(self, *, retry: bool) -> None:
        if self._republisher is not None:
            return
        from .events import ListenAddrsChanged

        host = self._require_host()
        host.events.on(ListenAddrsChanged, lambda _e: self._published_stale.set())
        self._republisher = host.spawn(self._republish(retry))

    async def _publish_once(self, kad: Any) -> ev.Published:
        addrs = self.addrs()
        put, provided = await kad.publish_self([Multiaddr(a) for a in addrs])
        if not put and not provided:
            raise DialError("no DHT server took our record")
        event = ev.Published(addrs=addrs, record_peers=put, provider_peers=provided)
        self._emit(event)
        return event

    async def _republish(self, retry: bool) -> None:
        """Republish on each change of `addrs()` and every `REPUBLISH_INTERVAL`; after a
        failure, retry with backoff until it works."""
        published = None if retry else self.addrs()
        retry_in: float | None = PUBLISH_RETRY_START if retry else None
        self._published_stale.clear()
        while True:
            wait = retry_in if retry_in is not None else REPUBLISH_INTERVAL
            try:
                await asyncio.wait_for(self._published_stale.wait(), wait)
                changed = True
            except TimeoutError:
                changed = False  # the hourly republish, or the retry is due
            self._published_stale.clear()
            addrs = self.addrs()
            if changed and retry_in is None and addrs == published:
                continue
            if not addrs:
                continue  # nothing to publish (yet): an address change wakes us
            try:
                await self._publish_once(await self._dht())
                published, retry_in = addrs, None
            except (P2PError, OSError) as e:
                retry_in = (PUBLISH_RETRY_START if retry_in is None
                            else min(retry_in * 2, PUBLISH_RETRY_MAX))
                self._emit(ev.Warning(reason=f"publishing our record failed: {e}; retrying "
                                             f"in {retry_in:.0f} s", relay=None))

    async def find_relays(self, count: int = 2) -> list[str]:
        """Relays from the DHT (they provide `kad.records.RELAY_PROVIDER_KEY`): one address
        (`.../p2p/<relay>`, TCP first) for each of up to `count` relays, for `listen()`.
        Raises `DialError` when the DHT knows none."""
        from .kad.records import RELAY_PROVIDER_KEY

        kad = await self._dht()
        providers = await kad.find_providers(RELAY_PROVIDER_KEY, wanted=count)
        out: list[str] = []
        for p in providers:
            addrs = sorted((a for a in p.addrs if not a.has("p2p-circuit")),
                           key=lambda a: (not a.has("tcp") or a.has("ws") or a.has("tls")))
            if addrs and p.peer_id != self._identity.peer_id:
                out.append(str(addrs[0].with_peer_id(p.peer_id)))
        if not out:
            raise DialError("the DHT knows no relays")
        return out[:count]

    async def find(self, peer: str) -> list[str]:
        """Addresses of `peer` (a peer id) from the DHT: its signed peer record (verified: the
        signature and that it is `peer`'s), else its provider record, else FIND_NODE. Each
        ends with `/p2p/<peer>`, ready for `dial()`. Emits `Found`; raises `DialError` when
        the DHT does not know the peer."""
        kad = await self._dht()
        target = PeerId.from_string(peer)
        addrs, source = await kad.find_peer_addrs(target)
        if not addrs:
            raise DialError(f"the DHT knows no addresses of {peer}")
        out = [str(a.with_peer_id(target)) for a in addrs]
        self._emit(ev.Found(peer=peer, addrs=out, source=source))
        return out

    # -- the relay keeper (relaykeeper.py decides; this runs its actions) ----------------------

    def _keep_relays(self, relays: list[str], failed: set[str], *, given: bool,
                     grace: float, wanted: bool = True) -> None:
        """Hand `relays` (reserved by listen(); those in `failed` not yet) to the keeper; the
        goal: one per given relay, else `RELAYS_FROM_DHT`. `wanted` False: we are publicly
        reachable and listen() reserved nowhere; the keeper reserves when that changes."""
        host = self._require_host()
        now = time.monotonic()
        first = self._keeper is None
        if self._keeper is None:
            self._keeper = RelayKeeper([], given=given, discovery=self._kad is not None,
                                       grace=grace, now=now)
        keeper = self._keeper
        keeper.track(relays, given=given, now=now, goal=None if given else RELAYS_FROM_DHT)
        actions: list[Action] = []
        if not wanted and keeper.wanted:
            keeper.set_wanted(False, now)  # its releases: of relays never reserved on
            reason = "publicly reachable (AutoNAT): relay reservations are not needed"
            log.info("listen: %s", reason)
            self._emit(ev.RelaysNeeded(needed=False, reason=reason))
        for addr in relays if wanted else []:
            peer = str(Multiaddr(addr).peer_id())
            actions += keeper.down(peer, now) if addr in failed else keeper.reserved(peer, now)
        if first:
            from . import events as hev

            on = host.events.on
            on(hev.ReservationMade, lambda e: self._keeper_input("reserved", str(e.info.relay)))
            on(hev.ReservationLost, lambda e: self._keeper_input("down", str(e.relay)))
            on(hev.RelayError, lambda e: self._keeper_input("down", str(e.relay_addr.peer_id())))
            host.spawn(self._keeper_clock())
        self._keeper_run(actions)

    def _circuit_listeners(self) -> list[Any]:
        from .transports.circuit import CircuitListener

        return self._require_host().listeners(CircuitListener)

    def _keeper_input(self, what: str, peer: str) -> None:
        keeper = self._keeper
        if keeper is None or self._closed or not keeper.knows(peer):
            return
        now = time.monotonic()
        self._keeper_run(keeper.reserved(peer, now) if what == "reserved"
                         else keeper.down(peer, now))

    async def _keeper_clock(self) -> None:
        """Wakes the keeper when a grace ends (a timer: `tick` decides, not the wait)."""
        while self._keeper is not None:
            now = time.monotonic()
            deadline = self._keeper.next_deadline(now)
            self._keeper_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keeper_wake.wait(),
                                       None if deadline is None else max(0.0, deadline - now))
            self._keeper_run(self._keeper.tick(time.monotonic()))

    def _keeper_run(self, actions: Sequence[Action]) -> None:
        host = self._require_host()
        for a in actions:
            if isinstance(a, Reserve):
                log.info("relay keeper: reserving on %s (%s)", a.addr, a.reason)
                self._emit(ev.RelayAdded(relay=a.addr, reason=a.reason))
                host.spawn(self._keeper_reserve(a.addr))
            elif isinstance(a, Release):
                log.info("relay keeper: releasing relay %s (%s)", a.peer, a.reason)
                host.spawn(self._keeper_release(a))
            elif isinstance(a, FindRelays):
                host.spawn(self._keeper_find(a.count))
            else:
                again = ("looking for another relay in the DHT" if self._kad is not None else
                         "no DHT to find another relay in (Node(bootstrap=...))")
                log.warning("relay keeper: relay %s unreachable for %.0f s: %s; still retrying "
                            "it", a.peer, a.down_s, again)
                self._emit(ev.RelayLost(relay=a.addr, down_s=a.down_s))
                self._emit(ev.Warning(reason=f"relay unreachable for {a.down_s:.0f} s: {again}",
                                      relay=a.peer))
        self._keeper_wake.set()

    async def _keeper_reserve(self, addr: str) -> None:
        host = self._require_host()
        peer = Multiaddr(addr).peer_id()
        if peer is not None:
            self._tracker.relays.add(peer)
        try:
            await host.listen_via_relay(addr, RESERVATION_TIMEOUT)
        except (P2PError, OSError, TimeoutError) as e:
            # the listener's RelayError told the keeper already; it retries in the background
            log.info("relay keeper: no reservation on %s yet: %s", addr, e or type(e).__name__)

    async def _keeper_release(self, release: Release) -> None:
        host = self._require_host()
        peer = release.peer
        for lis in self._circuit_listeners():
            if str(lis.relay_peer) == peer:
                await host.stop_listening(lis)
        # (after the listener closed: its addresses have left addrs())
        self._emit(ev.RelayReleased(relay=release.addr, reason=release.reason))
        relay = PeerId.from_string(peer)
        riding = [c for c in host.connections() if c.transport == "circuit"
                  and c.remote_addr.relay_peer() == relay]
        info = host.peerstore.peek(relay)
        from .protocols.autonat_core import DIAL_REQUEST

        autonat = info is not None and DIAL_REQUEST in info.protocols
        if riding or autonat:
            # relayed connections ride on it, or AutoNAT's re-checks ask it: the reservation
            # lapses at its expiry instead (not refreshed; relayed dials through it refused)
            log.info("relay keeper: the connection to %s stays (%s)", peer,
                     "relayed connections use it" if riding else "an AutoNAT server")
            return
        for c in host.connections(relay):
            await c.close()  # the relay ends our reservation with the connection

    async def _keeper_find(self, count: int) -> None:
        keeper = self._keeper
        if keeper is None:
            return
        try:
            found = await self.find_relays(count)
        except (P2PError, OSError, TimeoutError) as e:
            log.warning("relay keeper: finding relays in the DHT failed: %s", e)
            self._emit(ev.Warning(reason=f"finding relays in the DHT failed: {e}; "
                                         "trying again later", relay=None))
            self._keeper_run(keeper.find_failed(time.monotonic()))
            return
        actions = keeper.found(found, time.monotonic())
        if not any(isinstance(a, Reserve) for a in actions) and keeper.short(time.monotonic()):
            self._emit(ev.Warning(reason="the DHT knows no relay we do not use yet; trying "
                                         "again later", relay=None))
        self._keeper_run(actions)

    # -- reachability (AutoNAT v2) ----------------------------------------------------------

    async def reachability(self, addrs: Sequence[str] | None = None, *,
                           timeout: float = 15.0) -> str:
        """Our reachability by the confidence rules of go-libp2p's AutoNAT v2 client
        (`protocols/reachability_core.py`): an address is "public" once connected AutoNAT v2
        servers (`p2prtc relay` is one; go and rust peers can be) dialled it back two times
        more than they failed to, "private" the other way round, else "unknown" (one answer,
        no server, no direct address, refusals). The node keeps this current by itself once
        it has a direct address (`listen_direct`); this call asks each connected server once
        now about what is still undecided and returns the verdict (the node's: "public" when
        one of its direct addresses is). With `addrs`, a verdict on those alone (kept apart:
        `needs_relay` stays). Emits a `Reachability` event; at most `timeout` seconds."""
        self._require_host()
        if self._autonat is None or self._monitor is None:
            raise P2PError("reachability() needs Node(autonat=True)")
        servers = self._autonat.servers()
        mine = [Multiaddr(a) for a in addrs] if addrs is not None else None
        try:
            async with asyncio.timeout(timeout):
                confirmed = await self._monitor.probe_now(mine, servers)
        except TimeoutError:
            confirmed = None
        if mine is None:
            confirmed = self._monitor.confirmed
            tracked = [str(a) for a in self._monitor.tracker.addrs]
        else:
            tracked = [str(a) for a in mine]
        verdict: str = confirmed.reachability.value if confirmed is not None else "unknown"
        log.info("autonat: reachability of %s: %s (%d servers)", tracked or "no address",
                 verdict, len(servers))
        self._emit(ev.Reachability(reachability=verdict, addrs=tracked, servers=len(servers),
                                   needs_relay=self.needs_relay))
        return verdict

    def _on_verdict(self, confirmed: Any) -> None:
        """The ReachabilityMonitor's verdicts changed: `needs_relay` may flip (then the relay
        keeper hears of it), `addrs()` may gain or lose direct addresses (Listening, and the
        DHT record is republished)."""
        needed = confirmed.reachability.value != "public"
        verdict = confirmed.reachability.value
        log.info("autonat: confident verdict %s (public: %s, private: %s, unknown: %s)",
                 verdict, *([str(a) for a in group] for group in
                            (confirmed.reachable, confirmed.unreachable, confirmed.unknown)))
        flipped = needed != self._needs_relay
        self._needs_relay = needed
        self._emit(ev.Reachability(
            reachability=verdict, addrs=[str(a) for a in self._monitor.tracker.addrs],
            servers=len(self._autonat.servers()), needs_relay=needed))
        if flipped:
            self._reachability_changed()
        self._published_stale.set()
        self._tracker.addrs_maybe_changed()

    def _reachability_changed(self) -> None:
        """Called (by the AutoNAT side of the node) each time `needs_relay` flips; the relay
        keeper reacts: publicly reachable, it releases every reservation; private or unknown
        again, it reserves again (the given relays, else relays from the DHT)."""
        needed = self.needs_relay
        keeper = self._keeper
        if keeper is None or self._closed:
            log.info("reachability changed (relays needed: %s); not listening", needed)
            return
        if needed == keeper.wanted:
            return
        reason = ("publicly reachable (AutoNAT): relay reservations are not needed" if not needed
                  else "not publicly reachable (AutoNAT): reserving on relays again")
        log.info("relay keeper: %s", reason)
        self._emit(ev.RelaysNeeded(needed=needed, reason=reason))
        self._keeper_run(keeper.set_wanted(needed, time.monotonic()))

    @property
    def needs_relay(self) -> bool:
        """False only while AutoNAT v2 servers confirm one of our direct addresses public
        (`reachability()`; kept current by the node): such a peer needs no relay
        reservation. Each flip calls the relay keeper (`_reachability_changed`)."""
        return self._autonat is None or self._needs_relay

    def connections(self) -> list[Connection]:
        """Open connections to peers (not those to the relays we use)."""
        if self._host is None:
            return []
        return [self._wrap(c) for c in self._host.connections()
                if not c.is_closed and c.remote_peer not in self._tracker.relays]

    def _start_nat(self, relay_addr: Multiaddr | None) -> None:
        if self._natinfo is None:
            return
        from .protocols.natinfo import stun_server_of

        self._natinfo.start(stun_server_of(self._stun, relay_addr))

    def _wrap(self, conn: _Conn) -> Connection:
        w = self._wrappers.get(conn.id)
        if w is None:
            w = self._wrappers[conn.id] = Connection(conn, self)
        return w

    def _forget(self, conn: _Conn) -> None:
        self._wrappers.pop(conn.id, None)

    # -- events ----------------------------------------------------------------------------

    def events(self) -> AsyncIterator[ev.Event]:
        """An async iterator of the node's events (`p2prtc.api_events`), from now on until the
        node closes: `async for e in node.events(): ...`. Each call gives an independent
        iterator; create it before the actions whose events you want."""
        return _EventIterator(self)

    def _emit(self, event: ev.Event) -> None:
        stamped = _with_t(event, time.monotonic() - self._t0)
        for sub in list(self._subscribers):
            sub._put(stamped)


def _with_t(event: ev.Event, t: float) -> ev.Event:
    object.__setattr__(event, "t", t)
    return event


class _Tracker:
    """Turns host events into the API's events, with the rules of `p2prtc listen/dial`: one
    `Relayed` for the relayed connection an upgrade runs over, then one `Connected` per
    connection with its final kind, and `Disconnected`/`RelayedClosed` when it ends."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.relays: set[PeerId] = set()
        self.dial_started: dict[PeerId, float] = {}
        self._reported: set[int] = set()
        self._superseded: set[int] = set()
        self._awaiting: dict[PeerId, tuple[_Conn, asyncio.TimerHandle]] = {}
        self._upgrade_wait = 16.0
        self._listed: list[str] = []  # the addresses of the last Listening event

    def attach(self, host: Host) -> None:
        from .transports.webrtc import transport as webrtc_transport

        # as peerapp.UPGRADE_WAIT: the dialer's whole /webrtc dial, and a little more
        self._upgrade_wait = webrtc_transport.DIAL_TIMEOUT + 2.0
        from . import events as hev

        self.host = host
        on = host.events.on
        on(hev.ConnectionOpened, lambda e: self._on_connection(e.connection))
        on(hev.ConnectionClosed, lambda e: self._on_disconnection(e.connection))
        on(hev.ReservationMade, lambda e: self._on_reservation(e.info))
        on(hev.NatDetected, lambda e: self.node._emit(ev.Nat(**e.behaviour.to_dict())))
        on(hev.NatPeerLearned, lambda e: self.node._emit(
            ev.NatPeer(peer=str(e.peer), **e.behaviour.to_dict(), ruled_out=e.ruled_out)))
        on(hev.ReservationLost, lambda e: self.node._emit(ev.Warning(
            reason=f"relay connection lost: {e.reason}; reserving again",
            relay=str(e.relay) if e.relay is not None else None)))
        on(hev.RelayError, lambda e: self.node._emit(ev.Warning(
            reason=f"relay: {e.reason}; retrying", relay=str(e.relay_addr))))
        on(hev.HostWarning, lambda e: self.node._emit(ev.Warning(reason=e.reason)))
        on(hev.WebRTCFailed, lambda e: self._on_webrtc_failed(e.peer, e.reason))
        on(hev.ListenAddrsChanged, lambda e: self._on_addrs_changed())
        on(hev.PathChanged, lambda e: self.node._emit(ev.PathChanged(
            peer=str(e.connection.remote_peer), path=str(e.connection.details.path),
            candidate_pair=e.connection.details.candidate_pair_dict())))

    def _on_connection(self, conn: _Conn) -> None:
        peer = conn.remote_peer
        if peer in self.relays:
            # ours to a relay; one from it is an AutoNAT dial-back (no news for the user)
            if conn.direction == "outbound":
                self.node._emit(ev.RelayConnected(relay=str(conn.remote_addr.with_peer_id(peer))))
            return
        if conn.transport != "circuit":
            self.report_connected(conn)
            return
        self.node._emit(ev.Relayed(peer=str(peer), addr=str(conn.remote_addr),
                                   limit=conn.details.limit_dict()))
        if any(not c.limited and c.transport != "circuit" for c in self.host.connections(peer)):
            # a direct connection is up already (the losing attempt of a raced dial): this
            # relayed one ends as `RelayedClosed`, never `Connected`
            self._superseded.add(conn.id)
            return
        if conn.direction == "inbound":
            if not self.node._webrtc.listening:
                self.report_connected(conn)
                return
            old = self._awaiting.pop(peer, None)
            if old is not None:
                old[1].cancel()
            timer = asyncio.get_running_loop().call_later(self._upgrade_wait, self._overdue, conn)
            self._awaiting[peer] = (conn, timer)

    def _overdue(self, conn: _Conn) -> None:
        entry = self._awaiting.get(conn.remote_peer)
        if entry is not None and entry[0] is conn:
            del self._awaiting[conn.remote_peer]
            self.report_connected(conn)

    def _on_webrtc_failed(self, peer: PeerId, reason: str) -> None:
        if self.host.best_connection(peer) is not None:
            # a direct connection came through another upgrade (a dialer racing addresses
            # through several relays cancels the others): no failure to report
            log.info("a WebRTC upgrade from %s failed (%s); a direct connection stays", peer,
                     reason)
            return
        self.node._emit(ev.Error(reason=reason, peer=str(peer)))
        entry = self._awaiting.pop(peer, None)
        if entry is not None:
            entry[1].cancel()
            self.report_connected(entry[0])

    def report_connected(self, conn: _Conn) -> None:
        if conn.id in self._reported or conn.is_closed:
            return
        peer = conn.remote_peer
        relayed = conn.transport == "circuit"
        if not relayed:
            entry = self._awaiting.pop(peer, None)
            if entry is not None:
                entry[1].cancel()
            self._superseded.update(c.id for c in self.host.connections(peer)
                                    if c.transport == "circuit")
        self._reported.add(conn.id)
        ms = conn.details.upgrade_ms
        if ms is None and peer in self.dial_started:
            ms = (time.perf_counter() - self.dial_started[peer]) * 1000
        path = "relay" if relayed else (conn.details.path or "direct")
        self.node._emit(ev.Connected(
            peer=str(peer), addr=str(conn.remote_addr),
            transport="relay" if relayed else conn.transport, direct=path == "direct",
            path=path, ms=round(ms, 1) if ms is not None else None,
            candidate_pair=conn.details.candidate_pair_dict()))

    def _on_disconnection(self, conn: _Conn) -> None:
        self.node._forget(conn)
        peer = conn.remote_peer
        if peer in self.relays:
            return
        reason = conn.end_reason or "closed"
        entry = self._awaiting.get(peer)
        if entry is not None and entry[0] is conn:
            del self._awaiting[peer]
            entry[1].cancel()
        self._reported.discard(conn.id)
        if conn.id in self._superseded:
            self._superseded.discard(conn.id)
            self.node._emit(ev.RelayedClosed(peer=str(peer), reason=reason))
        else:
            kind = "relay" if conn.transport == "circuit" else conn.transport
            self.node._emit(ev.Disconnected(peer=str(peer), reason=reason, transport=kind))

    def _on_reservation(self, info: Any) -> None:
        self.relays.add(info.relay)
        self.node._emit(ev.Reservation(relay=str(info.relay), expires=info.expires))
        self._listening()

    def _on_addrs_changed(self) -> None:
        # addresses come with a reservation (above); say when some went (a relay lost)
        if set(self._listed) - set(self.node.addrs()):
            self._listening()

    def addrs_maybe_changed(self) -> None:
        """AutoNAT confirmed (or no longer confirms) direct addresses: Listening if addrs()
        is not what the last one said."""
        if self._listed != self.node.addrs():
            self._listening()

    def _listening(self) -> None:
        addrs = self._listed = self.node.addrs()
        browser = [a for a in addrs if _browser_dialable(Multiaddr(a))]
        self.node._emit(ev.Listening(addrs=addrs, browser_addrs=browser))
