"""`p2prtc listen` and `p2prtc dial`: a chat (and file transfer) peer over a relay and direct WebRTC.

Human-readable status lines by default; with --json one event object per line on stdout
(schema in DESIGN.md) and stdin lines are the messages to send.
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
from dataclasses import dataclass, field
from pathlib import Path

from .connection import Connection
from .errors import DialError, P2PError
from .host import Host
from .identity import Identity, PeerId
from .multiaddr import Multiaddr
from .protocols.chat import ChatService, NotSent
from .protocols.filetransfer import MAX_HEADER, FileResult, FileService
from .protocols.natinfo import NatInfoService, stun_server_of
from .transports.circuit_limit import data_words
from .transports.webrtc import transport as webrtc_transport
from .transports.webrtc.transport import WebRTCTransport

log = logging.getLogger(__name__)

RELAY_TIMEOUT = 20.0
# A listener reports an inbound relayed connection as `connected` (transport relay) when no
# direct WebRTC connection and no upgrade failure came within this time: the dialer's whole
# /webrtc dial, and a little more.
UPGRADE_WAIT = webrtc_transport.DIAL_TIMEOUT + 2.0
# What a file costs on a relayed connection beyond its bytes: the header (at most MAX_HEADER),
# the receiver's answer and the stream's negotiation.
FILE_OVERHEAD = 2 * MAX_HEADER


@dataclass
class PeerOptions:
    identity: Identity
    ice_servers: list[str] | None = None
    # "auto": TURN credentials from the relay in use; a list of IceServers; "none"
    turn: "str | list" = "auto"
    json: bool = False
    save_dir: Path = field(default_factory=lambda: Path("."))
    quit_on_eof: bool = False
    tls_ca: str | None = None  # a CA file to trust for /tls/ws and /wss relays, besides the system's
    web_url: str | None = None  # the `p2prtc web` page: listen prints a link that dials us


class Output:
    """Events as JSON lines, or as text for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.t0 = time.monotonic()
        self._progress_active = False

    def event(self, name: str, human: str | None = None, /, **fields) -> None:
        """Emit event `name`; `human` is the line shown without --json (None: nothing)."""
        if self.as_json:
            print(json.dumps({"event": name, "t": round(time.monotonic() - self.t0, 3), **fields}),
                  flush=True)
        elif human is not None:
            self._clear_progress()
            print(human, flush=True)

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


def short(peer: PeerId) -> str:
    s = str(peer)
    return f"{s[:6]}…{s[-6:]}"


def browser_dialable(addr: Multiaddr) -> bool:
    """Whether a browser can dial this address: its relay is reached over WebSocket (ws, wss,
    tls/ws) or WebRTC-direct; browsers cannot open TCP or QUIC connections."""
    parts = addr.split_last("p2p-circuit")
    protos = (parts[0] if parts is not None else addr).protocols()
    return any(p in protos for p in ("ws", "wss", "webrtc-direct"))


def describe(conn: Connection) -> str:
    if conn.transport == "webrtc":
        pair = conn.details.get("candidate_pair")
        how = f" ({pair['local']} {pair['local_addr']} <-> {pair['remote']} {pair['remote_addr']})" \
            if pair else ""
        if conn.details.get("path") == "turn":
            return f"WebRTC via TURN (relay {conn.details.get('turn_relay')}){how}"
        return f"direct WebRTC{how}"
    if conn.transport == "circuit" or conn.limited:  # a relay may also grant unlimited circuits
        lim = conn.details.get("limit", {})
        extra = ""
        if lim:
            extra = f", limited to {lim.get('duration', 0)} s / {lim.get('data', 0) // 1024} KiB"
        return f"the relay{extra}"
    return f"{conn.transport} {conn.remote_addr}"


