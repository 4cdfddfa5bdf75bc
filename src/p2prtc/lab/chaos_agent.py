"""A lab peer for `p2prtc lab chaos`, driven by JSON commands on stdin (one object a line) and
reporting JSON events on stdout, like `lab.agent` (whose `LabPeer` it extends).

    python -m p2prtc.lab.chaos_agent [--reply] [--stun URL] [--turn auto|none]

Commands (`{"cmd": ...}`):
- `listen {relay}`: reserve on the relay (`listening {addrs}` once the first reservation is
  there); every reservation after that is reported too (`reservation {relay, expires}`), and
  its loss (`reservation-lost {relay, reason}`).
- `dial {addr}`: dial a /webrtc address: `direct {ms, path, candidate_pair}` or
  `no-direct {ms, reason}`.
- `chat-start {tag, interval}`: send `<tag>-<n>;` to the peer we dialled every `interval`
  seconds; `chat-stop`: stop, wait for the acks still due (`--reply` peers answer every message
  with `ack: <message>`), and report `chat-report {tag, sent, acked, lost, unsent, via,
  max_rtt_ms}` (`lost`: sent and never acknowledged; `unsent`: refused by our own stack, so the
  sender knew).
- `file {tag, bytes, hold_at}`: send `bytes` random bytes on /p2prtc/file/1.0.0 over the
  direct connection; with `hold_at` (a fraction) stop once that share is written
  (`file-held {tag, sent}`) until `resume {tag}`. The receiver checks size and SHA-256
  (`file-received {bytes, sha256}` there); the sender reports `file {tag, ok, bytes, sent,
  sha256, confirmed, seconds, transport, error}`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..connection import Connection
from ..errors import DialError, P2PError
from ..events import RelayError, ReservationLost, ReservationMade
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.filetransfer import CHUNK, FILE, MAX_HEADER
from ..streams import read_length_prefixed, write_length_prefixed
from .agent import RESERVATION_TIMEOUT, LabPeer, _stdin_reader, conn_info
from .procs import stop_on_signals

log = logging.getLogger("p2prtc.lab.chaos_agent")

# A chat message is written within this (it waits for a stream on a live connection).
CHAT_SEND_TIMEOUT = 10.0
# After chat-stop, acks still on their way get this long (a 100 ms RTT with 5 % loss and
# SCTP's 1 s minimum retransmission timeout: a few RTOs).
CHAT_ACK_WAIT = 10.0
# The file's whole transfer, the receiver's confirmation included (10 MB at 5 % loss and
# 100 ms RTT is the slow case).
FILE_TIMEOUT = 600.0
ACK = re.compile(r"([\w-]+)-(\d+);")


@dataclass
class ChatRun:
    tag: str
    interval: float
    sent_at: dict[int, float] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)  # n -> RTT (s)
    unsent: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def report(self) -> dict[str, Any]:
        rtts = list(self.acked.values())
        return {"tag": self.tag, "sent": len(self.sent_at), "acked": len(self.acked),
                "lost": len(set(self.sent_at) - set(self.acked)), "unsent": len(self.unsent),
                "unsent_reasons": sorted(set(self.unsent))[:5], "via": sorted(self.via),
                "max_rtt_ms": round(max(rtts) * 1000, 1) if rtts else None}


class ChaosPeer(LabPeer):
    def __init__(self, ice_servers: list[str] | None, turn: str, reply: bool) -> None:
        super().__init__(ice_servers, turn)
        self.replying = reply
        self.target: PeerId | None = None
        self.chats: dict[str, ChatRun] = {}
        self.resume: dict[str, asyncio.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        on = self.host.events.on
        on(ReservationMade, lambda e: self.emit(
            "reservation", relay=str(e.info.relay), expires=e.info.expires))
        on(ReservationLost, lambda e: self.emit(
            "reservation-lost", relay=str(e.relay), reason=e.reason))
        on(RelayError, lambda e: self.emit(
            "relay-error", relay=str(e.relay_addr), reason=e.reason))

    def _on_message(self, peer: PeerId, text: str) -> None:
        if self.replying:
            super()._on_message(peer, text)
            return
        now = time.monotonic()
        for tag, n in ACK.findall(text if text.startswith("ack: ") else ""):
            run = self.chats.get(tag)
            if run is None or int(n) not in run.sent_at or int(n) in run.acked:
                continue
            run.acked[int(n)] = now - run.sent_at[int(n)]
            if run.stop.is_set() and len(run.acked) == len(run.sent_at):
                run.all_acked.set()

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        try:
            if name == "listen":
                await self.listen_relay(str(cmd["relay"]))
            elif name == "dial":
                await self.dial_direct(str(cmd["addr"]))
            elif name == "chat-start":
                run = ChatRun(str(cmd["tag"]), float(cmd.get("interval", 0.1)))
                self.chats[run.tag] = run
                run.task = asyncio.ensure_future(self._chat_ticker(run))
            elif name == "chat-stop":
                self.spawn(self._chat_stop(self.chats[str(cmd["tag"])]))
            elif name == "file":
                tag = str(cmd["tag"])
                self.resume[tag] = asyncio.Event()
                self.spawn(self._send_chaos_file(tag, int(cmd["bytes"]), cmd.get("hold_at")))
            elif name == "resume":
                self.resume[str(cmd["tag"])].set()
            else:
                self.emit("error", reason=f"unknown command {name!r}")
        except (TimeoutError, P2PError, OSError, KeyError, ValueError) as e:
            self.emit("error", reason=f"{name}: {type(e).__name__}: {e}")

    async def listen_relay(self, relay: str) -> None:
        self.detect_nat(Multiaddr(relay))
        await self.host.listen("/webrtc")
        await self.host.listen_via_relay(Multiaddr(relay), RESERVATION_TIMEOUT)
        addrs = [str(a.with_peer_id(self.host.peer_id)) for a in self.host.listen_addrs
                 if a.has("webrtc")]
        self.emit("listening", addrs=addrs)

    async def dial_direct(self, target: str) -> None:
        addr = Multiaddr(target)
        self.target = addr.peer_id()
        t0 = time.perf_counter()
        try:
            conn = await self.host.dial(addr)
        except DialError as e:
            self.emit("no-direct", ms=_ms(t0), reason=str(e))
            return
        if conn.transport == "webrtc" and not conn.limited:
            ms = _ms(t0)
            # libwebrtc may start on the TURN pair and move to the direct one: where it settles
            summary: dict[str, Any] = {"path": conn.details.path,
                                       "candidate_pair": conn.details.candidate_pair_dict()}
            await self._settled_path(conn, summary)
            self.emit("direct", ms=ms, **{**conn_info(conn), **summary})
        else:
            self.emit("no-direct", ms=_ms(t0), reason=f"dial gave a {conn.transport} connection")

    async def _chat_ticker(self, run: ChatRun) -> None:
        assert self.target is not None
        n = 0
        while not run.stop.is_set():
            text = f"{run.tag}-{n};"
            try:
                await asyncio.wait_for(self.chat.send(self.target, text), CHAT_SEND_TIMEOUT)
            except (TimeoutError, P2PError, OSError) as e:
                run.unsent.append(str(e) or type(e).__name__)
            else:
                run.sent_at[n] = time.monotonic()
                stream = self.chat.streams.get(self.target)
                conn = getattr(stream, "connection", None)
                if isinstance(conn, Connection):
                    run.via.add(conn.transport)
            n += 1
            try:  # the ticker's pace (a timer, not synchronisation)
                await asyncio.wait_for(run.stop.wait(), run.interval)
            except TimeoutError:
                pass

    async def _chat_stop(self, run: ChatRun) -> None:
        run.stop.set()
        if run.task is not None:
            await run.task
        if len(run.acked) < len(run.sent_at):
            try:
                await asyncio.wait_for(run.all_acked.wait(), CHAT_ACK_WAIT)
            except TimeoutError:
                pass
        self.emit("chat-report", **run.report())

    async def _send_chaos_file(self, tag: str, size: int, hold_at: float | None) -> None:
        """The sending half of /p2prtc/file/1.0.0 (as FileService.send), able to pause."""
        assert self.target is not None
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        hold = int(size * hold_at) if hold_at is not None else None
        out: dict[str, Any] = {"tag": tag, "ok": False, "bytes": size, "sent": 0,
                               "sha256": sha, "confirmed": None, "transport": None}
        t0 = time.perf_counter()
        stream = None
        try:
            async with asyncio.timeout(FILE_TIMEOUT):
                stream = await self.host.new_stream(self.target, [FILE])
                out["transport"] = stream.connection.transport if stream.connection else None
                header = {"name": f"chaos-{tag}.bin", "size": size, "sha256": sha}
                await write_length_prefixed(stream, json.dumps(header).encode())
                sent = 0
                while sent < size:
                    if hold is not None and sent >= hold:
                        self.emit("file-held", tag=tag, sent=sent)
                        await self.resume[tag].wait()
                        hold = None
                    block = data[sent:sent + CHUNK]
                    await stream.write(block)
                    sent += len(block)
                    out["sent"] = sent
                await stream.close_write()
                raw = await read_length_prefixed(stream, MAX_HEADER, allow_eof=True)
            await stream.close()
            answer = json.loads(raw) if raw is not None else {"ok": False,
                                                              "error": "closed unconfirmed"}
            out["confirmed"] = answer.get("sha256")
            out["ok"] = bool(answer.get("ok")) and answer.get("sha256") == sha
            if not out["ok"]:
                out["error"] = f"the receiver said {answer}"
        except (P2PError, OSError, TimeoutError, ValueError) as e:
            if stream is not None:
                stream.reset()
            out["error"] = f"{type(e).__name__}: {e}"
        out["seconds"] = round(time.perf_counter() - t0, 3)
        self.emit("file", **out)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


async def main_async(args: argparse.Namespace) -> int:
    ice: list[str] | None = None
    if args.stun:
        ice = [] if args.stun == ["none"] else list(args.stun)
    peer = ChaosPeer(ice, args.turn, args.reply)
    if ice:
        peer.detect_nat(None)
    stop = asyncio.Event()
    stop_on_signals("listen", stop)
    try:
        reader = await _stdin_reader()
        peer.emit("ready", peer=str(peer.host.peer_id))

        async def commands() -> None:
            while line := await reader.readline():
                try:
                    cmd = json.loads(line)
                except ValueError:
                    peer.emit("error", reason=f"not a JSON command: {line[:80]!r}")
                    continue
                if isinstance(cmd, dict):
                    peer.spawn(peer.command(cmd))
            stop.set()

        reading = asyncio.ensure_future(commands())
        await stop.wait()
        reading.cancel()
        return 0
    finally:
        for task in list(peer.tasks):
            task.cancel()
        await peer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.lab.chaos_agent")
    p.add_argument("--reply", action="store_true", help="answer chat messages with 'ack: ...'")
    p.add_argument("--stun", action="append", help="ICE server URL (default: the relay's STUN)")
    p.add_argument("--turn", choices=["auto", "none"], default="auto")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(main_async(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 143


if __name__ == "__main__":
    sys.exit(main())
