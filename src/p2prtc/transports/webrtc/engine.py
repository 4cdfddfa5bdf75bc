"""The WebRTC engine behind one small interface (aiortc today).

Everything above this module (stream layer, muxer, signaling) talks to `PeerConnection` and
`DataChannel` only, so a faster engine (libdatachannel, say) can replace aiortc here without
touching them. aiortc specifics worth knowing:
- it does not trickle: the local description it returns carries every candidate;
- it never offers 127.0.0.1 as a host candidate, so a loopback-only host has no candidates;
- until told that remote candidates have ended it keeps waiting for more, so callers set their own
  deadline for ICE.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from ...errors import ProtocolError

log = logging.getLogger(__name__)

# aioice checks consent (RFC 7675) every 5 s and gives up after 6 misses: a vanished peer would
# take 30 s to notice. Check every 2 s, give up after 5 misses (~10 s), as a chat user expects.
# Process-wide settings of aioice 0.13 (module constants read at each check).
import aioice.ice as _aioice_ice  # noqa: E402

_aioice_ice.CONSENT_INTERVAL = 2
_aioice_ice.CONSENT_FAILURES = 5


def _patch_triggered_checks() -> None:
    """RFC 8445 7.3.1.4: a check received for a pair whose own check is in progress triggers a
    new check at once. aioice 0.13 waits for its retransmission timer instead (500 ms), which
    behind NATs is exactly when our first check was dropped (the remote's NAT had no mapping
    yet). We resend the in-flight request immediately; its answer completes the transaction."""
    original = _aioice_ice.Connection.check_incoming
    in_progress = _aioice_ice.CandidatePair.State.IN_PROGRESS

    def check_incoming(self, message, addr, protocol):
        original(self, message, addr, protocol)
        try:
            for pair in self._check_list:
                if pair.protocol is protocol and pair.remote_addr == addr \
                        and pair.state == in_progress:
                    for tx in list(protocol.transactions.values()):
                        if tx._Transaction__addr == addr:
                            protocol.send_stun(tx._Transaction__request, addr)
        except AttributeError:  # a different aioice: keep its own behaviour
            pass

    _aioice_ice.Connection.check_incoming = check_incoming


_patch_triggered_checks()


# SCTP delayed acknowledgement (RFC 4960 6.2): acknowledge every second packet, or within
# SACK_DELAY of the first unacknowledged one, and at once when there are gaps or duplicates.
# aiortc 1.16 acknowledges every packet, and the SACK work on both ends was the largest cost of a
# bulk transfer in our profiles (building, sending, and at the sender parsing and walking the
# sent queue for each one).
SACK_DELAY = 0.02


def _patch_delayed_sack() -> None:
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    if not hasattr(cls, "_send_sack") or not hasattr(cls, "_handle_data"):
        return  # a different aiortc: leave it alone
    send_now = cls._send_sack

    async def send_sack(self) -> None:
        timer = getattr(self, "_p2prtc_sack_timer", None)
        if self._sack_misordered or self._sack_duplicates \
                or getattr(self, "_p2prtc_unacked", 0) >= 1:
            self._p2prtc_unacked = 0
            if timer is not None:
                timer.cancel()
                self._p2prtc_sack_timer = None
            await send_now(self)
            return
        self._p2prtc_unacked = 1
        if timer is None:
            def fire() -> None:
                self._p2prtc_sack_timer = None
                if self._sack_needed and self._association_state == cls.State.ESTABLISHED:
                    self._p2prtc_unacked = 1
                    asyncio.ensure_future(send_sack(self))

            self._p2prtc_sack_timer = asyncio.get_running_loop().call_later(SACK_DELAY, fire)

    cls._send_sack = send_sack


_patch_delayed_sack()


def _patch_reopened_stream_ids() -> None:
    """A DATA_CHANNEL_OPEN on a stream id aiortc still holds trips an `assert` inside aiortc's
    SCTP receive path, which ends the whole connection (seen once in ~55 browser streams: the
    browser reused the id of a channel it had closed before our side's reset completed). A
    closing channel on that id is finished on the spot; an open one is kept and the new open
    ignored, so only that one stream fails."""
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    original = getattr(cls, "_data_channel_receive", None)
    dcep, channel_open = getattr(sctp, "WEBRTC_DCEP", None), getattr(sctp, "DATA_CHANNEL_OPEN", None)
    if original is None or dcep is None or channel_open is None:
        return

    async def receive(self, stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == dcep and data and data[0] == channel_open:
            existing = self._data_channels.get(stream_id)
            if existing is not None:
                if existing.readyState in ("closing", "closed"):
                    self._data_channel_inbound_reset.discard(stream_id)
                    self._data_channel_outbound_reset.discard(stream_id)
                    self._data_channels.pop(stream_id, None)
                    existing._setReadyState("closed")
                else:
                    log.info("ignoring a data channel open on stream %d: already in use", stream_id)
                    return
        await original(self, stream_id, pp_id, data)

    cls._data_channel_receive = receive


_patch_reopened_stream_ids()

# Above this many bytes queued on a channel, writers wait (TESTING.md: pause above ~1 MiB,
# resume at ~256 KiB).
BUFFERED_HIGH = 1 << 20
BUFFERED_LOW = 256 * 1024


# Messages that arrive on a remote-opened channel before its stream exists are kept (the remote
# may write its multistream proposal at once); beyond this the channel is closed (js: 16 KiB).
MAX_EARLY_MESSAGES = 16
MAX_EARLY_BYTES = 64 * 1024


class DataChannel:
    """An RTCDataChannel: send bytes, learn about messages, open, close and drain."""

    def __init__(self, channel) -> None:
        self._ch = channel
        self._ch.bufferedAmountLowThreshold = BUFFERED_LOW
        self._on_message: Callable[[bytes], None] | None = None
        self._early: list[bytes] | None = []
        self._early_bytes = 0
        self.on_close: Callable[[], None] | None = None
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        if channel.readyState == "open":
            self._opened.set()
        channel.on("open", self._opened.set)
        channel.on("message", self._message)
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

    def _message(self, data) -> None:
        if isinstance(data, str):
            data = data.encode()
        if self._on_message is not None:
            self._on_message(data)
        elif self._early is not None:
            self._early.append(data)
            self._early_bytes += len(data)
            if len(self._early) > MAX_EARLY_MESSAGES or self._early_bytes > MAX_EARLY_BYTES:
                log.info("closing data channel %s: too much data before its stream opened",
                         self._ch.id)
                self._early = None
                self.close()

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


def ice_servers_from_urls(urls: list[str]) -> list[RTCIceServer]:
    return [RTCIceServer(urls=u) for u in urls]


class PeerConnection:
    """An RTCPeerConnection with just what libp2p's /webrtc needs."""

    def __init__(self, ice_servers: list[str]) -> None:
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers_from_urls(ice_servers)))
        self.on_datachannel: Callable[[DataChannel], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._pc.on("datachannel", self._datachannel)
        self._pc.on("connectionstatechange", self._state)

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    def _datachannel(self, channel) -> None:
        ch = DataChannel(channel)
        if self.on_datachannel is not None:
            self.on_datachannel(ch)
        else:
            log.debug("closing data channel %r: nobody to take it", channel.label)
            ch.close()

    def _state(self) -> None:
        state = self._pc.connectionState
        log.debug("peer connection state: %s", state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._ended.set()
            self._connected.set()
        if self.on_state is not None:
            self.on_state(state)

    async def wait_connected(self) -> bool:
        await self._connected.wait()
        return self._pc.connectionState == "connected"

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def create_channel(self, label: str = "") -> DataChannel:
        return DataChannel(self._pc.createDataChannel(label, ordered=True))

    async def create_offer(self) -> str:
        """Our offer SDP, with all our candidates (gathering finishes first)."""
        offer = await self._pc.createOffer()
        await self._pc.setLocalDescription(offer)
        return self._pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Apply the remote offer; return our answer SDP with all our candidates."""
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, AssertionError) as e:
            raise ProtocolError(f"unusable SDP offer: {e}") from None
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        return self._pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except (ValueError, AssertionError) as e:
            raise ProtocolError(f"unusable SDP answer: {e}") from None

    async def add_candidate(self, init: Any) -> None:
        """Add a remote candidate given as RTCIceCandidate.toJSON(); None/"" ends the list."""
        if init is None or init == "":
            return  # js never ends the list; we rely on our own deadline instead
        if not isinstance(init, dict) or not isinstance(init.get("candidate"), str):
            raise ProtocolError(f"ICE candidate is not an RTCIceCandidateInit: {str(init)[:100]}")
        text = init["candidate"]
        if text == "":
            return  # end of this generation of candidates
        if text.startswith("candidate:"):
            text = text[len("candidate:"):]
        try:
            cand = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError) as e:
            raise ProtocolError(f"unparsable ICE candidate {text[:100]!r}: {e}") from None
        cand.sdpMid = init.get("sdpMid")
        cand.sdpMLineIndex = init.get("sdpMLineIndex")
        if cand.sdpMid is None and cand.sdpMLineIndex is None:
            cand.sdpMLineIndex = 0
        await self._pc.addIceCandidate(cand)

    def selected_pair(self) -> CandidatePair | None:
        try:
            conn = self._pc.sctp.transport.transport._connection
            pair = conn._nominated.get(1)
        except AttributeError:
            return None
        if pair is None:
            return None
        lc, rc = pair.local_candidate, pair.remote_candidate
        return CandidatePair(lc.type, f"{lc.host}:{lc.port}", rc.type, f"{rc.host}:{rc.port}")

    def local_candidate_types(self) -> list[str]:
        try:
            conn = self._pc.sctp.transport.transport._connection
            return sorted({c.type for c in conn.local_candidates})
        except AttributeError:
            return []

    async def close(self) -> None:
        await self._pc.close()
        self._ended.set()
        self._connected.set()


def candidate_json(line: str, mid: str = "0", mline: int = 0) -> str:
    """An `a=candidate:` value as RTCIceCandidate.toJSON() text."""
    return json.dumps({"candidate": f"candidate:{line}", "sdpMid": mid, "sdpMLineIndex": mline})
