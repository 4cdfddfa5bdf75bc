"""`/webrtc` private-to-private transport: dial `<relay>/p2p-circuit/webrtc/p2p/<peer>`, listen via
relay reservations. The relayed connection carries only the signaling; the result is a direct
WebRTC connection whose remote identity is the one authenticated on the relayed connection
(no Noise on /webrtc: the DTLS fingerprints travel in SDP over that authenticated channel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ...connection import CandidatePair, Connection
from ...errors import DialError, P2PError
from ...events import HostWarning, PathChanged, ReservationMade, WebRTCFailed
from ...multiaddr import Multiaddr
from ..base import ConnectionHandler, Listener, Transport
from ..circuit import CircuitListener
from ...identity import PeerId
from ...protocols.turn_credentials import fetch_turn_credentials
from ...resources import ConnectionScope, Direction, Refusal
from ...streams import Stream
from .engine_base import CandidatePair as SelectedPair
from .engine_base import IceServer, PeerConnection, make_peer_connection, resolve_engine
from .muxer import DataChannelMuxer
from .signaling import SIGNALING_PROTOCOL, NoDirectPath, initiate, respond

if TYPE_CHECKING:
    from ...network import Network
    from ...protocols.natinfo import NatInfoService

log = logging.getLogger(__name__)

STUN_PORT = 3478
# TURN credentials from a relay are fetched again this long before they expire; a relay that
# hands out none (js, rust) is asked again after NO_TURN_RECHECK.
TURN_REFRESH_MARGIN = 300.0
NO_TURN_RECHECK = 600.0
# The candidate pair is read again this long after connecting (see _settle_path); the NAT lab saw
# libwebrtc/Chromium move from a TURN pair to a direct one within ~1 s.
PATH_SETTLE = 2.0
# The whole dial: relayed connection, signaling and ICE (the issue asks for < 15 s).
DIAL_TIMEOUT = 14.0
MUXER_PROTOCOL = "/webrtc"


def needs_answer_hold(agent: str | None) -> bool:
    """Whether, as the answerer to an offerer of this identify agent version, our connectivity
    checks must wait for its own (engine_wrtc.ANSWER_HOLD). js-libp2p in Node (node-datachannel)
    closed its peer connection when they came before our answer did; ours (`p2prtc/`, either
    engine) and js-libp2p in Chromium (libwebrtc, `js-libp2p/<v> browser/<UA>`) take them as
    peer-reflexive (RFC 8445 7.3.1.3; test_webrtc_python, test_webrtc_browser). Unknown or
    untested stacks (Firefox, Node, Deno, Bun, Electron, other languages) are held."""
    if not agent:
        return True
    if agent.startswith("p2prtc/"):
        return False
    if agent.startswith("js-libp2p/") and " browser/" in agent:
        return "Firefox/" in agent  # only Chromium-based browsers were tested
    return True


def stun_url_for(relay_addr: Multiaddr, port: int = STUN_PORT) -> list[str]:
    """The STUN server of the relay's host: our relay serves one next to its libp2p ports."""
    for proto in ("ip4", "dns4", "dns", "dns6"):
        host = relay_addr.value_for(proto)
        if host:
            return [f"stun:{host}:{port}"]
    host = relay_addr.value_for("ip6")
    return [f"stun:[{host}]:{port}"] if host else []


def split_webrtc_addr(addr: Multiaddr) -> tuple[Multiaddr, PeerId] | None:
    """`<relay>/p2p-circuit/webrtc/p2p/<peer>` -> (relay addr, peer), else None."""
    parts = addr.split_last("p2p-circuit")
    if parts is None:
        return None
    relay, rest = parts
    peer = rest.peer_id()
    if rest.protocols() != ["webrtc", "p2p"] or relay.peer_id() is None or peer is None:
        return None
    return relay, peer


class WebRTCListener(Listener):
    """Advertises `<circuit address>/webrtc` for each relay reservation we hold."""

    def __init__(self, transport: WebRTCTransport) -> None:
        self.transport = transport

    @property
    def addrs(self) -> list[Multiaddr]:  # type: ignore[override]  # computed, never assigned
        relays = self.transport.host.listeners(CircuitListener)
        return [a.encapsulate("/webrtc") for listener in relays for a in listener.addrs]

    async def close(self) -> None:
        self.transport.stop_listening()


