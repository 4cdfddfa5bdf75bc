"""`/webrtc-signaling/0.0.1` (specs: webrtc/webrtc.md), both roles, wire-compatible with js-libp2p.

The initiator (A, who opened the relayed connection) creates the `init` channel and sends its
offer; the responder (B) answers; both send ICE candidates as `RTCIceCandidate.toJSON()` until
connected. Our SDP leaves at once with host candidates; server-reflexive ones follow as
ICE_CANDIDATE messages, then a null candidate (end of candidates; js accepts and skips it).
js never signals end-of-candidates, so both roles stop at our own deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from ...errors import P2PError, ProtocolError, StreamReset
from ...pb import text, webrtc_pb2
from ...streams import ByteStream, read_length_prefixed, write_length_prefixed
from .engine_base import DataChannel, PeerConnection

log = logging.getLogger(__name__)

SIGNALING_PROTOCOL = "/webrtc-signaling/0.0.1"
# SDPs with many candidates run to a few KiB; js caps signaling messages at 4 MiB? we take 64 KiB.
MAX_MESSAGE_SIZE = 64 * 1024
MAX_CANDIDATES = 64
# From the answer to a connected peer connection. STUN checks of a reachable pair succeed within
# a few hundred ms; a pair that needs 10 s is not worth waiting for when a relay is up.
ICE_TIMEOUT = 10.0
# After connecting: wait this long for the `init` channel to open and close on both sides.
INIT_CHANNEL_TIMEOUT = 5.0

Msg = webrtc_pb2.SignalingMessage


class NoDirectPath(P2PError):
    """ICE found no working candidate pair in time."""


async def _write(stream: ByteStream, kind: webrtc_pb2.SignalingMessage.Type, data: str) -> None:
    await write_length_prefixed(stream, Msg(type=kind, data=data).SerializeToString())


async def _read(stream: ByteStream) -> Msg | None:
    body = await read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True)
    if body is None:
        return None
    return decode_message(body)


def decode_message(body: bytes) -> Msg:
    """One signaling message (the bytes after its length prefix); ProtocolError if malformed."""
    msg = Msg()
    try:
        msg.ParseFromString(body)
    except Exception as e:
        raise ProtocolError(f"malformed signaling message: {e}") from None
    if msg.HasField("data"):
        msg.data = text(msg.data)  # SDP and candidates are str from here on, even if not UTF-8
    return msg


def candidate_init(msg: Msg) -> object:
    """The decoded JSON of an ICE_CANDIDATE message (an RTCIceCandidateInit if the peer is
    well-behaved; `PeerConnection.add_candidate` checks); None for an empty one."""
    if not msg.data:
        return None
    try:
        init = json.loads(msg.data)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        raise ProtocolError("ICE candidate is not JSON") from None
    return init


async def _read_candidates(stream: ByteStream, pc: PeerConnection, counts: dict[str, int]) -> None:
    """Apply trickled candidates until the stream ends (runs until cancelled)."""
    while True:
        msg = await _read(stream)
        if msg is None:
            return
        if msg.type != Msg.ICE_CANDIDATE:
            raise ProtocolError(f"expected an ICE candidate, got message type {msg.type}")
        counts["received"] = counts.get("received", 0) + 1
        if counts["received"] > MAX_CANDIDATES:
            raise ProtocolError(f"more than {MAX_CANDIDATES} ICE candidates")
        init = candidate_init(msg)
        try:
            await pc.add_candidate(init)
        except ProtocolError as e:
            log.info("ignoring remote ICE candidate: %s", e)


async def _send_candidates(stream: ByteStream, pc: PeerConnection) -> None:
    """Trickle our late candidates (runs until gathering ends or it is cancelled)."""
    async for init in pc.local_candidates():
        if pc.connection_state == "connected":
            return  # as js: candidates found after connecting are of no use
        await _write(stream, Msg.ICE_CANDIDATE, json.dumps(init))


async def _connect_with_candidates(stream: ByteStream, pc: PeerConnection, timeout: float) -> None:
    counts: dict[str, int] = {}
    reader = asyncio.ensure_future(_read_candidates(stream, pc, counts))
    writer = asyncio.ensure_future(_send_candidates(stream, pc))
    connected = asyncio.ensure_future(pc.wait_connected())
    try:
        done, _ = await asyncio.wait({connected}, timeout=timeout)
        failure = reader.exception() if reader.done() else None
        if failure is not None:
            raise failure
        if not done or not connected.result():
            local = ", ".join(pc.local_candidate_types()) or "none"
            why = ("ICE checks failed" if done else f"no ICE candidate pair worked within "
                   f"{timeout:.0f} s")
            raise NoDirectPath(f"{why} (our candidate types: {local}; remote candidates "
                               f"received: {counts.get('received', 0)} trickled)")
    finally:
        for task in (reader, writer, connected):
            task.cancel()
        await asyncio.gather(reader, writer, connected, return_exceptions=True)


async def initiate(stream: ByteStream, pc: PeerConnection, *,
                   timeout: float = ICE_TIMEOUT) -> dict[str, float]:
    """Role A. Returns timings once connected; the caller then closes the signaling stream
    (in the background: the connection is usable at once). On failure the caller resets the
    stream and closes pc."""
    t0 = time.perf_counter()
    init = pc.create_channel("init")
    offer = await pc.create_offer()
    try:
        await _write(stream, Msg.SDP_OFFER, offer)
        t_offer = time.perf_counter()
        answer = await _read(stream)
    except StreamReset:  # what a listener does when its budgets refuse us (or it is not
        # listening on /webrtc): its log says which
        raise ProtocolError("the peer refused the WebRTC upgrade (signaling stream reset "
                            "before its SDP answer)") from None
    if answer is None:
        raise ProtocolError("signaling stream ended before the SDP answer")
    if answer.type != Msg.SDP_ANSWER:
        raise ProtocolError(f"expected an SDP answer, got message type {answer.type}")
    t_answer = time.perf_counter()
    await pc.accept_answer(answer.data)
    await _connect_with_candidates(stream, pc, timeout)
    t_connected = time.perf_counter()
    # As js does: let `init` open, close it, and wait until it has closed on both sides so its
    # id is not reused too early; then close the signaling stream.
    try:
        async with asyncio.timeout(INIT_CHANNEL_TIMEOUT):
            await init.wait_open()
            init.close()
            await init.wait_closed()
    except TimeoutError:
        log.debug("init channel did not open/close in time; going on")
        init.close()
    return {"offer_ms": (t_offer - t0) * 1000, "answer_ms": (t_answer - t0) * 1000,
            "connected_ms": (t_connected - t0) * 1000}


async def respond(stream: ByteStream, pc: PeerConnection, *,
                  timeout: float = ICE_TIMEOUT) -> dict[str, float]:
    """Role B. Returns once connected; the caller closes the signaling stream in the background
    (the initiator closes `init`, then its end of the stream)."""
    t0 = time.perf_counter()
    offer = await _read(stream)
    if offer is None:
        raise ProtocolError("signaling stream ended before the SDP offer")
    if offer.type != Msg.SDP_OFFER:
        raise ProtocolError(f"expected an SDP offer, got message type {offer.type}")
    t_offer = time.perf_counter()
    answer = await pc.accept_offer(offer.data)
    await _write(stream, Msg.SDP_ANSWER, answer)
    t_answer = time.perf_counter()
    await _connect_with_candidates(stream, pc, timeout)
    t_connected = time.perf_counter()
    return {"answer_after_offer_ms": (t_answer - t_offer) * 1000,
            "connected_ms": (t_connected - t0) * 1000}


def watch_init_channel(channel: DataChannel) -> None:
    """Responder: close our end of `init` when the initiator closes (or resets) it."""
    channel.on_message = lambda _data: None
    channel.on_close = channel.close
