"""The WebRTC engine interface, and the choice between the engines that implement it.

Two engines implement `PeerConnection`/`DataChannel` below:
- "aiortc": `engine.py` (aiortc + aioice, pure Python SCTP/DTLS; our trickle and TURN on top);
- "wrtc": `engine_wrtc.py` (Chrome's libwebrtc through the PyPI package `wrtc`, optional extra
  `p2prtc[fast]`; ICE, DTLS and SCTP run natively on libwebrtc's threads).

`make_peer_connection(ice_servers, on_warning, engine=None)` is the one place peer connections are
made. The engine is the argument, else `P2PRTC_ENGINE`, else "auto": wrtc when it imports and
passes a self-check, else aiortc. webrtc-direct always uses aiortc (DEVELOPERS.md says why).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

# re-exported: what callers of either engine use
from .engine import BUFFERED_HIGH as BUFFERED_HIGH  # (re-exported: the engines' shared names)
from .engine import BUFFERED_LOW as BUFFERED_LOW
from .engine import CandidatePair as CandidatePair
from .engine import IceServer as IceServer

log = logging.getLogger(__name__)

ENGINES = ("aiortc", "wrtc")
ENGINE_CHOICES = ("auto", *ENGINES)
ENV_VAR = "P2PRTC_ENGINE"


@runtime_checkable
class DataChannel(Protocol):
    """An ordered, reliable RTCDataChannel carrying bytes.

    on_message gets every message in order; messages that arrive before it is set are kept
    (bounded, see engine.MAX_EARLY_MESSAGES) and delivered when it is. send() queues and never
    drops; writers call drain() to wait while buffered_amount is above BUFFERED_HIGH (woken by the
    engine's bufferedamountlow event at BUFFERED_LOW)."""

    on_close: Callable[[], None] | None
    on_message: Callable[[bytes], None] | None

    @property
    def id(self) -> int | None: ...
    @property
    def label(self) -> str: ...
    @property
    def ready_state(self) -> str: ...
    @property
    def buffered_amount(self) -> int: ...
    async def wait_open(self) -> bool: ...
    async def wait_closed(self) -> None: ...
    def send(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class PeerConnection(Protocol):
    """An RTCPeerConnection with what libp2p's /webrtc needs.

    create_offer/accept_offer return the SDP to send at once; every candidate not in it comes out
    of local_candidates() as RTCIceCandidate.toJSON() dicts, ending with None."""

    on_datachannel: Callable[[Any], None] | None
    on_state: Callable[[str], None] | None
    on_warning: Callable[[str], None] | None
    # ICE selected another candidate pair (engines that say so: wrtc; aiortc never switches):
    # selected_pair() tells which
    on_path: Callable[[], None] | None

    @property
    def connection_state(self) -> str: ...
    def create_channel(self, label: str = "") -> DataChannel: ...
    async def create_offer(self) -> str: ...
    async def accept_offer(self, sdp: str) -> str: ...
    async def accept_answer(self, sdp: str) -> None: ...
    async def add_candidate(self, init: Any) -> None: ...
    # RTCIceCandidate.toJSON() dicts (candidate, sdpMid, sdpMLineIndex), then None
    def local_candidates(self) -> AsyncIterator[dict[str, object] | None]: ...
    async def wait_connected(self) -> bool: ...
    def selected_pair(self) -> CandidatePair | None: ...  # remote_addr "" when unknown
    def local_candidate_types(self) -> list[str]: ...
    # As the answerer: whether our connectivity checks must wait for the offerer's (it has our
    # answer then). True until told (the remote's stack unknown); False releases a wait at once.
    # The transport decides from the remote's identify agent (transport.needs_answer_hold).
    def set_answer_hold(self, hold: bool) -> None: ...
    async def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """The engine asked for cannot run here (not installed, or its self-check failed)."""


_checked: dict[str, str | None] = {}  # engine -> None (works) or why not
_announced = False


def wrtc_problem() -> str | None:
    """Why the wrtc engine cannot run here, or None when it can (checked once per process)."""
    if "wrtc" not in _checked:
        try:
            from . import engine_wrtc
            _checked["wrtc"] = engine_wrtc.self_check()
        except ImportError as e:
            _checked["wrtc"] = f"not installed ({e}; pip install 'p2prtc[fast]')"
        except Exception as e:  # noqa: BLE001 - a beta native library can fail in many ways
            _checked["wrtc"] = f"self-check failed: {type(e).__name__}: {e}"
    return _checked["wrtc"]


def resolve_engine(engine: str | None = None) -> str:
    """The engine to use: `engine`, else $P2PRTC_ENGINE, else auto (wrtc if it works)."""
    name = (engine or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in ENGINE_CHOICES:
        raise ValueError(f"unknown WebRTC engine {name!r} "
                         f"(choose from {', '.join(ENGINE_CHOICES)})")
    if name == "auto":
        return "aiortc" if wrtc_problem() else "wrtc"
    if name == "wrtc":
        problem = wrtc_problem()
        if problem:
            raise EngineUnavailable(f"WebRTC engine wrtc: {problem}")
    return name


def describe_engine(engine: str | None = None) -> str:
    """One line saying which engine `engine` resolves to and why (for the CLI's start)."""
    name = resolve_engine(engine)
    if name == "wrtc":
        from . import engine_wrtc
        return f"WebRTC engine: wrtc ({engine_wrtc.VERSION_TEXT})"
    asked = (engine or os.environ.get(ENV_VAR) or "auto").strip().lower()
    why = f"; wrtc: {wrtc_problem()}" if asked == "auto" else ""
    return f"WebRTC engine: aiortc{why}"


def make_peer_connection(ice_servers: list[str | IceServer],
                         on_warning: Callable[[str], None] | None = None,
                         engine: str | None = None) -> PeerConnection:
    """A new peer connection on the chosen engine (see resolve_engine)."""
    global _announced
    name = resolve_engine(engine)
    if not _announced:
        _announced = True
        log.info("%s", describe_engine(engine))
    if name == "wrtc":
        from .engine_wrtc import WrtcPeerConnection
        return WrtcPeerConnection(ice_servers, on_warning=on_warning)
    from .engine import PeerConnection as AiortcPeerConnection
    return AiortcPeerConnection(ice_servers, on_warning=on_warning)


def choose_engine(engine: str | None = None) -> str:
    """For a command's start: resolve `engine` (None: $P2PRTC_ENGINE, else auto), make it this
    process's choice (and its children's, through $P2PRTC_ENGINE), and return the line saying which.
    Raises EngineUnavailable/ValueError when the engine asked for cannot be used."""
    text = describe_engine(engine)
    os.environ[ENV_VAR] = resolve_engine(engine)
    global _announced
    _announced = True
    return text