class WebRTCTransport(Transport):
    name = "webrtc"

    def __init__(self, host: Network, ice_servers: list[str] | None = None,
                 engine: str | None = None, turn: str | list[IceServer] = "auto") -> None:
        """ice_servers: STUN/TURN URLs; None means the STUN server of the relay in use.
        engine: "aiortc", "wrtc" or "auto"; None means $P2PRTC_ENGINE, else auto (engine_base).
        turn: "auto" asks the relay in use for TURN credentials (our relay hands them out, others
        say no in one round trip); a list of IceServers uses those; "none" (or []) uses none."""
        self.host = host
        self.ice_servers = ice_servers
        self.engine = engine
        resolve_engine(engine)  # loads the engine now, not in the first dial (wrtc: ~0.2 s)
        self.turn = turn
        self._turn_cache: dict[PeerId, tuple[list[IceServer], float]] = {}
        self._on_connection: ConnectionHandler | None = None  # set while listening
        # protocols.natinfo.NatInfoService, when the app runs NAT detection: NAT behaviours that
        # rule out a direct path end the dial before signalling (issue 10).
        self.natinfo: NatInfoService | None = None
        host.handle(SIGNALING_PROTOCOL, self._handle_signaling, allow_limited=True)
        if turn == "auto":  # a listener's first dialer need not wait for the credentials
            host.events.on(ReservationMade, lambda e: self._prefetch_turn(e.info.relay))

    def _prefetch_turn(self, relay: PeerId) -> None:
        self.host.spawn(self._turn_for(relay))

    @property
    def listening(self) -> bool:
        """True while we accept /webrtc upgrades (`listen("/webrtc")`)."""
        return self._on_connection is not None

    def stop_listening(self) -> None:
        self._on_connection = None

    async def _turn_for(self, relay: PeerId | None) -> list[IceServer]:
        """The TURN servers to use with a connection through `relay` (see `turn`)."""
        if self.turn != "auto":
            return [] if isinstance(self.turn, str) else list(self.turn)  # "none", or the list
        if relay is None:
            return []
        cached = self._turn_cache.get(relay)
        if cached is not None and cached[1] - time.time() > TURN_REFRESH_MARGIN:
            return cached[0]
        conn = self.host.best_connection(relay)  # our own (unlimited) connection to the relay
        if conn is None:
            return []
        creds = await fetch_turn_credentials(self.host, conn)
        servers: list[IceServer] = []
        urls, user, password = ((creds.urls, creds.username, creds.password) if creds
                                else ([], "", ""))
        for url in urls:
            try:
                servers.append(IceServer.parse(url, user, password))
            except ValueError as e:
                log.info("relay %s: ignoring TURN URL: %s", relay.short(), e)
        until = creds.expires if creds is not None else time.time() + NO_TURN_RECHECK
        self._turn_cache[relay] = (servers, until)
        if servers:
            log.info("TURN via relay %s: %s", relay.short(), ", ".join(s.url for s in servers))
        return servers

    def _ice_for(self, relay_addr: Multiaddr | None) -> list[str]:
        if self.ice_servers is not None:
            return list(self.ice_servers)
        return stun_url_for(relay_addr) if relay_addr is not None else []

    def _peer_connection(self, relay_addr: Multiaddr | None,
                         turn: list[IceServer]) -> PeerConnection:
        # A STUN server that does not answer costs nothing but a warning (host "warning" event):
        # our SDP leaves before any STUN answer, so the default guess of the relay's host is safe.
        return make_peer_connection([*self._ice_for(relay_addr), *turn],
                                    on_warning=lambda text: self.host.events.emit(HostWarning(text)),
                                    engine=self.engine)

    def can_dial(self, addr: Multiaddr) -> bool:
        return split_webrtc_addr(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        return addr.protocols() == ["webrtc"]

    async def listen(self, addr: Multiaddr, on_connection: ConnectionHandler) -> Listener:
        self._on_connection = on_connection
        return WebRTCListener(self)

    async def dial(self, addr: Multiaddr) -> Connection:
        split = split_webrtc_addr(addr)
        if split is None:
            raise DialError(f"not a /webrtc address: {addr}")
        relay_addr, peer = split
        t0 = time.perf_counter()
        # through this relay: each address of a raced dial (Node.dial) has its own
        relayed = self._relayed_via(relay_addr.peer_id(), peer)
        if relayed is None:
            relayed = await self.host.dial(relay_addr.encapsulate(f"/p2p-circuit/p2p/{peer}"))
        t_relayed = time.perf_counter()
        turn = asyncio.ensure_future(self._turn_for(relay_addr.peer_id()))
        try:
            reason = await self.natinfo.check(relayed) if self.natinfo is not None else None
            turn_servers = await turn
        finally:
            turn.cancel()
        if reason and not turn_servers:
            raise DialError(f"no direct WebRTC connection to {peer}: {reason}; "
                            "the relayed connection stays up")
        if reason:
            log.info("%s; trying TURN", reason)
        scope = self._reserve("outbound", peer)
        if isinstance(scope, Refusal):
            raise DialError(f"no direct WebRTC connection to {peer}: {scope.reason}; "
                            "the relayed connection stays up")
        try:
            stream = await relayed.new_stream([SIGNALING_PROTOCOL])
        except BaseException:
            scope.close()
            raise
        pc = self._peer_connection(relay_addr, turn_servers)
        muxer = DataChannelMuxer(pc, resources=scope)
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                timings = await initiate(stream, pc)
        except (TimeoutError, NoDirectPath, P2PError, OSError) as e:
            stream.reset()
            scope.close()
            await pc.close()
            reason = str(e) or "timed out"
            raise DialError(f"no direct WebRTC connection to {peer}: {reason}; "
                            "the relayed connection stays up") from None
        except BaseException:
            stream.reset()
            scope.close()
            await pc.close()
            raise
        conn = self._connection(pc, muxer, relayed, "outbound")
        conn.details.timings.update(timings)
        conn.details.relayed_ms = (t_relayed - t0) * 1000
        conn.details.upgrade_ms = (time.perf_counter() - t_relayed) * 1000
        self.host.spawn(_close_quietly(stream))
        return conn

    def _reserve(self, direction: Direction, peer: PeerId) -> ConnectionScope | Refusal:
        """The WebRTC connection's budget, in its peer's scope (p2prtc.resources); a refusal
        is logged (rate-limited) and counted."""
        resources = self.host.upgrader.resources
        result = resources.open_peer_connection(direction, peer)
        if isinstance(result, Refusal):
            line = resources.log_line(f"{direction} WebRTC connection with {peer.short()} "
                                      "refused", result)
            if line is not None:
                log.info("%s", line)
        return result

    def _relayed_via(self, relay: PeerId | None, peer: PeerId) -> Connection | None:
        """Our newest open relayed connection to `peer` through `relay`, if any."""
        conns = [c for c in self.host.connections(peer) if c.transport == "circuit"
                 and not c.going_away and c.remote_addr.relay_peer() == relay]
        return conns[-1] if conns else None

    async def _handle_signaling(self, stream: Stream) -> None:
        relayed = stream.connection
        assert relayed is not None  # set by Connection.accept_stream
        if self._on_connection is None:
            log.info("refusing WebRTC signaling from %s: not listening on /webrtc",
                     relayed.remote_peer.short())
            stream.reset()
            return
        # over a budget: the dialer's signaling stream is reset before any WebRTC work, so its
        # dial ends at once ("the peer refused the WebRTC upgrade"); the reason is logged here
        scope = self._reserve("inbound", relayed.remote_peer)
        if isinstance(scope, Refusal):
            stream.reset()
            return
        try:
            relay_addr = _relay_part(relayed.remote_addr)
            turn_servers = await self._turn_for(relay_addr.peer_id() if relay_addr else None)
        except BaseException:
            scope.close()
            raise
        t0 = time.perf_counter()
        pc = self._peer_connection(relay_addr, turn_servers)
        self._tell_answer_hold(pc, relayed)
        muxer = DataChannelMuxer(pc, resources=scope)
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                timings = await respond(stream, pc)
        except (TimeoutError, NoDirectPath, P2PError, OSError) as e:
            # no news when another upgrade already went direct (a dialer racing relays)
            superseded = self.host.best_connection(relayed.remote_peer) is not None
            log.log(logging.INFO if superseded else logging.WARNING,
                    "no direct WebRTC connection from %s: %s", relayed.remote_peer,
                    str(e) or "timed out")
            self.host.events.emit(WebRTCFailed(relayed.remote_peer, str(e) or "timed out"))
            stream.reset()
            scope.close()
            await pc.close()
            return
        except BaseException:
            stream.reset()
            scope.close()
            await pc.close()
            raise
        conn = self._connection(pc, muxer, relayed, "inbound")
        conn.details.timings.update(timings)
        conn.details.upgrade_ms = (time.perf_counter() - t0) * 1000
        on_connection = self._on_connection
        if on_connection is None:  # the listener closed during the upgrade
            await conn.close()
        else:
            await on_connection(conn)
        await _close_quietly(stream)

    def _tell_answer_hold(self, pc: PeerConnection, relayed: Connection) -> None:
        """Tell `pc` (we answer) whether the offerer needs our checks held (needs_answer_hold):
        from its agent if identify has told it already, else once identify on `relayed` does
        (pc holds until then; a failed identify leaves it holding)."""
        def tell(agent: str | None, when: str) -> None:
            hold = needs_answer_hold(agent)
            log.debug("answering %s (agent %r, %s): %s", relayed.remote_peer.short(), agent,
                      when, "our checks wait for its own" if hold else "no hold")
            pc.set_answer_hold(hold)

        info = self.host.peerstore.peek(relayed.remote_peer)
        if info is not None and info.agent_version is not None:
            tell(info.agent_version, "known")
            return

        async def after_identify() -> None:
            try:
                identified = await self.host.identified(relayed)
            except (P2PError, TimeoutError):
                return
            if identified is not None:
                tell(identified.agent_version, "from identify")

        self.host.spawn(after_identify())

    def _connection(self, pc: PeerConnection, muxer: DataChannelMuxer, relayed: Connection,
                    direction: str) -> Connection:
        pair = pc.selected_pair()
        peer = relayed.remote_peer
        remote = Multiaddr(f"/webrtc/p2p/{peer}")
        local = Multiaddr("/webrtc")
        if pair is not None:
            local = _udp_addr(pair.local_addr).encapsulate("/webrtc")
            if pair.remote_addr:  # "" when unknown (wrtc: a peer-reflexive remote)
                remote = _udp_addr(pair.remote_addr).encapsulate(f"/webrtc/p2p/{peer}")
        conn = Connection(
            muxer=muxer, remote_peer=peer, remote_public_key=relayed.remote_public_key,
            local_addr=local, remote_addr=remote, direction=direction, transport="webrtc",
            limited=False, security=None, muxer_protocol=MUXER_PROTOCOL,
        )
        note_path(conn, pair)
        conn.details.relayed_via = str(relayed.remote_addr)
        self.host.spawn(self._settle_path(conn, pc))
        return conn

    async def _settle_path(self, conn: Connection, pc: PeerConnection) -> None:
        """ICE may move to a better pair after connecting (libwebrtc and Chromium sometimes start
        on a TURN pair and switch to a direct one within a second): say so (host event
        "path-changed") when the engine tells of a new pair (wrtc), and look again once
        PATH_SETTLE after connecting (engines that do not tell)."""
        def moved() -> None:
            if not conn.is_closed and note_path(conn, pc.selected_pair()):
                self.host.events.emit(PathChanged(conn))

        pc.on_path = moved
        try:  # a timer (re-read the pair then) that ends with the connection
            await asyncio.wait_for(conn.wait_closed(), PATH_SETTLE)
            return
        except TimeoutError:
            pass
        moved()


def note_path(conn: Connection, pair: SelectedPair | None) -> bool:
    """Record the candidate pair and the path ("direct" or "turn") in conn.details; True if
    they changed. An unknown pair (wrtc: a peer-reflexive remote not signalled) keeps what was
    known, "direct" at first: a relay candidate is always signalled, so it would be known."""
    d = conn.details
    before = (d.path, d.candidate_pair)
    if d.path is None:
        d.path = "direct"
    if pair is None:
        return False
    d.candidate_pair = CandidatePair(pair.local_type, pair.remote_type, pair.local_addr,
                                     pair.remote_addr)
    if "relay" in (pair.local_type, pair.remote_type):
        # the TURN server's relayed address (ours, else the peer's)
        via = pair.local_addr if pair.local_type == "relay" else pair.remote_addr
        d.path = "turn"
        d.turn_relay = via.rpartition(":")[0].strip("[]")
    else:
        d.path = "direct"
        d.turn_relay = None
    return (d.path, d.candidate_pair) != before


async def _close_quietly(stream: Stream) -> None:
    try:
        await stream.close()
    except (P2PError, OSError) as e:
        log.debug("closing the signaling stream: %s", e)


def _udp_addr(hostport: str) -> Multiaddr:
    host, _, port = hostport.rpartition(":")
    proto = "ip6" if ":" in host else "ip4"
    return Multiaddr(f"/{proto}/{host.strip('[]')}/udp/{port}")


def _relay_part(circuit_addr: Multiaddr) -> Multiaddr | None:
    parts = circuit_addr.split_last("p2p-circuit")
    return parts[0] if parts else None
