"""The WebRTC engine behind one small interface (aiortc today).

Everything above this module (stream layer, muxer, signaling) talks to `PeerConnection` and
`DataChannel` only, so a faster engine (libdatachannel, say) can replace aiortc here without
touching them. aiortc specifics worth knowing:
- it does not trickle: its local description waits for every STUN/TURN answer. We give it no STUN
  server (host candidates take milliseconds), send the SDP at once, and find server-reflexive
  candidates ourselves on its sockets afterwards (`PeerConnection.local_candidates`);
- it never offers 127.0.0.1 as a host candidate, so a loopback-only host has no candidates;
- until told that remote candidates have ended it keeps waiting for more, so callers set their own
  deadline for ICE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aioice import Candidate as AioiceCandidate
from aioice import Connection as IceConnection
from aioice.ice import StunProtocol, relayed_candidate, server_reflexive_candidate
from aiortc import (RTCConfiguration, RTCDataChannel, RTCIceCandidate, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.rtcicetransport import candidate_from_aioice, parse_stun_turn_uri
from aiortc import sdp as aiortc_sdp
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from ...errors import ProtocolError
from . import aiortc_compat

log = logging.getLogger(__name__)

aiortc_compat.apply()

# Above this many bytes queued on a channel, writers wait (TESTING.md: pause above ~1 MiB,
# resume at ~256 KiB).
BUFFERED_HIGH = 1 << 20
BUFFERED_LOW = 256 * 1024


# Messages that arrive on a remote-opened channel before its stream exists are kept (the remote
# may write its multistream proposal at once); beyond this the channel is closed (js: 16 KiB).
MAX_EARLY_MESSAGES = 16
MAX_EARLY_BYTES = 64 * 1024


class EarlyMessageBuffer:
    """`on_message` for a data channel of either engine: messages that arrive before anyone
    listens are kept (bounded by MAX_EARLY_*, then the channel is closed) and handed over when
    `on_message` is set. Subclasses call `_deliver` with each message and provide `id`/`close`."""

    _on_message: Callable[[bytes], None] | None = None
    _early: list[bytes] | None = None
    _early_bytes = 0

    def _start_buffering(self) -> None:
        self._on_message = None
        self._early = []
        self._early_bytes = 0

    @property
    def on_message(self) -> Callable[[bytes], None] | None:
        return self._on_message

    @on_message.setter
    def on_message(self, callback: Callable[[bytes], None] | None) -> None:
        self._on_message = callback
        early, self._early = self._early, None
        if callback is not None and early:
            for data in early:
                callback(data)

    def _deliver(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if self._on_message is not None:
            self._on_message(data)
        elif self._early is not None:
            self._early.append(data)
            self._early_bytes += len(data)
            if len(self._early) > MAX_EARLY_MESSAGES or self._early_bytes > MAX_EARLY_BYTES:
                log.info("closing data channel %s: too much data before its stream opened",
                         self.id)
                self._early = None
                self.close()

    @property
    def id(self) -> int | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class DataChannel(EarlyMessageBuffer):
    """An RTCDataChannel: send bytes, learn about messages, open, close and drain."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self._ch = channel
        self._ch.bufferedAmountLowThreshold = BUFFERED_LOW
        self._start_buffering()
        self.on_close: Callable[[], None] | None = None
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        if channel.readyState == "open":
            self._opened.set()
        channel.on("open", self._opened.set)
        channel.on("message", self._deliver)
        channel.on("close", self._close)
        channel.on("bufferedamountlow", self._drained.set)

    @property
    def id(self) -> int | None:
        return self._ch.id

    @property
    def label(self) -> str:
        return self._ch.label

    @property
    def ready_state(self) -> str:
        return self._ch.readyState

    @property
    def buffered_amount(self) -> int:
        return self._ch.bufferedAmount

    def _close(self) -> None:
        self._closed.set()
        self._opened.set()  # wake anyone waiting to open
        self._drained.set()
        if self.on_close is not None:
            self.on_close()

    async def wait_open(self) -> bool:
        await self._opened.wait()
        return self._ch.readyState == "open"

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def send(self, data: bytes) -> None:
        self._ch.send(data)

    async def drain(self) -> None:
        """Wait until the queued amount is below the high-water mark."""
        while self._ch.bufferedAmount > BUFFERED_HIGH and self._ch.readyState == "open":
            self._drained.clear()
            await self._drained.wait()

    def close(self) -> None:
        if self._ch.readyState not in ("closing", "closed"):
            self._ch.close()


@dataclass
class CandidatePair:
    local_type: str
    local_addr: str
    remote_type: str
    remote_addr: str

    def describe(self) -> str:
        return f"{self.local_type} {self.local_addr} <-> {self.remote_type} {self.remote_addr}"


