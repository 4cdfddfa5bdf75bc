"""A lab peer: a p2prtc Host with the /webrtc transport, run inside a peer's namespace, reporting
what happens as JSON lines on stdout (one object per line, each with "event" and "t").

    python -m p2prtc.lab.agent listen [RELAY_MULTIADDR] [--stun URL]
    python -m p2prtc.lab.agent dial [PEER_MULTIADDR] [--pings N] [--bytes N] [--chat TEXT]
                                    [--file-bytes N]
    --turn auto|none (both): TURN credentials from the relay in use (default), or no TURN

Without the multiaddr the first stdin line gives it, so the process can start (and import aiortc)
before the address is known.

`listen` reserves on the relay, prints `listening {addrs}`, reports connections, and answers every
chat message with "ack: <message>" (so the dialer sees chat work both ways). It runs until stdin
ends or SIGTERM.

Both run NAT detection against their STUN server (`--stun`, else the relay's) and report
`nat {mapping, filtering, type, public, server}`; peers exchange it before signalling
(`nat-peer {peer, ..., ruled_out}`), and a pair theory rules out fails the dial at once.

`dial` dials the /webrtc address and reports:
`direct {ms, path, turn_relay, candidate_pair, ...}` (a non-limited WebRTC connection, path
"direct" or "turn") or `no-direct {ms, reason}`; `rtt {path, ms}` over the relayed and over the
WebRTC connection; `throughput` over it (/perf/1.0.0 upload); `file {ok, bytes, sha256, ...}` (a
file of --file-bytes random bytes over /p2prtc/file/1.0.0: the listener checks its SHA-256 and
confirms it, reporting `file-received`); `chat {ok, via}`; then `done` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..connection import Connection
from ..errors import DialError, P2PError
from ..events import ConnectionClosed, ConnectionOpened, NatDetected, NatPeerLearned, WebRTCFailed
from ..host import Host, default_transports
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.chat import ChatService
from ..protocols.filetransfer import FileResult, FileService
from ..protocols.natinfo import NatInfoService, stun_server_of
from ..protocols.perf import PerfService
from ..transports.webrtc.engine_base import PeerConnection
from ..transports.webrtc.muxer import DataChannelMuxer
from ..transports.webrtc.transport import WebRTCTransport
from .procs import stop_on_signals

# A report or an event of this agent: JSON for the lab, read by key.
Json = dict[str, Any]

log = logging.getLogger("p2prtc.lab.agent")

RESERVATION_TIMEOUT = 20.0
CHAT_TIMEOUT = 10.0
STEP_TIMEOUT = 60.0
# libwebrtc nominates the first pair that works (sometimes the TURN one, whose checks beat the
# hole punching) and moves to a better one as its checks succeed, within ~1 s in the lab. The
# path reported is where the connection settled: waiting at most this long after the connection
# for a pair through TURN to be replaced.
PATH_SETTLE = 2.0
PATH_POLL = 0.1


class Emitter:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, event: str, **fields: object) -> None:
        sys.stdout.write(json.dumps({"event": event, "t": round(time.monotonic() - self.t0, 3),
                                     **fields}) + "\n")
        sys.stdout.flush()


def conn_info(conn: Connection) -> Json:
    return {"peer": str(conn.remote_peer), "transport": conn.transport, "limited": conn.limited,
            "direction": conn.direction, "remote_addr": str(conn.remote_addr),
            "candidate_pair": conn.details.candidate_pair_dict(),
            "path": conn.details.path, "turn_relay": conn.details.turn_relay}


class LabPeer:
    def __init__(self, ice_servers: list[str] | None, turn: str = "auto") -> None:
        self.emit = Emitter()
        self.host = Host(transports=[
            functools.partial(WebRTCTransport, ice_servers=ice_servers, turn=turn),
            *default_transports()])
        self.webrtc = self.host.transport(WebRTCTransport)
        self.ice_servers = ice_servers
        self.natinfo = NatInfoService(self.host)
        self.webrtc.natinfo = self.natinfo
        self.perf = PerfService(self.host)
        self.chat = ChatService(self.host, self._on_message)
        self.files_dir = tempfile.TemporaryDirectory(prefix="p2plab-files-")
        self.files = FileService(self.host, Path(self.files_dir.name),
                                 on_received=self._on_file)
        self.messages: asyncio.Queue[tuple[PeerId, str]] = asyncio.Queue()
        self.replying = False
        on = self.host.events.on
        on(ConnectionOpened, lambda e: self.emit("connected", **conn_info(e.connection)))
        on(ConnectionClosed, lambda e: self.emit(
            "disconnected", **conn_info(e.connection), reason=e.connection.close_reason))
        on(WebRTCFailed, lambda e: self.emit("webrtc-failed", peer=str(e.peer), reason=e.reason))
        on(NatDetected, lambda e: self.emit("nat", **e.behaviour.to_dict()))
        on(NatPeerLearned, lambda e: self.emit(
            "nat-peer", peer=str(e.peer), **e.behaviour.to_dict(), ruled_out=e.ruled_out))

    def detect_nat(self, relay: Multiaddr | None) -> None:
        self.natinfo.start(stun_server_of(self.ice_servers, relay))

    def _on_file(self, r: FileResult) -> None:
        self.emit("file-received", peer=str(r.peer), bytes=r.size, sha256=r.sha256,
                  seconds=round(r.seconds, 3))
        if r.path is not None:
            r.path.unlink(missing_ok=True)

    def _on_message(self, peer: PeerId, text: str) -> None:
        stream = self.chat.streams.get(peer)
        conn = stream.connection if stream is not None else None
        via = conn.transport if conn is not None else None
        self.emit("message", peer=str(peer), text=text, via=_via(via))
        if self.replying:
            self.host.spawn(self._reply(peer, text))
        else:
            self.messages.put_nowait((peer, text))

    async def _reply(self, peer: PeerId, text: str) -> None:
        try:
            await self.chat.send(peer, f"ack: {text}")
        except (P2PError, OSError) as e:
            self.emit("error", reason=f"chat reply failed: {e}")

    async def listen(self, relay: str) -> None:
        self.replying = True
        self.detect_nat(Multiaddr(relay))
        await self.host.listen("/webrtc")
        await self.host.listen_via_relay(Multiaddr(relay), RESERVATION_TIMEOUT)
        addrs = [str(a.with_peer_id(self.host.peer_id)) for a in self.host.listen_addrs
                 if a.has("webrtc")]
        self.emit("listening", addrs=addrs)

    async def dial(self, target: str, pings: int, nbytes: int, chat_text: str,
                   file_bytes: int = 0) -> Json:
        addr = Multiaddr(target)
        peer = addr.peer_id()
        if peer is None:
            raise DialError(f"the target needs /p2p/<peer>: {target}")
        summary: Json = {"direct": False}
        relay_part = addr.split_last("p2p-circuit")
        self.detect_nat(relay_part[0] if relay_part is not None else None)
        self.emit("dialing", addr=target)
        t0 = time.perf_counter()
        direct: Connection | None = None
        try:
            conn = await self.host.dial(addr)
            ms = (time.perf_counter() - t0) * 1000
            if conn.transport == "webrtc" and not conn.limited:
                direct = conn
                d = conn.details
                # without a candidate pair (libwebrtc: a peer-reflexive remote whose candidate
                # has not been signalled yet) the path is not known here; the listener may know
                path = d.path if d.candidate_pair else None
                summary.update(direct=True, ms=round(ms, 1), path=path,
                               turn_relay=d.turn_relay,
                               candidate_pair=d.candidate_pair_dict(),
                               relayed_ms=_r(d.relayed_ms), upgrade_ms=_r(d.upgrade_ms))
                self.emit("direct", **summary, remote_addr=str(conn.remote_addr))
            else:
                summary.update(ms=round(ms, 1), reason=f"dial gave a {conn.transport} connection")
                self.emit("no-direct", ms=summary["ms"], reason=summary["reason"])
        except DialError as e:
            ms = (time.perf_counter() - t0) * 1000
            summary.update(ms=round(ms, 1), reason=str(e))
            self.emit("no-direct", ms=summary["ms"], reason=str(e))

        relayed = next((c for c in self.host.connections(peer) if c.limited and not c.is_closed),
                       None)
        summary["relayed_connection"] = relayed is not None
        mine = await self.natinfo.own_behaviour()
        summary["nat"] = mine.to_dict() if mine is not None else None
        theirs = self.natinfo.peers.get(peer)
        summary["peer_nat"] = theirs.to_dict() if theirs is not None else None
        rtt: dict[str, float] = {}
        for path, on in (("relay", relayed), ("direct", direct)):
            if on is None:
                continue
            rtts = None
            for attempt in (1, 2):  # with --loss a stream set-up can lose to SCTP's 1 s RTO
                try:
                    rtts = await asyncio.wait_for(self.host.ping_service.ping(on, pings),
                                                  STEP_TIMEOUT)
                    break
                except (TimeoutError, P2PError, OSError) as e:
                    self.emit("error", reason=f"ping over the {path} connection failed "
                                              f"(attempt {attempt}): {e or type(e).__name__}")
            if rtts is None:
                continue
            ms_list = [round(r * 1000, 2) for r in rtts]
            rtt[path] = round(statistics.median(ms_list), 2)
            self.emit("rtt", path=path, ms=ms_list, median=rtt[path])
        summary["rtt_ms"] = rtt

        if direct is not None and nbytes > 0:
            try:
                r = await asyncio.wait_for(self.perf.run(direct, nbytes, 0), STEP_TIMEOUT)
                secs = r["upload_s"] + r["download_s"]
                summary["throughput"] = {"bytes": nbytes, "seconds": round(secs, 3),
                                         "MBps": round(nbytes / secs / 1e6, 2)}
                self.emit("throughput", **summary["throughput"])
            except (TimeoutError, P2PError, OSError) as e:
                self.emit("error", reason=f"throughput test failed: {e!r}")
        if direct is not None and file_bytes > 0:
            summary["file"] = await self._send_file(peer, file_bytes)

        summary["chat"] = await self._chat_roundtrip(peer, chat_text) if chat_text else None
        if direct is not None:
            await self._settled_path(direct, summary)
        return summary

    async def _settled_path(self, conn: Connection, summary: Json) -> None:
        """The selected pair once the connection settled (see PATH_SETTLE): `path`,
        `turn_relay` and `candidate_pair` from it; the ones at connection time stay as
        `path_at_connect` / `candidate_pair_at_connect`."""
        summary["path_at_connect"] = summary.get("path")
        summary["candidate_pair_at_connect"] = summary.get("candidate_pair")
        muxer = conn.muxer
        pc = muxer.pc if isinstance(muxer, DataChannelMuxer) else None
        if not isinstance(pc, PeerConnection):  # (a direct connection is a /webrtc one)
            return
        deadline = conn.opened_at + PATH_SETTLE
        while True:
            pair = pc.selected_pair()
            if pair is not None and "relay" not in (pair.local_type, pair.remote_type):
                break
            if time.monotonic() >= deadline or conn.is_closed:
                break
            await asyncio.sleep(PATH_POLL)
        if pair is None:
            return
        summary["candidate_pair"] = {"local": pair.local_type, "remote": pair.remote_type,
                                     "local_addr": pair.local_addr,
                                     "remote_addr": pair.remote_addr}
        if "relay" in (pair.local_type, pair.remote_type):
            via = pair.local_addr if pair.local_type == "relay" else pair.remote_addr
            summary["path"], summary["turn_relay"] = "turn", via.rpartition(":")[0].strip("[]")
        else:
            summary["path"], summary["turn_relay"] = "direct", None
        if summary["path"] != summary["path_at_connect"]:
            self.emit("path-changed", path=summary["path"], turn_relay=summary["turn_relay"],
                      candidate_pair=summary["candidate_pair"],
                      was=summary["path_at_connect"])

    async def _send_file(self, peer: PeerId, size: int) -> Json:
        """`size` random bytes as a file; FileService.send checks the receiver's SHA-256."""
        path = Path(self.files_dir.name) / "lab-file.bin"
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                block = os.urandom(min(left, 1 << 20))
                digest.update(block)
                f.write(block)
                left -= len(block)
        try:
            r = await asyncio.wait_for(self.files.send(peer, path), STEP_TIMEOUT)
        except (TimeoutError, P2PError, OSError) as e:
            result = {"ok": False, "bytes": size, "error": str(e) or type(e).__name__}
        else:
            result = {"ok": r.sha256 == digest.hexdigest(), "bytes": size, "sha256": r.sha256,
                      "seconds": round(r.seconds, 3), "MBps": round(size / r.seconds / 1e6, 2)}
        finally:
            path.unlink(missing_ok=True)
        self.emit("file", **result)
        return result

    async def _chat_roundtrip(self, peer: PeerId, text: str) -> Json:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self.chat.send(peer, text), CHAT_TIMEOUT)
            stream = self.chat.streams.get(peer)
            conn = stream.connection if stream is not None else None
            via = _via(conn.transport) if conn is not None else None
            self.emit("sent", peer=str(peer), text=text, via=via)
            while True:
                who, got = await asyncio.wait_for(self.messages.get(), CHAT_TIMEOUT)
                if who == peer and got == f"ack: {text}":
                    break
        except (TimeoutError, P2PError, OSError) as e:
            result = {"ok": False, "error": str(e) or type(e).__name__}
        else:
            result = {"ok": True, "via": via, "ms": round((time.perf_counter() - t0) * 1000, 1)}
        self.emit("chat", **result)
        return result

    async def close(self) -> None:
        await self.host.close()
        self.files_dir.cleanup()


