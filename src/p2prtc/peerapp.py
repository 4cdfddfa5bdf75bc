"""`p2prtc listen` and `p2prtc dial`: a chat (and file transfer) peer over relays and direct WebRTC.

Built on the public API only: a `p2prtc.Node` does the networking; its typed events
(`Node.events()`) become the lines printed here, and chat and files run on its streams
(`nodechat`). Human-readable status lines by default; with --json one event object per line on
stdout (schema in DEVELOPERS.md) and stdin lines are the messages to send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api_events as ev
from .errors import DialError, P2PError
from .identity import Identity, PeerId
from .nat import NatBehaviour
from .node import RELAYS_FROM_DHT as NODE_RELAYS_FROM_DHT
from .node import Connection, Node
from .relaykeeper import LOST_GRACE
from .resources import ResourceLimits
from .nodechat import NodeChat, NodeFiles, best_connection
from .protocols.chat import NotSent
from .protocols.filetransfer import MAX_HEADER, FileResult, Progress
from .transports.circuit_limit import data_words
from .transports.webrtc.engine import IceServer

log = logging.getLogger(__name__)

# What a file costs on a relayed connection beyond its bytes: the header (at most MAX_HEADER),
# the receiver's answer and the stream's negotiation.
FILE_OVERHEAD = 2 * MAX_HEADER
# `listen --bootstrap` with no relay reserves on this many relays found in the DHT (issue 15.3;
# the Node's constant, which its relay keeper keeps).
RELAYS_FROM_DHT = NODE_RELAYS_FROM_DHT

LISTEN_HINT = ("Waiting for peers. Type a message and press Enter to send it; /send FILE sends a "
               "file; /quit leaves.")
DIAL_HINT = "Type a message and press Enter to send it; /send FILE sends a file; /quit leaves."


@dataclass
class PeerOptions:
    identity: Identity
    ice_servers: list[str] | None = None
    # "auto": TURN credentials from the relay in use; a list of IceServers; "none"
    turn: str | list[IceServer] = "auto"
    json: bool = False
    save_dir: Path = field(default_factory=lambda: Path("."))
    quit_on_eof: bool = False
    tls_ca: str | None = None  # a CA file to trust for /tls/ws and /wss relays, besides the system's
    web_url: str | None = None  # the `p2prtc web` page: listen prints a link that dials us
    bootstrap: list[str] = field(default_factory=list)  # DHT servers: publish (listen), find (dial)
    resources: ResourceLimits | None = None  # budgets (p2prtc.resources); None: the defaults
    relay_grace: float = LOST_GRACE  # a relay down this long is replaced (listen --relay-grace)
    direct: list[str] = field(default_factory=list)  # direct listen addresses (listen --direct)


class Output:
    """Events as JSON lines, or as text for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.t0 = time.monotonic()
        self._progress_active = False

    def event(self, name: str, human: str | None = None, /, **fields: Any) -> None:
        """Emit event `name`; `human` is the line shown without --json (None: nothing)."""
        self._write({"event": name, "t": round(time.monotonic() - self.t0, 3), **fields}, human)

    def node_event(self, e: ev.Event, human: str | None = None, /, **extra: Any) -> None:
        """Emit a Node event (its own fields and time), plus `extra` fields."""
        self._write({**e.to_dict(), **extra}, human)

    def _write(self, obj: dict[str, Any], human: str | None) -> None:
        if self.as_json:
            print(json.dumps(obj), flush=True)
        elif human is not None:
            self._clear_progress()
            print(human, flush=True)

    def hint(self, text: str) -> None:
        """A line for a person only (nothing with --json)."""
        if not self.as_json:
            self._clear_progress()
            print(text, flush=True)

    def progress(self, label: str, done: int, total: int, started: float) -> None:
        if self.as_json or not sys.stderr.isatty():
            return
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        rate = done / max(time.perf_counter() - started, 1e-6) / 1e6
        sys.stderr.write(f"\r{label} [{bar:<30}] {frac * 100:5.1f}% "
                         f"{done / 1e6:.1f}/{total / 1e6:.1f} MB {rate:.1f} MB/s")
        sys.stderr.flush()
        self._progress_active = done < total
        if done >= total:
            sys.stderr.write("\n")

    def _clear_progress(self) -> None:
        if self._progress_active:
            sys.stderr.write("\n")
            self._progress_active = False


