"""The wrtc engine: Chrome's libwebrtc (PyPI `wrtc`, import name `webrtc`) behind engine_base's
PeerConnection/DataChannel interface. The only module that touches wrtc.

What differs from the aiortc engine (engine.py) and how it is mapped:
- libwebrtc trickles by itself: the offer/answer leaves with no candidates and every candidate
  (host, server-reflexive from each STUN server, relay from each TURN server) comes from its
  `icecandidate` events, which `local_candidates()` yields; its end-of-gathering (null) ends it.
  TCP candidates are dropped: libp2p /webrtc addresses are UDP, and aiortc/js ignore them anyway.
- Candidate pairs are prioritised by libwebrtc (host > srflx > relay), so no RELAY_HOLDBACK.
- libwebrtc gathers for ~40 s when a server never answers. As engine.py, we give STUN servers
  STUN_TIMEOUT and TURN servers TURN_TIMEOUT, then end local_candidates(); a server that did not
  help by then (or that libwebrtc reports in `icecandidateerror`) is one warning per process.
  libwebrtc drops a server-reflexive candidate equal to a host one (no NAT), so whether a STUN
  server answers is told by one binding request of our own (`_probe_stun`).
- `close()` of an RTCPeerConnection fires no events (W3C): we report "closed" to on_state and close
  our channel wrappers ourselves.
- libwebrtc says "disconnected" after ~2.5 s without consent but "failed" only ~30 s later; a
  connection disconnected for DISCONNECTED_GRACE is reported as "failed" (aiortc_compat gives aiortc
  ~10 s too).
- A remote peer that closes leaves `connectionState` at "connected" (W3C: only our own close()
  makes it "closed"); ICE says "disconnected" ~5 s later. What libwebrtc does tell at once: a
  DTLS close_notify (libwebrtc, Chromium, aiortc send one) turns the RTCDtlsTransport and
  RTCSctpTransport "closed"; an SCTP SHUTDOWN/ABORT alone (node-datachannel sends only that, and
  in most of our runs nothing at all: then only ICE tells) closes every open data channel, and
  nothing else. So each connection keeps one data channel of its own open, `negotiated` (no
  DATA_CHANNEL_OPEN: the peer never learns of it, nothing is sent on it) on a stream id of our
  DTLS role's parity (RFC 8832 6.1: the peer never picks one of those), the highest the
  association allows (`WATCH_SIDS`), opened once SCTP is up; its close, or either transport's,
  before our own close() means the peer ended the association: we report "closed", as aiortc
  does, and release the connection (`_watch_transports`).
- Events reach Python through wrtc's per-loop mailbox; its `dropped` counter must never move
  (a dropped record could be a message). We check it whenever a connection closes and log an error
  (and warn through on_warning) if it did: `mailbox_dropped()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import webrtc
from aioice import stun as aioice_stun

from ...errors import ProtocolError
from .engine import (BUFFERED_HIGH, BUFFERED_LOW, STUN_TIMEOUT, TURN_TIMEOUT, CandidatePair,
                     EarlyMessageBuffer, IceServer)

log = logging.getLogger(__name__)

VERSION = importlib.metadata.version("wrtc")
# Pinned (pyproject `fast` extra): wrtc is beta, its API may change between versions.
TESTED_VERSION = "0.1.0"
VERSION_TEXT = f"libwebrtc through wrtc {VERSION}"
if VERSION != TESTED_VERSION:
    log.warning("wrtc %s is not the tested version %s", VERSION, TESTED_VERSION)

# RFC 8489's initial retransmission timeout (doubling), as aioice.
STUN_PROBE_RTO = 0.5
# libwebrtc reports "disconnected" ~5 s after the peer stops answering (5 unanswered pings over
# 5 s: a dead peer, not loss); we call it failed this much later: ~8 s from the peer's death to
# the report (issue 12 asks for 10 s; aiortc_compat.CONSENT_TIMEOUT is the same on aiortc).
DISCONNECTED_GRACE = 2.5
# Our association watch channel takes the highest stream id of our parity below this (or
# below the association's max_channels when smaller): libwebrtc's stream count
# (cricket::kMaxSctpStreams = 1024). The DTLS client takes even ids, the server odd ones (RFC 8832
# 6.1), so the peer never opens a channel on ours.
WATCH_SIDS = 1024
WATCH_LABEL = "p2prtc-association-watch"
# As the answerer, our connectivity checks wait (we hold the remote candidates) until the
# offerer's checks reach us, i.e. until it has our answer, or this long after our answer. The
# answer goes over the relayed connection, our checks go direct: under load they overtook it, and
# node-datachannel (js-libp2p in Node) then closed its peer connection (~1 dial in 4 with a busy
# core; test_python_and_node_both_ways[wrtc-js]). Measured, not a spec value: 0.3 s removed it.
# Only while set_answer_hold has not said the offerer needs none (the transport tells from its
# identify agent: p2prtc and Chromium take early checks; transport.needs_answer_hold).
ANSWER_HOLD = 0.3

_unhelpful_reported: set[str] = set()
_CONSEQUENCE = {
    "STUN": "this side offers no server-reflexive candidate, so a direct path through NATs "
            "may fail",
    "TURN": "no relay candidate from it",
}
_drops_seen = 0
# Peer connections made in this process (tests check that this engine was the one used).
connections_made = 0


def self_check() -> str | None:
    """None when the native engine works here: a peer connection and a data channel can be made
    (loads libwebrtc and starts its threads, ~10 ms; no network). Else why not."""
    pc = webrtc.RTCPeerConnection()
    try:
        ch = pc.create_data_channel("self-check")
        if ch.ready_state != "connecting" or pc.signaling_state != "stable":
            return f"unexpected states {ch.ready_state}/{pc.signaling_state}"
    finally:
        pc.close()
    return None


def mailbox_dropped() -> int:
    """Records wrtc's mailbox of the running loop has dropped (0 unless something is wrong)."""
    try:
        from webrtc.utils import loops
        dropped: int = loops.LoopState.of(asyncio.get_running_loop()).mailbox.dropped
        return dropped
    except (ImportError, AttributeError, RuntimeError):
        return 0