# Server-reflexive candidates are gathered after the SDP has left and trickled to the remote;
# a STUN server that has not answered by then is reported (once per process) and given up on.
# aioice's own gathering waits 5 s; 3 s is ~6 retransmissions (RTO 500 ms, doubling).
STUN_TIMEOUT = 3.0
# A TURN allocation takes two round trips (401 challenge, then the signed request).
TURN_TIMEOUT = 5.0
# Relay candidates join ICE this long after gathering starts (see PeerConnection._ask_turn):
# direct pairs in the NAT lab connect in 60-160 ms, a dropped first check is resent within
# aioice's 500 ms RTO (or at once by our triggered-check patch).
RELAY_HOLDBACK = 0.5

_unanswered_reported: set[str] = set()


@dataclass(frozen=True)
class IceServer:
    """One `stun:`/`turn:`/`turns:` URL (RFC 7064/7065) with its credentials."""

    url: str
    scheme: str
    host: str
    port: int
    transport: str = "udp"
    username: str | None = None
    credential: str | None = None

    @property
    def kind(self) -> str:
        return "STUN" if self.scheme == "stun" else "TURN"

    @classmethod
    def parse(cls, url: str, username: str | None = None,
              credential: str | None = None) -> IceServer:
        try:
            parsed = parse_stun_turn_uri(url)
        except (ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"not a STUN/TURN URL: {url!r} ({e})") from None
        return cls(url, parsed["scheme"], parsed["host"], parsed["port"],
                   parsed.get("transport") or "udp", username, credential)


def parse_ice_servers(urls: list[str]) -> list[IceServer]:
    return [IceServer.parse(u) for u in urls]


def parse_sdp(sdp: str) -> None:
    """Check that aiortc can parse a remote SDP; ProtocolError if not. Its parser raises KeyError,
    IndexError, ValueError... on malformed lines (found by fuzz/targets/signaling.py), which
    setRemoteDescription would let through."""
    if not isinstance(sdp, str):
        raise ProtocolError("SDP is not text")
    try:
        aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as e:  # a third-party parser of remote input: anything it raises is "bad SDP"
        raise ProtocolError(f"unparsable SDP: {type(e).__name__}: {e}") from None


def parse_candidate(init: Any) -> RTCIceCandidate | None:
    """An aiortc RTCIceCandidate from an RTCIceCandidateInit (RTCIceCandidate.toJSON()), None
    for the end of the list (None, "", or an empty candidate); ProtocolError if unusable."""
    if init is None or init == "":
        return None  # js never ends the list; we rely on our own deadline instead
    if not isinstance(init, dict) or not isinstance(init.get("candidate"), str):
        raise ProtocolError(f"ICE candidate is not an RTCIceCandidateInit: {str(init)[:100]}")
    text = init["candidate"]
    if text == "":
        return None  # end of this generation of candidates
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    try:
        cand = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError) as e:
        raise ProtocolError(f"unparsable ICE candidate {text[:100]!r}: {e}") from None
    mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
    if not (mid is None or isinstance(mid, str)) or not (
            index is None or (isinstance(index, int) and not isinstance(index, bool))):
        raise ProtocolError(f"ICE candidate with a bad sdpMid/sdpMLineIndex: {mid!r}, {index!r}")
    cand.sdpMid = mid
    cand.sdpMLineIndex = index
    if cand.sdpMid is None and cand.sdpMLineIndex is None:
        cand.sdpMLineIndex = 0
    return cand