def stdin_is_pipe_or_tty() -> bool:
    """A terminal, pipe or socket: what the event loop's connect_read_pipe can read."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return sys.stdin.isatty() or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def short(peer: PeerId | str | None) -> str:
    s = str(peer)
    return f"{s[:6]}…{s[-6:]}"


def describe(transport: str, *, path: str | None = None,
             candidate_pair: ev.CandidatePair | None = None, limit: ev.RelayLimit | None = None,
             addr: str = "") -> str:
    """How a connection goes, in words: "direct WebRTC (host a <-> srflx b)", "WebRTC via TURN
    (relay ip) (...)", "the relay, limited to 120 s / 128 KiB", or "<transport> <addr>"."""
    if transport == "webrtc":
        pair = candidate_pair
        how = f" ({pair['local']} {pair['local_addr']} <-> {pair['remote']} {pair['remote_addr']})" \
            if pair else ""
        if path == "turn" and pair:
            # the TURN server's relayed address (ours, else the peer's)
            via = pair["local_addr"] if pair["local"] == "relay" else pair["remote_addr"]
            return f"WebRTC via TURN (relay {via.rpartition(':')[0].strip('[]')}){how}"
        if path == "turn":
            return f"WebRTC via TURN{how}"
        return f"direct WebRTC{how}"
    if transport == "relay":
        extra = ""
        if limit:
            extra = (f", limited to {limit.get('duration', 0)} s / "
                     f"{limit.get('data', 0) // 1024} KiB")
        return f"the relay{extra}"
    return f"{transport} {addr}"


def describe_connection(conn: Connection) -> str:
    return describe(conn.transport, path=conn.path, candidate_pair=conn.candidate_pair,
                    limit=conn.limit, addr=conn.remote_addr)


def _reachability_words(e: ev.Reachability) -> str | None:
    """A person's line for AutoNAT's verdict on our direct addresses (none without any)."""
    if not e.addrs:
        return None
    servers = f"{e.servers} AutoNAT v2 server{'s' if e.servers != 1 else ''} connected"
    what = {"public": f"publicly reachable (servers dialled them back; {servers})",
            "private": f"not reachable from outside (servers could not dial them back; "
                       f"{servers})",
            }.get(e.reachability, f"not confirmed yet ({servers})")
    return f"Direct addresses {', '.join(e.addrs)}: {what}"


def _without_peer_id(addr: str) -> str:
    head, sep, _ = addr.rpartition("/p2p/")
    return head if sep else addr