def _text(value: Any) -> str:
    # wrtc gives enums (their .value is the W3C string) where aiortc gives str
    text: str = getattr(value, "value", value)
    return text


class WrtcDataChannel(EarlyMessageBuffer):
    """engine_base.DataChannel on a wrtc RTCDataChannel."""

    def __init__(self, channel: webrtc.RTCDataChannel,
                 forget: Callable[[WrtcDataChannel], None] | None = None) -> None:
        self._ch = channel
        self._forget = forget
        self._ch.buffered_amount_low_threshold = BUFFERED_LOW
        self._start_buffering()
        self.on_close: Callable[[], None] | None = None
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        if _text(channel.ready_state) == "open":
            self._opened.set()
        channel.on("open", lambda _e: self._opened.set())
        channel.on("message", self._message)
        channel.on("close", lambda _e: self._close())
        channel.on("bufferedamountlow", lambda _e: self._drained.set())

    @property
    def id(self) -> int | None:
        return self._ch.id

    @property
    def label(self) -> str:
        return self._ch.label

    @property
    def ready_state(self) -> str:
        if self._closed.is_set():
            return "closed"
        return _text(self._ch.ready_state)

    @property
    def buffered_amount(self) -> int:
        return self._ch.buffered_amount

    def _message(self, event: webrtc.MessageEvent) -> None:
        data = event.data
        if isinstance(data, webrtc.Blob):  # only with binary_type "blob", which we never set
            raise TypeError("wrtc delivered a Blob: binary_type must stay 'arraybuffer'")
        self._deliver(data)

    def _close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._opened.set()  # wake anyone waiting to open
        self._drained.set()
        if self._forget is not None:
            self._forget(self)
        if self.on_close is not None:
            self.on_close()

    async def wait_open(self) -> bool:
        await self._opened.wait()
        return self.ready_state == "open"

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def send(self, data: bytes) -> None:
        try:
            self._ch.send(data)
        except webrtc.InvalidStateError as e:
            raise ConnectionError(f"data channel {self.id} is {self.ready_state}: {e}") from None

    async def drain(self) -> None:
        """Wait until the queued amount is below the high-water mark."""
        while self._ch.buffered_amount > BUFFERED_HIGH and self.ready_state == "open":
            self._drained.clear()
            await self._drained.wait()

    def close(self) -> None:
        if self.ready_state not in ("closing", "closed"):
            self._ch.close()