class PeerApp:
    def __init__(self, opts: PeerOptions) -> None:
        self.opts = opts
        self.out = Output(opts.json)
        self.host = Host(opts.identity)
        if opts.web_url:
            from .web.links import dial_link

            dial_link(opts.web_url, "/")  # ValueError now (a usage error), not at reservation
        if opts.tls_ca:
            from .transports.tls import client_context
            from .transports.websocket import websocket_transport

            websocket_transport(self.host.transports).client_ssl = client_context(opts.tls_ca)
        self.webrtc = WebRTCTransport(self.host, opts.ice_servers, turn=opts.turn)
        self.host.add_transport(self.webrtc, first=True)
        self.natinfo = NatInfoService(self.host)  # detection starts with listen/dial
        self.webrtc.natinfo = self.natinfo
        self.chat = ChatService(self.host, self._on_message, self._on_chat_closed)
        self.files = FileService(self.host, opts.save_dir, on_start=self._on_file_start,
                                 on_received=self._on_file)
        self.relays: set[PeerId] = set()
        self.peers: list[PeerId] = []  # chat partners, most recent last
        self._dial_started: dict[PeerId, float] = {}
        # ids of the connections reported `connected` (one event per connection, final kind)
        self._reported: set[int] = set()
        # ids of relayed connections a direct one replaced (their end is no disconnection)
        self._superseded: set[int] = set()
        self._ending: set[asyncio.Task] = set()  # end events waiting for a chat stream's reader
        # inbound relayed connections waiting for the dialer's WebRTC upgrade (listener side)
        self._awaiting: dict[PeerId, tuple[Connection, asyncio.TimerHandle]] = {}
        self.stop = asyncio.Event()
        ev = self.host.events
        ev.on("connection", self._on_connection)
        ev.on("disconnection", self._on_disconnection)
        ev.on("reservation", self._on_reservation)
        ev.on("nat-detected", self._on_nat)
        ev.on("nat-peer", self._on_nat_peer)
        # retries, not failures: `warning`
        ev.on("reservation-lost", lambda relay, reason: self.out.event(
            "warning", f"Lost the relay {short(relay)} ({reason}); reserving again…",
            reason=f"relay connection lost: {reason}; reserving again"))
        ev.on("relay-error", lambda addr, reason: self.out.event(
            "warning", f"Relay {addr}: {reason} (retrying)", reason=f"relay: {reason}; retrying"))
        ev.on("webrtc-failed", self._on_webrtc_failed)
        ev.on("warning", lambda text: self.out.event("warning", f"Warning: {text}", reason=text))
        ev.on("path-changed", lambda conn: self.out.event(
            "path", f"Connection to {short(conn.remote_peer)} now goes via {describe(conn)}",
            peer=str(conn.remote_peer), path=conn.details.get("path"),
            candidate_pair=conn.details.get("candidate_pair")))

    # -- events ----------------------------------------------------------------------------

    # Events a script can trust: `relayed` for the relayed connection an upgrade runs over, then
    # one `connected` per connection with its final kind: webrtc/direct once the upgrade works,
    # relay/not direct once it failed (dialer: the /webrtc dial failed; listener: the upgrade
    # failed or none came within UPGRADE_WAIT); `disconnected` when that connection ends.

    def _on_connection(self, conn: Connection) -> None:
        peer = conn.remote_peer
        if peer in self.relays:
            self.out.event("relay-connected", f"Connected to relay {conn.remote_addr}",
                           relay=str(conn.remote_addr.with_peer_id(peer)))
            return
        if peer in self.peers:
            self.peers.remove(peer)
        self.peers.append(peer)
        if conn.transport != "circuit":
            self._report_connected(conn)
            return
        # relayed, even when the relay sets no limits
        inbound = conn.direction == "inbound"
        text = f"Relayed connection with {short(peer)} through {describe(conn)}"
        if inbound and self.webrtc.listening:
            text += "; waiting for its direct WebRTC upgrade"
        self.out.event("relayed", text, peer=str(peer), addr=str(conn.remote_addr),
                       limit=conn.details.get("limit"))
        if inbound:
            if not self.webrtc.listening:
                self._report_connected(conn)
                return
            old = self._awaiting.pop(peer, None)
            if old is not None:
                old[1].cancel()
            timer = asyncio.get_running_loop().call_later(UPGRADE_WAIT, self._upgrade_overdue,
                                                          conn)
            self._awaiting[peer] = (conn, timer)
        # outbound: dial() reports it once the upgrade has failed

    def _upgrade_overdue(self, conn: Connection) -> None:
        entry = self._awaiting.get(conn.remote_peer)
        if entry is not None and entry[0] is conn:
            del self._awaiting[conn.remote_peer]
            self._report_connected(conn)

    def _on_webrtc_failed(self, peer: PeerId, reason: str) -> None:
        self.out.event("error", f"No direct WebRTC path with {short(peer)}: {reason}. "
                                "Chat goes over the relay while it allows.",
                       reason=reason, peer=str(peer))
        entry = self._awaiting.pop(peer, None)
        if entry is not None:
            entry[1].cancel()
            self._report_connected(entry[0])

    def _report_connected(self, conn: Connection) -> None:
        """The one `connected` event of `conn`, with its final transport."""
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
        ms = conn.details.get("upgrade_ms")
        if ms is None and peer in self._dial_started:
            ms = (time.perf_counter() - self._dial_started[peer]) * 1000
        took = f" in {ms:.0f} ms" if ms is not None else ""
        text = f"Connected to {short(peer)} via {describe(conn)}{took}"
        if relayed:
            text += " (no direct connection: chat goes over the relay while it allows)"
        path = "relay" if relayed else conn.details.get("path", "direct")
        self.out.event("connected", text, peer=str(peer), addr=str(conn.remote_addr),
                       transport="relay" if relayed else conn.transport,
                       direct=path == "direct", path=path,
                       ms=round(ms, 1) if ms is not None else None,
                       candidate_pair=conn.details.get("candidate_pair"))

    def _on_disconnection(self, conn: Connection) -> None:
        peer = conn.remote_peer
        if peer in self.relays:
            return
        reason = conn.end_reason or "closed"
        entry = self._awaiting.get(peer)
        if entry is not None and entry[0] is conn:
            del self._awaiting[peer]
            entry[1].cancel()
        still = [c for c in self.host.connections(peer) if not c.is_closed]
        kind = "relay" if conn.transport == "circuit" else conn.transport
        self._reported.discard(conn.id)
        if conn.id in self._superseded:  # the relayed connection a direct one replaced
            self._superseded.discard(conn.id)
            direct_up = any(c.transport != "circuit" for c in still)
            event = ("relayed-closed", f"The relayed connection with {short(peer)} ended "
                                       f"({reason})"
                                       + ("; the direct connection stays" if direct_up else ""))
            fields = {"peer": str(peer), "reason": reason}
        else:  # a connection reported `connected`, or a relayed one that never got that far
            event = ("disconnected", f"Disconnected from {short(peer)} ({describe(conn)}): "
                                     f"{reason}")
            fields = {"peer": str(peer), "reason": reason, "transport": kind}
        if not still and peer in self.peers:
            self.peers.remove(peer)
        if not self.chat.reading(conn):
            self.out.event(*event, **fields)
            return
        # Messages that arrived before the end are still in the chat stream's buffer: report
        # them first, so that the end is the connection's last event.
        task = asyncio.ensure_future(self._report_end(conn, event, fields))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _report_end(self, conn: Connection, event: tuple[str, str], fields: dict) -> None:
        await self.chat.drained(conn)
        self.out.event(*event, **fields)

    def _on_reservation(self, info) -> None:
        self.relays.add(info.relay)
        addrs = [a.with_peer_id(self.host.peer_id) for a in self.host.listen_addrs
                 if a.has("webrtc")]
        # browsers can only use some: those first (a browser user copies the first one)
        browser = [str(a) for a in addrs if browser_dialable(a)]
        others = [str(a) for a in addrs if not browser_dialable(a)]
        expires = time.strftime("%H:%M:%S", time.localtime(info.expires))
        text = f"Reserved a slot on relay {short(info.relay)} until {expires}.\n" \
               "Dialable addresses (share one):"
        if browser:
            text += "\n  for browsers:\n    " + "\n    ".join(browser)
        if others:
            text += "\n  for Python/rust/Node peers:\n    " + "\n    ".join(others)
        link = None
        if self.opts.web_url:
            from .web.links import dial_link, link_target

            target = link_target(browser, self.opts.web_url)
            link = dial_link(self.opts.web_url, target) if target else None
            text += f"\nOpen in a browser to chat:\n  {link}" if link else \
                "\n(no link for --web-url: the relay has no address a browser can dial)"
        self.out.event("reservation", text, relay=str(info.relay), expires=info.expires)
        self.out.event("listening", None, addrs=browser + others, browser_addrs=browser,
                       **({"link": link} if self.opts.web_url else {}))

    def _on_nat(self, b) -> None:
        self.out.event("nat", f"NAT: {b.describe()}", **b.to_dict())

    def _on_nat_peer(self, peer: PeerId, b, reason: str | None) -> None:
        self.out.event("nat-peer", f"{short(peer)} is behind {b.short()}"
                       + (f"; {reason}" if reason else ""),
                       peer=str(peer), **b.to_dict(), ruled_out=reason)

    def _on_message(self, peer: PeerId, text: str) -> None:
        self.out.event("message", f"<{short(peer)}> {text}", peer=str(peer), text=text)

    def _on_chat_closed(self, peer: PeerId, reason: str) -> None:
        log.debug("chat with %s: %s", peer, reason)

    def _on_file_start(self, peer: PeerId, name: str, size: int):
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

    async def listen(self, relay: str) -> None:
        relay_addr = Multiaddr(relay)
        if relay_addr.peer_id() is None:
            raise DialError("the relay address must end with /p2p/<relay peer id>")
        self.relays.add(relay_addr.peer_id())
        self.natinfo.start(stun_server_of(self.opts.ice_servers, relay_addr))
        self.out.event("peer", f"Peer id: {self.host.peer_id}", peer=str(self.host.peer_id))
        await self.host.listen("/webrtc")
        try:
            await self.host.listen_via_relay(relay_addr, RELAY_TIMEOUT)
        except asyncio.TimeoutError:
            raise DialError(f"no reservation on {relay} within {RELAY_TIMEOUT:.0f} s") from None
        if not self.opts.json:
            print("Waiting for peers. Type a message and press Enter to send it; "
                  "/send FILE sends a file; /quit leaves.", flush=True)

    async def dial(self, target: str) -> None:
        addr = Multiaddr(target)
        peer = addr.peer_id()
        if peer is None:
            raise DialError("the peer address must end with /p2p/<peer id>")
        relay_part = addr.split_last("p2p-circuit")
        if relay_part is not None and relay_part[0].peer_id() is not None:
            self.relays.add(relay_part[0].peer_id())
        self.natinfo.start(stun_server_of(self.opts.ice_servers,
                                          relay_part[0] if relay_part is not None else None))
        self.out.event("peer", f"Peer id: {self.host.peer_id}", peer=str(self.host.peer_id))
        self.out.event("dialing", f"Dialing {addr}", addr=str(addr))
        self._dial_started[peer] = time.perf_counter()
        try:
            conn = await self.host.dial(addr)
        except DialError as e:
            relayed = self.host.best_connection(peer, allow_limited=True)
            if relayed is None or not addr.has("webrtc"):
                raise
            self.out.event("error", f"{e}\nChatting over the relay instead ({describe(relayed)}).",
                           reason=str(e))
            self._report_connected(relayed)
        else:
            self._report_connected(conn)  # a relayed one when dialing a plain circuit address
        if not self.opts.json:
            print("Type a message and press Enter to send it; /send FILE sends a file; /quit "
                  "leaves.", flush=True)

    async def send_text(self, text: str) -> None:
        """`sent` only for a message written into an open stream within the relay's limits;
        otherwise `undelivered` naming the message and why."""
        if not self.peers:
            self.out.event("undelivered", f"Not sent (nobody to send to yet): {text}",
                           peer=None, text=text, reason="not sent: no connected peer")
            return
        for peer in list(self.peers):
            try:
                await self.chat.send(peer, text)
            except NotSent as e:
                reason = f"not sent: {e}"
            except (P2PError, OSError, ValueError) as e:
                reason = f"not delivered: {e}"
            else:
                self.out.event("sent", None, peer=str(peer), text=text)
                continue
            self.out.event("undelivered", f"Message to {short(peer)} {reason}: {text}",
                           peer=str(peer), text=text, reason=reason)

    async def send_file(self, path: str) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            self.out.event("error", f"No such file: {p}", reason=f"no such file: {p}")
            return
        size = p.stat().st_size
        for peer in list(self.peers):
            why = self._file_refused(peer, size)
            if why is not None:
                self.out.event("error", f"{p.name} not sent to {short(peer)}: {why}",
                               reason=f"not sent: {why}", peer=str(peer), name=p.name)
                continue
            started = time.perf_counter()
            try:
                r = await self.files.send(
                    peer, p, lambda d, t: self.out.progress(f"send {p.name}", d, t, started))
            except (P2PError, OSError) as e:
                self.out.event("error", f"Sending {p.name} to {short(peer)} failed: {e}",
                               reason=str(e))
                continue
            self.out.event("file-sent", f"Sent {p.name} to {short(peer)}: {r.size} bytes in "
                                        f"{r.seconds:.1f} s ({r.size / r.seconds / 1e6:.1f} MB/s), "
                                        "sha256 verified by the receiver",
                           peer=str(peer), name=p.name, bytes=r.size, sha256=r.sha256,
                           seconds=round(r.seconds, 3))

    def _file_refused(self, peer: PeerId, size: int) -> str | None:
        """Why a file of `size` bytes cannot go to `peer` now: it goes over a relayed connection
        (no direct one) whose relay limits leave no room for it; the relay would cut it off."""
        conn = self.host.best_connection(peer, allow_limited=True)
        meter = conn.limit_meter if conn is not None else None
        if meter is None:
            return None
        why = meter.refuse(size + FILE_OVERHEAD, time.monotonic())
        if why is None:
            return None
        room = meter.room()
        if room is not None and room > 0 and "data limit" in why:
            return (f"{size} bytes do not fit: the relay's {data_words(meter.data)} data limit "
                    f"for this relayed connection leaves room for {room // 1024} KiB")
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
            for peer in self.peers:
                for c in self.host.connections(peer):
                    print(f"  {peer} via {describe(c)}", flush=True)
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
        await self.host.close()
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)


async def run_peer(opts: PeerOptions, *, listen: str | None = None, dial: str | None = None) -> int:
    app = PeerApp(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stop.set)
    try:
        if listen is not None:
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