class PeerConnection:
    """An RTCPeerConnection with just what libp2p's /webrtc needs, trickling its candidates.

    aiortc gathers host candidates only (milliseconds), so the offer or answer leaves at once;
    server-reflexive candidates (every STUN server, on the host sockets) and relay candidates
    (every TURN server, a socket of their own added to ICE) are found afterwards and come out of
    `local_candidates()` as RTCIceCandidate.toJSON() dicts, ending with None.
    """

    def __init__(self, ice_servers: list[str | IceServer],
                 on_warning: Callable[[str], None] | None = None) -> None:
        servers = [s if isinstance(s, IceServer) else IceServer.parse(s) for s in ice_servers]
        self._stun = [s for s in servers if s.scheme == "stun"]
        self._turn = [s for s in servers if s.scheme != "stun"]
        self._unused_turn: list[StunProtocol] = []  # allocations ICE has not taken (ours to close)
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.on_datachannel: Callable[[DataChannel], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self.on_warning = on_warning
        self.on_path: Callable[[], None] | None = None  # aiortc keeps its first pair
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._trickle: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
        self._gathering: asyncio.Task[None] | None = None
        self._mid = "0"
        self._closing = False  # our own close() was called
        self._ice_lost = False  # DTLS ended because ICE did (consent expired)
        self._ice_watched = False
        self._pc.on("datachannel", self._datachannel)
        self._pc.on("connectionstatechange", self._state)

    @property
    def connection_state(self) -> str:
        if self._ice_lost and self._pc.connectionState == "closed" and not self._closing:
            return "failed"
        return self._pc.connectionState

    def _datachannel(self, channel: RTCDataChannel) -> None:
        ch = DataChannel(channel)
        if self.on_datachannel is not None:
            self.on_datachannel(ch)
        else:
            log.debug("closing data channel %r: nobody to take it", channel.label)
            ch.close()

    def _watch_ice(self) -> None:
        """aiortc reports "closed" both when the peer closed (SCTP ABORT/SHUTDOWN, DTLS
        close_notify: DTLS ends, then aiortc closes ICE) and when consent expired (aioice closes
        ICE, which ends DTLS): whether ICE was closing when DTLS ended tells them apart."""
        dtls = getattr(self._pc.sctp, "transport", None)
        if dtls is None or self._ice_watched:
            return
        self._ice_watched = True

        def changed() -> None:
            if dtls.state in ("closed", "failed") and not self._closing:
                self._ice_lost = aiortc_compat.ice_closing(aiortc_compat.ice_connection(self._pc))
        dtls.on("statechange", changed)

    def _state(self) -> None:
        state = self.connection_state  # "failed" for a "closed" that ICE caused
        log.debug("peer connection state: %s", state)
        if state == "connected":
            self._watch_ice()
            self._connected.set()
        elif state in ("failed", "closed"):
            self._ended.set()
            self._connected.set()
        if self.on_state is not None:
            self.on_state(state)

    async def wait_connected(self) -> bool:
        await self._connected.wait()
        return self._pc.connectionState == "connected"

    def create_channel(self, label: str = "") -> DataChannel:
        return DataChannel(self._pc.createDataChannel(label, ordered=True))

    async def create_offer(self) -> str:
        """Our offer SDP with our host candidates; the rest trickle (`local_candidates`)."""
        offer = await self._pc.createOffer()
        await self._pc.setLocalDescription(offer)
        return self._local_sdp()

    async def accept_offer(self, sdp: str) -> str:
        """Apply the remote offer; return our answer SDP with all our candidates."""
        parse_sdp(sdp)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, AssertionError) as e:
            raise ProtocolError(f"unusable SDP offer: {e}") from None
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        return self._local_sdp()

    def _local_sdp(self) -> str:
        """The SDP to send: aiortc marks it `a=end-of-candidates` (its gathering is over), but
        more candidates will trickle, and a peer that believed the mark would ignore them."""
        lines = self._pc.localDescription.sdp.splitlines()
        for line in lines:
            if line.startswith("a=mid:"):
                self._mid = line[len("a=mid:"):].strip()
                break
        if self._gathering is None:
            self._gathering = asyncio.ensure_future(self._gather_late())
        return "".join(f"{line}\r\n" for line in lines if line != "a=end-of-candidates")

    async def local_candidates(self) -> AsyncIterator[dict[str, object] | None]:
        """Candidates found after the SDP left, as RTCIceCandidate.toJSON() dicts; the last
        item is None (end of candidates)."""
        if self._gathering is None:
            return
        while True:
            item = await self._trickle.get()
            yield item
            if item is None:
                return

    async def _gather_late(self) -> None:
        """Server-reflexive candidates from every STUN server and a relay candidate from every
        TURN server, all at once; each is trickled as soon as it is found."""
        try:
            connection = aiortc_compat.ice_connection(self._pc)
            if connection is None:
                if self._stun or self._turn:
                    log.info("cannot trickle with this aiortc: host candidates only")
                return
            protocols = [p for p in aiortc_compat.host_protocols(connection)
                         if ":" not in p.local_candidate.host]  # STUN here is IPv4 (as aioice)
            jobs = [self._ask_stun(connection, s, protocols) for s in self._stun if protocols]
            jobs += [self._ask_turn(connection, s) for s in self._turn]
            await asyncio.gather(*jobs)
        finally:
            self._trickle.put_nowait(None)

    def _found(self, connection: IceConnection, cand: AioiceCandidate) -> None:
        known = {(c.type, c.host, c.port, c.related_address, c.related_port)
                 for c in connection.local_candidates}
        if (cand.type, cand.host, cand.port, cand.related_address, cand.related_port) in known:
            return
        aiortc_compat.add_local_candidate(connection, cand)
        self._trickle.put_nowait({
            "candidate": "candidate:" + candidate_to_sdp(candidate_from_aioice(cand)),
            "sdpMid": self._mid, "sdpMLineIndex": 0})

    def _unhelpful(self, server: IceServer, why: str, consequence: str) -> None:
        """Say once per process that a STUN/TURN server failed us (later: debug level)."""
        if self._ended.is_set():
            return
        text = f"{server.kind} server {server.url} did not help ({why}): {consequence}"
        if server.url in _unanswered_reported:
            log.debug("%s", text)
            return
        _unanswered_reported.add(server.url)
        log.warning("%s", text)
        if self.on_warning is not None:
            self.on_warning(text)

    async def _ask_stun(self, connection: IceConnection, server: IceServer,
                        protocols: list[StunProtocol]) -> None:
        """Server-reflexive candidates from one STUN server, one per host socket."""
        async def one(protocol: StunProtocol) -> AioiceCandidate:
            async with asyncio.timeout(STUN_TIMEOUT):
                cand, _ = await server_reflexive_candidate(protocol, (server.host, server.port))
            return cand

        results = await asyncio.gather(*(one(p) for p in protocols), return_exceptions=True)
        found = [c for c in results if not isinstance(c, BaseException)]
        for cand in found:
            self._found(connection, cand)
        if not found:
            failures = [e for e in results if not isinstance(e, TimeoutError)]
            self._unhelpful(server, str(failures[0]) if failures
                            else f"no answer within {STUN_TIMEOUT:.0f} s",
                            "this side offers no server-reflexive candidate, so a direct path "
                            "through NATs may fail")

    async def _ask_turn(self, connection: IceConnection, server: IceServer) -> None:
        """A relay candidate from one TURN server. It joins ICE (paired with every remote
        candidate, checked after the direct pairs) only RELAY_HOLDBACK after gathering began,
        so a direct pair whose first check a NAT dropped still wins over the relay."""
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(TURN_TIMEOUT):
                cand, protocol = await relayed_candidate(
                    component=1, hide_related_address=False,
                    protocol_factory=lambda: aiortc_compat.new_protocol(connection),
                    turn_server=(server.host, server.port), turn_username=server.username,
                    turn_password=server.credential, turn_ssl=server.scheme == "turns",
                    turn_transport=server.transport)
        except Exception as e:  # TURN errors come as many types (OSError, STUN errors, timeouts)
            why = f"no allocation within {TURN_TIMEOUT:.0f} s" if isinstance(e, TimeoutError) \
                else (str(e) or type(e).__name__)
            self._unhelpful(server, why, "no relay candidate from it")
            return
        if self._ended.is_set():
            await aiortc_compat.close_protocol(protocol)
            return
        self._unused_turn.append(protocol)  # until ICE takes it
        wait = RELAY_HOLDBACK - (asyncio.get_running_loop().time() - started)
        if wait > 0 and not self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._connected.wait()  # woken early only by success: then unused
        if self._ended.is_set():
            return  # close() closes it
        if self._connected.is_set():
            log.debug("relay candidate %s:%s not needed: connected directly", cand.host, cand.port)
        elif aiortc_compat.add_local_protocol(connection, protocol):
            self._unused_turn.remove(protocol)  # ICE closes it with the connection
            self._found(connection, cand)
            return
        self._unused_turn.remove(protocol)
        await aiortc_compat.close_protocol(protocol)

    async def accept_answer(self, sdp: str) -> None:
        parse_sdp(sdp)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except (ValueError, AssertionError) as e:
            raise ProtocolError(f"unusable SDP answer: {e}") from None

    async def add_candidate(self, init: Any) -> None:
        """Add a remote candidate given as RTCIceCandidate.toJSON(); None/"" ends the list."""
        cand = parse_candidate(init)
        if cand is not None:
            await self._pc.addIceCandidate(cand)

    def selected_pair(self) -> CandidatePair | None:
        connection = aiortc_compat.ice_connection(self._pc)
        pair = aiortc_compat.selected_pair(connection) if connection is not None else None
        if pair is None:
            return None
        lc, rc = pair
        return CandidatePair(lc.type, f"{lc.host}:{lc.port}", rc.type, f"{rc.host}:{rc.port}")

    def local_candidate_types(self) -> list[str]:
        connection = aiortc_compat.ice_connection(self._pc)
        return sorted({c.type for c in connection.local_candidates}) if connection else []

    def set_answer_hold(self, hold: bool) -> None:
        """engine_base.PeerConnection.set_answer_hold: ignored (the hold is the wrtc engine's,
        engine_wrtc.ANSWER_HOLD)."""

    async def close(self) -> None:
        self._closing = True
        self._ended.set()
        self._connected.set()
        if self._gathering is not None and not self._gathering.done():
            self._gathering.cancel()
            await asyncio.gather(self._gathering, return_exceptions=True)
        await self._pc.close()  # closes the TURN sockets ICE took; the others are ours to close
        unused, self._unused_turn = self._unused_turn, []
        for protocol in unused:
            await aiortc_compat.close_protocol(protocol)