class WrtcPeerConnection:
    """engine_base.PeerConnection on a wrtc RTCPeerConnection (libwebrtc trickles natively)."""

    def __init__(self, ice_servers: list[str | IceServer],
                 on_warning: Callable[[str], None] | None = None) -> None:
        global connections_made
        connections_made += 1
        servers = [s if isinstance(s, IceServer) else IceServer.parse(s) for s in ice_servers]
        self._servers = servers
        config = webrtc.RTCConfiguration(ice_servers=[
            webrtc.RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
            for s in servers])
        self._pc = webrtc.RTCPeerConnection(config)
        self.on_datachannel: Callable[[WrtcDataChannel], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self.on_warning = on_warning
        self.on_path: Callable[[], None] | None = None
        self._channels: set[WrtcDataChannel] = set()  # open ones, closed with the connection
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._reported_state: str | None = None
        self._trickle: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
        self._types: set[str] = set()
        self._helped: set[str] = set()  # server URLs that gave a candidate
        self._answered: set[IceServer] = set()  # STUN servers that answered our probe
        self._remote_hosts: dict[int, str] = {}  # port -> address of signaled remote candidates
        self._described = False
        self._trickle_ended = False
        self._gathered = asyncio.Event()  # libwebrtc's gathering is complete
        self._deadline: asyncio.Task[None] | None = None
        self._disconnected: asyncio.TimerHandle | None = None
        self._watched: Any = None  # the RTCSctpTransport whose states we follow
        self._watch_channel: webrtc.RTCDataChannel | None = None
        self._hold_until: float | None = None  # answerer: remote candidates wait (ANSWER_HOLD)
        self._checked_by_peer = asyncio.Event()  # ICE left "new": the offerer's checks came
        self._hold_released = asyncio.Event()  # set_answer_hold(False): the offerer needs none
        self._releasing: asyncio.Future[None] | None = None
        self._drops_at_start = mailbox_dropped()
        self._pc.on("icecandidate", self._icecandidate)
        self._pc.on("icecandidateerror", self._icecandidateerror)
        self._pc.on("datachannel", self._datachannel)
        self._pc.on("iceconnectionstatechange", self._ice_state)
        self._pc.on("connectionstatechange",
                    lambda _e: self._state(_text(self._pc.connection_state)))

    @property
    def connection_state(self) -> str:
        if self._reported_state in ("failed", "closed"):
            return self._reported_state
        return _text(self._pc.connection_state)

    # -- events ------------------------------------------------------------------------------

    def _wrap(self, channel: webrtc.RTCDataChannel) -> WrtcDataChannel:
        ch = WrtcDataChannel(channel, forget=self._channels.discard)
        self._channels.add(ch)
        return ch

    def _datachannel(self, event: webrtc.RTCDataChannelEvent) -> None:
        ch = self._wrap(event.channel)
        if self.on_datachannel is not None:
            self.on_datachannel(ch)
        else:
            log.debug("closing data channel %r: nobody to take it", ch.label)
            ch.close()

    def _state(self, state: str) -> None:
        if self._reported_state in ("failed", "closed"):
            return  # final (we may have called it failed before libwebrtc does)
        log.debug("peer connection state: %s", state)
        if self._disconnected is not None:
            self._disconnected.cancel()
            self._disconnected = None
        if state == "disconnected":
            self._disconnected = asyncio.get_running_loop().call_later(
                DISCONNECTED_GRACE, self._state, "failed")
        if state == "connected":
            self._watch_transports()
            self._connected.set()
        elif state in ("failed", "closed"):
            self._ended.set()
            self._connected.set()
            self._check_drops()
        if state == self._reported_state:
            return
        self._reported_state = state
        if self.on_state is not None:
            self.on_state(state)
        if state in ("failed", "closed"):
            for ch in list(self._channels):
                ch._close()

    def _ice_state(self, _event: Any) -> None:
        if _text(self._pc.ice_connection_state) != "new":
            self._checked_by_peer.set()

    def _watch_transports(self) -> None:
        """Follow the SCTP and DTLS transports (they exist once the SDP is negotiated); once the
        association is up, open the watch channel. When one of them closes or fails, the
        connection has ended, whatever connectionState says (module docstring)."""
        sctp = self._pc.sctp
        if sctp is None or sctp is self._watched:
            return
        self._watched = sctp
        dtls = sctp.transport
        sctp.on("statechange", lambda _e: self._transport_state("SCTP", _text(sctp.state)))
        dtls.on("statechange", lambda _e: self._transport_state("DTLS", _text(dtls.state)))
        # libwebrtc often starts on a TURN pair and moves to a direct one ~0.1-1 s later
        dtls.ice_transport.on("selectedcandidatepairchange", lambda _e: self._path_changed())
        # a state reached before we listened (the peer may close right after connecting)
        self._transport_state("SCTP", _text(sctp.state))
        self._transport_state("DTLS", _text(dtls.state))

    def _path_changed(self) -> None:
        if self.on_path is None or self._ended.is_set():
            return
        try:  # (runs inside wrtc's event dispatch: nothing may escape into it)
            self.on_path()
        except Exception:  # noqa: BLE001 - a pair read while the connection ends
            log.debug("reading the new candidate pair failed", exc_info=True)

    def _open_watch_channel(self, max_channels: int | None) -> None:
        """Once the association is up (its stream count negotiated): a channel on the highest
        stream id of our parity that it allows (a channel opened while SCTP was still
        connecting sometimes ended the association with node-datachannel)."""
        sid = self._watch_sid(max_channels)
        if self._watch_channel is not None or sid is None:
            return
        try:
            watch = self._pc.create_data_channel(
                WATCH_LABEL, webrtc.RTCDataChannelInit(negotiated=True, id=sid))
        except (webrtc.OperationError, webrtc.InvalidStateError, ValueError, TypeError) as e:
            log.debug("no association watch channel (%s): a peer that leaves is noticed by ICE", e)
            return
        self._watch_channel = watch
        watch.on("close", lambda _e: self._transport_state("SCTP association", "closed"))

    def _watch_sid(self, max_channels: int | None) -> int | None:
        """The watch channel's stream id: the highest below `max_channels` (WATCH_SIDS when
        unknown) of our DTLS role's parity (RFC 8832 6.1), from the negotiated a=setup
        (active = DTLS client); None before both descriptions are set."""
        local, remote = self._pc.local_description, self._pc.remote_description
        if local is None or remote is None:
            return None
        ours, theirs = _setup_attr(local.sdp), _setup_attr(remote.sdp)
        if ours == "active" or (ours == "actpass" and theirs == "passive"):
            parity = 0  # DTLS client: even ids
        elif ours == "passive" or (ours == "actpass" and theirs == "active"):
            parity = 1
        else:
            return None
        top = min(max_channels or WATCH_SIDS, WATCH_SIDS) - 1
        sid = top if top % 2 == parity else top - 1
        return sid if sid >= 0 else None

    def _transport_state(self, which: str, state: str) -> None:
        if which == "SCTP" and state == "connected" and self._watched is not None:
            self._open_watch_channel(self._watched.max_channels)
        if state not in ("closed", "failed") or self._reported_state in ("failed", "closed"):
            return
        log.debug("%s transport %s: the peer ended the connection", which, state)
        self._state("failed" if state == "failed" else "closed")
        if self._releasing is None:
            # only close() releases libwebrtc's ICE sockets and threads' hold on the connection
            self._releasing = asyncio.ensure_future(self.close())
            self._releasing.add_done_callback(_log_release_error)

    def _icecandidate(self, event: webrtc.RTCPeerConnectionIceEvent) -> None:
        cand = event.candidate
        if cand is None:
            self._gathered.set()
            if self._deadline is None:
                self._end_trickle()
            return
        if not cand.candidate:
            return  # end of one generation; the null candidate ends gathering
        if event.url:
            self._helped.add(event.url)
        if _text(cand.protocol) != "udp":
            return
        self._types.add(_text(cand.type))
        if self._trickle_ended:
            log.debug("candidate after the gathering deadline, not trickled: %s", cand.candidate)
            return
        init: dict[str, object] = dict(cand.to_json())
        self._trickle.put_nowait(init)

    def _icecandidateerror(self, event: webrtc.RTCPeerConnectionIceErrorEvent) -> None:
        server = self._server_for(event.url)
        if server is None:
            return
        why = f"error {event.error_code}" + (f": {event.error_text}" if event.error_text else "")
        self._unhelpful(server, why, _CONSEQUENCE[server.kind])

    def _server_for(self, url: str | None) -> IceServer | None:
        if not url:
            return None
        for s in self._servers:
            if url == s.url or url.split("?")[0] == s.url.split("?")[0]:
                return s
        try:
            parsed = IceServer.parse(url)
        except ValueError:
            return None
        key = (parsed.host, parsed.port, parsed.scheme)
        return next((s for s in self._servers if (s.host, s.port, s.scheme) == key), None)

    def _unhelpful(self, server: IceServer, why: str, consequence: str) -> None:
        """Say once per process that a STUN/TURN server failed us (later: debug level)."""
        if self._ended.is_set():
            return
        text = f"{server.kind} server {server.url} did not help ({why}): {consequence}"
        if server.url in _unhelpful_reported:
            log.debug("%s", text)
            return
        _unhelpful_reported.add(server.url)
        log.warning("%s", text)
        if self.on_warning is not None:
            self.on_warning(text)

    async def _gather_deadline(self) -> None:
        """libwebrtc keeps gathering for ~40 s when a server never answers; we, as engine.py,
        give STUN servers STUN_TIMEOUT and TURN servers TURN_TIMEOUT, report those that gave no
        candidate by then (once per process) and end local_candidates()."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        kinds = {s.kind for s in self._servers}
        probes = [asyncio.ensure_future(self._probe_stun(s)) for s in self._servers
                  if s.kind == "STUN"]
        for kind, deadline in (("STUN", STUN_TIMEOUT), ("TURN", TURN_TIMEOUT)):
            if kind not in kinds:
                continue
            wait = started + deadline - loop.time()
            if wait > 0 and not self._gathered.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._gathered.wait()
            if kind == "STUN" and probes:
                await asyncio.gather(*probes)  # each ends by STUN_TIMEOUT
            helped = {self._server_for(u) for u in self._helped} | self._answered
            for s in self._servers:
                if s.kind == kind and s not in helped:
                    self._unhelpful(s, f"no answer within {deadline:.0f} s", _CONSEQUENCE[kind])
        self._end_trickle()

    async def _probe_stun(self, server: IceServer) -> None:
        """libwebrtc drops a server-reflexive candidate equal to a host candidate (no NAT), so
        "no srflx candidate" does not mean "no answer": one binding request of our own tells."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                with contextlib.suppress(ValueError):
                    msg = aioice_stun.parse_message(data)
                    if msg.transaction_id == request.transaction_id and not answered.done():
                        answered.set_result(True)

        request = aioice_stun.Message(message_method=aioice_stun.Method.BINDING,
                                      message_class=aioice_stun.Class.REQUEST)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                Client, remote_addr=(server.host, server.port))
        except OSError as e:
            log.debug("STUN probe of %s: %s", server.url, e)
            return
        try:
            rto = STUN_PROBE_RTO
            async with asyncio.timeout(STUN_TIMEOUT):
                while not answered.done():
                    transport.sendto(bytes(request))
                    await asyncio.wait({answered}, timeout=rto)  # retransmission timer
                    rto *= 2
            self._answered.add(server)
        except TimeoutError:
            pass
        finally:
            transport.close()

    def _end_trickle(self) -> None:
        if not self._trickle_ended:
            self._trickle_ended = True
            self._trickle.put_nowait(None)

    def _check_drops(self) -> None:
        global _drops_seen
        dropped = mailbox_dropped()
        if dropped > max(self._drops_at_start, _drops_seen):
            _drops_seen = dropped
            text = (f"wrtc's event mailbox dropped {dropped - self._drops_at_start} records: "
                    "messages may have been lost")
            log.error("%s", text)
            if self.on_warning is not None:
                self.on_warning(text)

    # -- the interface -----------------------------------------------------------------------

    async def wait_connected(self) -> bool:
        await self._connected.wait()
        return self.connection_state == "connected"

    def create_channel(self, label: str = "") -> WrtcDataChannel:
        init = webrtc.RTCDataChannelInit(ordered=True)
        return self._wrap(self._pc.create_data_channel(label, init))

    def _local_sdp(self) -> str:
        self._described = True
        if self._deadline is None and self._servers:
            self._deadline = asyncio.ensure_future(self._gather_deadline())
        description = self._pc.local_description
        if description is None:  # (set by the setLocalDescription just before)
            raise ProtocolError("no local description")
        return description.sdp

    async def create_offer(self) -> str:
        """Our offer SDP (no candidates yet: they all trickle, `local_candidates`)."""
        await self._pc.set_local_description(await self._pc.create_offer())
        return self._local_sdp()

    async def accept_offer(self, sdp: str) -> str:
        try:
            self._remember_sdp(sdp)
            await self._pc.set_remote_description(
                webrtc.RTCSessionDescriptionInit(type="offer", sdp=sdp))
        except (webrtc.OperationError, webrtc.InvalidAccessError, webrtc.InvalidStateError,
                ValueError, TypeError) as e:
            raise ProtocolError(f"unusable SDP offer: {e}") from None
        await self._pc.set_local_description(await self._pc.create_answer())
        self._hold_until = asyncio.get_running_loop().time() + ANSWER_HOLD
        self._watch_transports()
        return self._local_sdp()

    async def accept_answer(self, sdp: str) -> None:
        try:
            self._remember_sdp(sdp)
            await self._pc.set_remote_description(
                webrtc.RTCSessionDescriptionInit(type="answer", sdp=sdp))
        except (webrtc.OperationError, webrtc.InvalidAccessError, webrtc.InvalidStateError,
                ValueError, TypeError) as e:
            raise ProtocolError(f"unusable SDP answer: {e}") from None
        self._watch_transports()

    async def local_candidates(self) -> AsyncIterator[dict[str, object] | None]:
        """Our candidates as RTCIceCandidate.toJSON() dicts; the last item is None."""
        if not self._described:
            return
        while True:
            item = await self._trickle.get()
            yield item
            if item is None:
                return

    async def add_candidate(self, init: Any) -> None:
        """Add a remote candidate given as RTCIceCandidate.toJSON(); None/"" ends the list."""
        if init is None or init == "":
            return  # js never ends the list; we rely on our own deadline instead
        if not isinstance(init, dict) or not isinstance(init.get("candidate"), str):
            raise ProtocolError(f"ICE candidate is not an RTCIceCandidateInit: {str(init)[:100]}")
        if init["candidate"] == "":
            return
        mid = init.get("sdpMid")
        index = init.get("sdpMLineIndex")
        if not isinstance(mid, (str, type(None))) or not isinstance(index, (int, type(None))):
            raise ProtocolError(f"ICE candidate with a bad sdpMid/sdpMLineIndex: {str(init)[:100]}")
        if mid is None and index is None:
            index = 0
        self._remember_remote(init["candidate"])
        await self._hold_for_answer()
        try:
            await self._pc.add_ice_candidate(webrtc.RTCIceCandidateInit(
                candidate=init["candidate"], sdp_mid=mid, sdp_m_line_index=index))
        except (webrtc.OperationError, webrtc.InvalidStateError, TypeError, ValueError) as e:
            raise ProtocolError(
                f"unusable ICE candidate {init['candidate'][:100]!r}: {e}") from None

    async def _hold_for_answer(self) -> None:
        """As the answerer: wait until the offerer's checks came, ANSWER_HOLD has passed or
        set_answer_hold(False) says this offerer needs no hold."""
        if (self._hold_until is None or self._checked_by_peer.is_set()
                or self._hold_released.is_set()):
            return
        wait = self._hold_until - asyncio.get_running_loop().time()
        if wait <= 0:
            return
        waits = [asyncio.ensure_future(self._checked_by_peer.wait()),
                 asyncio.ensure_future(self._hold_released.wait())]
        try:
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _remember_sdp(self, sdp: str) -> None:
        for line in sdp.splitlines():
            if line.startswith("a=candidate:"):
                self._remember_remote(line[2:])

    def _remember_remote(self, candidate: str) -> None:
        fields = candidate.split()  # candidate:<foundation> <component> <proto> <prio> <addr> <port>
        if len(fields) >= 6 and fields[5].isdigit():
            self._remote_hosts.setdefault(int(fields[5]), fields[4])

    def selected_pair(self) -> CandidatePair | None:
        sctp = self._pc.sctp
        if sctp is None:
            return None
        pair = sctp.transport.ice_transport.get_selected_candidate_pair()
        if pair is None:
            return None
        lc, rc = pair.local, pair.remote
        remote_host = rc.address
        if remote_host is None:
            # a peer-reflexive candidate (the remote's checks came before its candidate, or
            # from a port no candidate names: a symmetric NAT): libwebrtc hides its address
            # (W3C, in stats too); a candidate signaled since with that port tells it
            remote_host = self._remote_hosts.get(rc.port) if rc.port is not None else None
        if lc.address is None:
            return None
        return CandidatePair(_text(lc.type), _hostport(lc.address, lc.port), _text(rc.type),
                             _hostport(remote_host, rc.port) if remote_host else "")

    def local_candidate_types(self) -> list[str]:
        return sorted(self._types)

    def set_answer_hold(self, hold: bool) -> None:
        """engine_base.PeerConnection.set_answer_hold: False ends the ANSWER_HOLD wait (now or
        to come); True (the default) keeps it."""
        if hold:
            self._hold_released.clear()
        else:
            self._hold_released.set()

    async def close(self) -> None:
        self._ended.set()
        if self._deadline is not None and not self._deadline.done():
            self._deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deadline
        self._pc.close()
        self._end_trickle()
        self._state("closed")


def _setup_attr(sdp: str) -> str | None:
    """The a=setup value of an SDP (RFC 4145; one m-section for /webrtc)."""
    for line in sdp.splitlines():
        if line.startswith("a=setup:"):
            return line[len("a=setup:"):].strip()
    return None


def _log_release_error(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("releasing a peer connection the peer closed: %s", task.exception())


def _hostport(host: str | None, port: int | None) -> str:
    host = host or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