def _via(transport: str | None) -> str | None:
    return "relay" if transport == "circuit" else transport


def _r(v: object) -> float | None:
    return round(v, 1) if isinstance(v, (int, float)) else None


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main_async(args: argparse.Namespace) -> int:
    ice = None
    if args.stun:
        ice = [] if args.stun == ["none"] else args.stun
    peer = LabPeer(ice, args.turn)
    if ice:  # the STUN server is known before the relay: detect while we wait for the address
        peer.detect_nat(None)
    stop = asyncio.Event()
    stop_on_signals(args.mode, stop)
    try:
        reader = await _stdin_reader()
        target = args.target
        if not target:
            peer.emit("ready", peer=str(peer.host.peer_id))
            target = (await reader.readline()).decode().strip()
        if args.mode == "listen":
            await peer.listen(target)

            async def until_eof() -> None:
                while await reader.readline():
                    pass
                stop.set()

            eof = asyncio.ensure_future(until_eof())
            await stop.wait()
            eof.cancel()
            return 0
        summary = await peer.dial(target, args.pings, args.bytes, args.chat, args.file_bytes)
        peer.emit("done", **summary)
        return 0
    except (TimeoutError, P2PError, OSError, ValueError) as e:
        peer.emit("error", reason=f"{type(e).__name__}: {e}", fatal=True)
        return 1
    finally:
        await peer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.lab.agent")
    p.add_argument("mode", choices=["listen", "dial"])
    p.add_argument("target", nargs="?", help="relay (listen) or peer (dial) multiaddr; read "
                                             "from the first stdin line when absent")
    p.add_argument("--stun", action="append", help="ICE server URL (default: the relay's STUN)")
    p.add_argument("--pings", type=int, default=5)
    p.add_argument("--bytes", type=int, default=10 * 1000 * 1000)
    p.add_argument("--file-bytes", type=int, default=0,
                   help="send a file of N random bytes over WebRTC, SHA-256 checked (0 skips)")
    p.add_argument("--turn", choices=["auto", "none"], default="auto",
                   help="auto: TURN credentials from the relay in use; none: no TURN")
    p.add_argument("--chat", default="hello through the lab",
                   help="message for the chat round trip ('' skips it, e.g. with a browser listener)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main_async(args))
        return uvloop.run(main_async(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 143  # stopped by a signal, after closing the host


if __name__ == "__main__":
    sys.exit(main())