class PeerApp:
    """`mode` "listen" or "dial": which side's words the lines use."""

    def __init__(self, opts: PeerOptions, mode: str = "listen") -> None:
        self.opts = opts
        self.mode = mode
        self.out = Output(opts.json)
        if opts.web_url:
            from .web.links import dial_link

            dial_link(opts.web_url, "/")  # ValueError now (a usage error), not at reservation
        self.node = Node(opts.identity, stun=opts.ice_servers, turn=opts.turn, tls_ca=opts.tls_ca,
                         bootstrap=opts.bootstrap, resources=opts.resources,
                         direct=opts.direct)
        self.chat = NodeChat(self.node, self._on_message)
        self.files = NodeFiles(self.node, opts.save_dir, on_start=self._on_file_start,
                               on_received=self._on_file)
        self.stop = asyncio.Event()
        self._events = self.node.events()  # from before start(): its `peer` event too
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # what the lines say of each connection: the relay's limit per peer (from `relayed`),
        # and how each (peer, transport) goes (from `connected` and `path`)
        self._limits: dict[str, ev.RelayLimit | None] = {}
        self._described: dict[tuple[str, str], str] = {}
        self._reservation: ev.Reservation | None = None
        self._hinted = False
        self._peers: dict[str, None] = {}  # chat partners (see peers())

    @property
    def peer_id(self) -> str:
        return self.node.peer_id

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def peers(self) -> list[str]:
        """The peers we are connected to (directly or through a relay), most recent last: those
        the events reported and not yet reported gone (a connection that is closing still
        counts, so a message then gets its true reason), and those just connected."""
        return list(dict.fromkeys([*self._peers, *(c.remote_peer for c in self.node.connections())]))

    def _seen(self, peer: str) -> None:
        self._peers.pop(peer, None)
        self._peers[peer] = None

    def _gone(self, peer: str) -> None:
        if not any(c.remote_peer == peer for c in self.node.connections()):
            self._peers.pop(peer, None)

    async def start(self) -> None:
        self._pump = asyncio.ensure_future(self._print_events())
        await self.node.start()

    # -- events ----------------------------------------------------------------------------

    async def _print_events(self) -> None:
        async for e in self._events:
            try:
                self._show(e)
            except Exception:  # a line that cannot be written must not end the app
                log.exception("showing %s failed", e.name)

    def _show(self, e: ev.Event) -> None:  # noqa: C901 - one branch per event type
        out = self.out
        if isinstance(e, ev.Peer):
            out.node_event(e, f"Peer id: {e.peer}")
        elif isinstance(e, ev.Dialing):
            out.node_event(e, f"Dialing {e.addr}")
        elif isinstance(e, ev.RelayConnected):
            out.node_event(e, f"Connected to relay {_without_peer_id(e.relay)}")
        elif isinstance(e, ev.Reservation):
            self._reservation = e
            out.node_event(e, None)  # the person's lines come with the addresses (`listening`)
        elif isinstance(e, ev.Listening):
            self._show_listening(e)
        elif isinstance(e, ev.Relayed):
            self._seen(e.peer)
            self._limits[e.peer] = e.limit
            text = f"Relayed connection with {short(e.peer)} through " \
                   f"{describe('relay', limit=e.limit)}"
            if self.mode == "listen":
                text += "; waiting for its direct WebRTC upgrade"
            out.node_event(e, text)
        elif isinstance(e, ev.Connected):
            self._show_connected(e)
        elif isinstance(e, ev.PathChanged):
            how = describe("webrtc", path=e.path, candidate_pair=e.candidate_pair)
            self._described[(e.peer, "webrtc")] = how
            out.node_event(e, f"Connection to {short(e.peer)} now goes via {how}")
        elif isinstance(e, (ev.Disconnected, ev.RelayedClosed)):
            self._show_end(e)
        elif isinstance(e, ev.Warning):
            out.node_event(e, _warning_words(e))
        elif isinstance(e, ev.Error):
            self._show_error(e)
        elif isinstance(e, ev.Nat):
            out.node_event(e, f"NAT: {NatBehaviour.from_dict(e.to_dict()).describe()}")
        elif isinstance(e, ev.Published):
            out.node_event(e, f"Published our record in the DHT ({e.record_peers} peers stored "
                              f"it, {e.provider_peers} our provider record)")
        elif isinstance(e, ev.Found):
            out.node_event(e, f"Found {short(e.peer)} in the DHT ({e.source}): "
                              + ", ".join(e.addrs))
        elif isinstance(e, ev.RelayAdded):
            out.node_event(e, f"Reserving on relay {_without_peer_id(e.relay)} ({e.reason})")
        elif isinstance(e, ev.RelayReleased):
            out.node_event(e, f"No longer using relay {_without_peer_id(e.relay)} ({e.reason})")
        elif isinstance(e, ev.RelaysNeeded):
            out.node_event(e, e.reason[0].upper() + e.reason[1:])
        elif isinstance(e, ev.Reachability):
            out.node_event(e, _reachability_words(e))
        elif isinstance(e, ev.NatPeer):
            b = NatBehaviour.from_dict(e.to_dict())
            out.node_event(e, f"{short(e.peer)} is behind {b.short()}"
                              + (f"; {e.ruled_out}" if e.ruled_out else ""))
        else:
            out.node_event(e, None)

    def _show_listening(self, e: ev.Listening) -> None:
        browser = e.browser_addrs
        others = [a for a in e.addrs if a not in browser]
        res, self._reservation = self._reservation, None  # this listing's, if it has one
        text = ""
        if res is not None:
            expires = time.strftime("%H:%M:%S", time.localtime(res.expires))
            text = f"Reserved a slot on relay {short(res.relay)} until {expires}.\n"
        text += "Dialable addresses (share one):"
        if browser:
            text += "\n  for browsers:\n    " + "\n    ".join(browser)
        if others:
            text += "\n  for Python/rust/Node peers:\n    " + "\n    ".join(others)
        extra: dict[str, Any] = {}
        if self.opts.web_url:
            from .web.links import dial_link, link_target

            target = link_target(browser, self.opts.web_url)
            link = dial_link(self.opts.web_url, target) if target else None
            text += f"\nOpen in a browser to chat:\n  {link}" if link else \
                "\n(no link for --web-url: the relay has no address a browser can dial)"
            extra["link"] = link
        self.out.hint(text)
        self.out.node_event(e, None, **extra)
        if self.mode == "listen" and not self._hinted:
            self._hinted = True
            self.out.hint(LISTEN_HINT)

    def _show_connected(self, e: ev.Connected) -> None:
        self._seen(e.peer)
        relayed = e.transport == "relay"
        how = describe(e.transport, path=e.path, candidate_pair=e.candidate_pair,
                       limit=self._limits.get(e.peer), addr=e.addr)
        self._described[(e.peer, e.transport)] = how
        took = f" in {e.ms:.0f} ms" if e.ms is not None else ""
        text = f"Connected to {short(e.peer)} via {how}{took}"
        if relayed:
            text += " (no direct connection: chat goes over the relay while it allows)"
        self.out.node_event(e, text)
        if self.mode == "dial" and not self._hinted:
            self._hinted = True
            self.out.hint(DIAL_HINT)

    def _show_end(self, e: ev.Disconnected | ev.RelayedClosed) -> None:
        self._gone(e.peer)
        if isinstance(e, ev.RelayedClosed):
            direct_up = any(c.remote_peer == e.peer and c.transport != "relay"
                            for c in self.node.connections())
            text = f"The relayed connection with {short(e.peer)} ended ({e.reason})" \
                   + ("; the direct connection stays" if direct_up else "")
        else:
            how = self._described.get((e.peer, e.transport)) or describe(
                e.transport, limit=self._limits.get(e.peer))
            text = f"Disconnected from {short(e.peer)} ({how}): {e.reason}"
        if not self.chat.reading_ended(e.peer):
            self.out.node_event(e, text)
            return
        # Messages that arrived before the end are still in the chat stream's buffer: report
        # them first, so that the end is the connection's last event.
        self.spawn(self._show_after_chat(e, e.peer, text))

    async def _show_after_chat(self, e: ev.Event, peer: str, text: str) -> None:
        await self.chat.drained(peer)
        self.out.node_event(e, text)

    def _show_error(self, e: ev.Error) -> None:
        if e.peer is None:
            self.out.node_event(e, f"Error: {e.reason}")
        elif self.mode == "dial":  # our dial found no direct path: the relayed connection stays
            how = describe("relay", limit=self._limits.get(e.peer))
            self.out.node_event(e, f"{e.reason}\nChatting over the relay instead ({how}).")
        else:
            self.out.node_event(e, f"No direct WebRTC path with {short(e.peer)}: {e.reason}. "
                                   "Chat goes over the relay while it allows.")

    def _on_message(self, peer: str, text: str) -> None:
        self.out.event("message", f"<{short(peer)}> {text}", peer=peer, text=text)

    def _on_file_start(self, peer: PeerId, name: str, size: int) -> Progress:
        started = time.perf_counter()
        self.out.event("file-incoming", f"Receiving {name} ({size / 1e6:.1f} MB) from {short(peer)}",
                       peer=str(peer), name=name, bytes=size)
        return lambda done, total: self.out.progress(f"recv {name}", done, total, started)

    def _on_file(self, r: FileResult) -> None:
        self.out.event("file", f"Received {r.name} ({r.size} bytes, sha256 {r.sha256[:16]}…) "
                               f"from {short(r.peer)} in {r.seconds:.1f} s -> {r.path}",
                       peer=str(r.peer), name=r.name, bytes=r.size, sha256=r.sha256,
                       path=str(r.path))

    # -- actions ---------------------------------------------------------------------------

    async def listen(self, relays: Sequence[str]) -> None:
        """Reserve on each relay (and keep the reservations); DialError when none is granted."""
        if not relays:  # relay discovery: relays that provide the relays' key in the DHT
            if not self.opts.bootstrap:
                raise DialError("listen needs a RELAY_MULTIADDR, or --bootstrap to find relays")
        # (with no relay the Node takes RELAYS_FROM_DHT from the DHT; its relay keeper
        # replaces a relay lost for `relay_grace`)
        await self.node.listen(*relays, relay_grace=self.opts.relay_grace)
        if self.opts.bootstrap:  # our record into the DHT (`published`), kept up to date
            try:
                await self.node.publish()
            except P2PError as e:  # still reachable by address: say so, go on
                self.out.event("warning", f"Not published in the DHT: {e}",
                               reason=f"not published in the DHT: {e}", relay=None)

    async def dial(self, targets: Sequence[str]) -> None:
        """Dial the peer at any of `targets` (raced); chat over the relay when no direct path
        comes about. A bare peer id is looked up in the DHT (`found`) with --bootstrap."""
        addrs: list[str] = []
        if not self.opts.bootstrap and any(not t.startswith("/") for t in targets):
            raise DialError("dial PEER_ID needs --bootstrap MULTIADDR (a DHT server, e.g. a "
                            "relay) to find the peer's addresses")
        for t in targets:
            addrs += await self.node.find(t) if not t.startswith("/") else [t]
        await self.node.dial(addrs, allow_relayed=True)

    async def send_text(self, text: str) -> None:
        """`sent` only for a message written into an open stream within the relay's limits;
        otherwise `undelivered` naming the message and why."""
        peers = self.peers()
        if not peers:
            self.out.event("undelivered", f"Not sent (nobody to send to yet): {text}",
                           peer=None, text=text, reason="not sent: no connected peer")
            return
        for peer in peers:
            try:
                await self.chat.send(peer, text)
            except NotSent as e:
                reason = f"not sent: {e}"
            except (P2PError, OSError, ValueError) as e:
                reason = f"not delivered: {e}"
            else:
                self.out.event("sent", None, peer=peer, text=text)
                continue
            self.out.event("undelivered", f"Message to {short(peer)} {reason}: {text}",
                           peer=peer, text=text, reason=reason)

    async def send_file(self, path: str) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            self.out.event("error", f"No such file: {p}", reason=f"no such file: {p}")
            return
        size = p.stat().st_size
        for peer in self.peers():
            why = self._file_refused(peer, size)
            if why is not None:
                self.out.event("error", f"{p.name} not sent to {short(peer)}: {why}",
                               reason=f"not sent: {why}", peer=peer, name=p.name)
                continue
            try:
                r = await self.files.send(peer, p, self._send_progress(p.name))
            except (P2PError, OSError, ValueError) as e:
                self.out.event("error", f"Sending {p.name} to {short(peer)} failed: {e}",
                               reason=str(e))
                continue
            self.out.event("file-sent", f"Sent {p.name} to {short(peer)}: {r.size} bytes in "
                                        f"{r.seconds:.1f} s ({r.size / r.seconds / 1e6:.1f} MB/s), "
                                        "sha256 verified by the receiver",
                           peer=peer, name=p.name, bytes=r.size, sha256=r.sha256,
                           seconds=round(r.seconds, 3))

    def _send_progress(self, name: str) -> Progress:
        started = time.perf_counter()
        return lambda done, total: self.out.progress(f"send {name}", done, total, started)

    def _file_refused(self, peer: str, size: int) -> str | None:
        """Why a file of `size` bytes cannot go to `peer` now: it goes over a relayed connection
        (no direct one) whose relay limits leave no room for it; the relay would cut it off."""
        conn = best_connection(self.node, peer)
        if conn is None:
            return None
        why = conn.limit_refuses(size + FILE_OVERHEAD)
        if why is None:
            return None
        room, limit = conn.limit_room(), conn.limit
        if room is not None and room > 0 and limit and "data limit" in why:
            return (f"{size} bytes do not fit: the relay's {data_words(limit['data'])} data "
                    f"limit for this relayed connection leaves room for {room // 1024} KiB")
        return why

    async def handle_line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        if line.strip() == "/quit":
            self.stop.set()
        elif line.startswith("/send "):
            await self.send_file(line[6:].strip())
        elif line.strip() == "/peers":
            for c in self.node.connections():
                print(f"  {c.remote_peer} via {describe_connection(c)}", flush=True)
        else:
            await self.send_text(line)

    async def read_stdin(self) -> None:
        if not stdin_is_pipe_or_tty():
            # /dev/null or a regular file (nohup, systemd, `< file`): finite, read it directly;
            # the event loop's pipe reader cannot take these (uvloop aborts the process).
            try:
                data = sys.stdin.buffer.read()
            except (OSError, ValueError, AttributeError):
                data = b""
            for line in data.decode("utf-8", errors="replace").splitlines():
                await self.handle_line(line)
            if self.opts.quit_on_eof:
                self.stop.set()
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except (ValueError, OSError):
            return  # no usable stdin
        while not self.stop.is_set():
            line = await reader.readline()
            if not line:
                if self.opts.quit_on_eof:
                    self.stop.set()
                return
            await self.handle_line(line.decode("utf-8", errors="replace"))

    async def close(self) -> None:
        await self.chat.close()
        await self.node.close()  # its last events (disconnections) still get printed
        if self._pump is not None:
            await self._pump
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _warning_words(e: ev.Warning) -> str:
    """A Node warning for a person (the JSON carries `reason` as it is)."""
    reason, lost, again = e.reason, "relay connection lost: ", "; reserving again"
    if e.relay is not None and reason.startswith(lost) and reason.endswith(again):
        return f"Lost the relay {short(e.relay)} ({reason[len(lost):-len(again)]}); " \
               "reserving again…"
    if e.relay is not None and reason.startswith("relay: ") and reason.endswith("; retrying"):
        return f"Relay {e.relay}: {reason[len('relay: '):-len('; retrying')]} (retrying)"
    return f"Warning: {reason}"


async def run_peer(opts: PeerOptions, *, listen: Sequence[str] = (),
                   dial: Sequence[str] = (), app_factory: Callable[..., PeerApp] = PeerApp) -> int:
    """`p2prtc listen RELAY...` (listen) or `p2prtc dial ADDR...` (dial) until /quit, end of
    input with --quit-on-eof, SIGINT or SIGTERM."""
    mode = "listen" if listen or not dial else "dial"  # listen with no relay: from the DHT
    app = app_factory(opts, mode)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stop.set)
    try:
        await app.start()
        if mode == "listen":
            await app.listen(listen)
        else:
            await app.dial(dial)
        stdin_task = asyncio.ensure_future(app.read_stdin())
        await app.stop.wait()
        stdin_task.cancel()
        return 0
    except (DialError, P2PError) as e:
        app.out.event("error", None, reason=str(e))
        raise
    finally:
        await app.close()
