"""Command-line interface: argument parsing only; the work happens in the modules it calls.

Exit codes: 0 ok, 1 failure (one-line reason on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__

if TYPE_CHECKING:  # (cli.py imports what a command needs only when it runs)
    from .identity import Identity
    from .relay.app import TurnOptions
    from .relay.limits import RateLimit
    from .resources import ResourceLimits, ScopeLimits
    from .transports.webrtc.engine import IceServer

_T = TypeVar("_T")


def seed_arg(text: str) -> int:
    """A key seed is one byte, as in rust-libp2p's relay-server (`u8`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError("must be between 0 and 255 (one byte, as in rust)")
    return value


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 1."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logs on stderr")
    p.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="stderr logs as text (default) or one JSON object per line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2prtc",
        description="Private-to-private WebRTC with libp2p: relay, browser app, Python peer, NAT lab.",
    )
    parser.add_argument("--version", action="version", version=f"p2prtc {__version__}")
    # also accepted before the command (`p2prtc -v listen ...`); added to the command's own -v
    parser.add_argument("-v", "--verbose", action="count", default=0, dest="global_verbose",
                        help="debug logs on stderr (-vv for more); also after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("id", help="print the peer id for a key seed or key file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--secret-key-seed", type=seed_arg, metavar="N",
                   help="derive the key like rust-libp2p's relay-server (0-255)")
    g.add_argument("--identity", metavar="FILE", help="key file (created on first use)")
    _add_common(p)
    p.set_defaults(func=cmd_id)

    p = sub.add_parser(
        "nat", help="tell how our NAT maps and filters UDP (RFC 5780), via a relay's STUN server",
        description="Ask a STUN server (our relay's: UDP 3478, with a second port/IP for RFC 5780) "
                    "how this machine's NAT behaves: endpoint-independent or per-destination "
                    "mapping, and which senders its filter lets in. Takes under 1.5 s.")
    p.add_argument("server", metavar="RELAY_OR_STUN",
                   help="a relay multiaddr (its host, UDP port 3478) or stun:HOST[:PORT]")
    _add_common(p)
    p.set_defaults(func=cmd_nat)

    p = sub.add_parser(
        "relay", help="run a circuit relay v2 node (drop-in for rust-libp2p's relay-server)",
        description="A circuit relay v2 node with TCP, WebSocket and a STUN server. Flags match "
                    "rust-libp2p's relay-server example; the same seed gives the same peer id.")
    p.add_argument("--port", type=int, default=4884, help="TCP port (default 4884)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--secret-key-seed", type=seed_arg, metavar="N",
                   help="derive the key from one byte, like rust's relay-server")
    g.add_argument("--identity", metavar="FILE", help="key file (created on first use)")
    p.add_argument("--websocket-port", type=int, metavar="P", help="WebSocket port")
    p.add_argument("--webrtc-port", type=int, metavar="P", help="WebRTC-direct UDP port")
    p.add_argument("--stun-port", type=int, default=3478, metavar="P",
                   help="STUN server UDP port (default 3478, 0 disables)")
    p.add_argument("--stun-alt-port", type=int, metavar="P",
                   help="second STUN port for NAT behaviour discovery (RFC 5780 CHANGE-REQUEST, "
                        "OTHER-ADDRESS; default: the STUN port + 1 when free, 0 disables)")
    p.add_argument("--stun-alt-ip", metavar="IP",
                   help="second IP of this host for STUN (RFC 5780: lets peers tell full-cone "
                        "from restricted NATs); needs --listen-ip")
    p.add_argument("--listen-ip", default="0.0.0.0", metavar="IP",
                   help="address to listen on (default 0.0.0.0)")
    p.add_argument("--announce", action="append", default=[], metavar="IP",
                   help="public IP or DNS name (or a full multiaddr) to advertise; repeatable")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics on http://IP:P/metrics")
    p.add_argument("--wss-port", type=int, metavar="P",
                   help="WebSocket over TLS port (/tls/ws, what https pages need); "
                        "needs --tls-cert and --tls-key")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="certificate chain (PEM, e.g. certbot's fullchain.pem); reloaded when "
                        "the file changes")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM, e.g. privkey.pem)")
    p.add_argument("--use-ipv6", action="store_true", help="also listen on IPv6 (::)")
    p.add_argument("--no-dht", dest="dht", action="store_false",
                   help="do not serve the Kademlia DHT (/ipfs/kad/1.0.0; on by default: the "
                        "relay is a bootstrap node, listeners publish their records on it)")
    p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                   help="a DHT server to join (another relay, any libp2p DHT node); repeatable")
    from .protocols import autonat_core

    p.add_argument("--no-autonat", dest="autonat", action="store_false",
                   help="do not serve AutoNAT v2 (/libp2p/autonat/2/dial-request; on by default: "
                        "peers learn whether they are publicly reachable)")
    p.add_argument("--autonat-rpm", type=int, default=autonat_core.SERVER_RPM, metavar="N",
                   help="AutoNAT requests a minute, all peers (default %(default)s, go's)")
    p.add_argument("--autonat-peer-rpm", type=int, default=autonat_core.SERVER_PER_PEER_RPM,
                   metavar="N", help="AutoNAT requests a minute from one peer (default %(default)s)")
    p.add_argument("--autonat-dial-data-rpm", type=int,
                   default=autonat_core.SERVER_DIAL_DATA_RPM, metavar="N",
                   help="AutoNAT requests a minute that cost dial data (another IP; default "
                        "%(default)s)")
    p.add_argument("--autonat-allow-private", action="store_true",
                   help="AutoNAT may dial a peer's own private/loopback IP (labs; never another "
                        "host's private address)")
    lim = p.add_argument_group("limits (defaults are rust-libp2p's relay defaults)")
    from .relay.limits import RelayLimits

    d = RelayLimits()
    lim.add_argument("--max-reservations", type=int, default=d.max_reservations)
    lim.add_argument("--max-reservations-per-peer", type=int, default=d.max_reservations_per_peer)
    lim.add_argument("--reservation-duration", type=float, default=d.reservation_duration,
                     metavar="SECONDS")
    lim.add_argument("--max-circuits", type=int, default=d.max_circuits)
    lim.add_argument("--max-circuits-per-peer", type=int, default=d.max_circuits_per_peer)
    lim.add_argument("--max-circuit-duration", type=float, default=d.max_circuit_duration,
                     metavar="SECONDS", help="0 = unlimited")
    lim.add_argument("--max-circuit-bytes", type=int, default=d.max_circuit_bytes,
                     metavar="BYTES", help="per direction; 0 = unlimited")
    lim.add_argument("--reservation-rate-per-peer", type=rate_arg,
                     default=_fmt_rate(d.reservation_rate_per_peer), metavar="N/SECONDS")
    lim.add_argument("--reservation-rate-per-ip", type=rate_arg,
                     default=_fmt_rate(d.reservation_rate_per_ip), metavar="N/SECONDS")
    lim.add_argument("--circuit-rate-per-peer", type=rate_arg,
                     default=_fmt_rate(d.circuit_rate_per_peer), metavar="N/SECONDS")
    lim.add_argument("--circuit-rate-per-ip", type=rate_arg,
                     default=_fmt_rate(d.circuit_rate_per_ip), metavar="N/SECONDS")
    lim.add_argument("--max-connections-per-ip", type=int, default=d.max_connections_per_ip)
    lim.add_argument("--connection-rate-per-ip", type=rate_arg,
                     default=_fmt_rate(d.connection_rate_per_ip), metavar="N/SECONDS")
    lim.add_argument("--no-circuit-limits", action="store_true",
                     help="lift the circuit duration and data limits")
    _add_budget_args(p)
    _add_turn_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_relay)

    for name, helptext, arg, argdesc in (
        ("listen", "reserve a slot on each relay given (all kept alive), print our /webrtc "
         "address through each, chat with dialers",
         "relay", "a relay's multiaddr, ending in /p2p/<relay id>; several: reserve on each; "
         "none, with --bootstrap: two relays found in the DHT"),
        ("dial", "connect to a peer over a relay and upgrade to direct WebRTC, then chat",
         "peer", "the peer's multiaddr, e.g. <relay>/p2p-circuit/webrtc/p2p/<peer id>, "
         "or a link to it (https://host/#/dial/<multiaddr>); several (e.g. through different "
         "relays): raced, the first direct connection wins"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext + ". Type a message and "
                           "Enter to send it; /send FILE sends a file; /quit leaves.")
        p.add_argument(arg, nargs="*" if name == "listen" else "+",
                       metavar=arg.upper() + "_MULTIADDR", help=argdesc)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--identity", metavar="FILE", help="key file (created on first use)")
        g.add_argument("--secret-key-seed", type=seed_arg, metavar="N", help=argparse.SUPPRESS)
        p.add_argument("--stun", action="append", metavar="URL",
                       help="ICE server URL, e.g. stun:relay.example.org:3478 (repeatable); "
                            "default: the STUN server on the relay's host; 'none' for no ICE servers")
        p.add_argument("--turn", action="append", metavar="URL",
                       help="TURN server URL, e.g. turn:turn.example.org:3478?transport=udp "
                            "(repeatable; with --turn-user/--turn-password); default: TURN "
                            "credentials from the relay in use, if it hands any out; 'none' for "
                            "no TURN")
        p.add_argument("--turn-user", metavar="NAME", help="username for --turn servers")
        p.add_argument("--turn-password", metavar="SECRET", help="password for --turn servers")
        p.add_argument("--save-dir", default=".", metavar="DIR",
                       help="where received files go (default: current directory)")
        p.add_argument("--quit-on-eof", action="store_true",
                       help="exit when standard input ends")
        p.add_argument("--tls-ca", metavar="FILE",
                       help="also trust this CA (PEM) for /tls/ws and /wss relays "
                            "(SSL_CERT_FILE replaces the system's CAs)")
        p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                       help="a DHT server (e.g. a p2prtc relay; repeatable): listen publishes "
                            "our signed peer record there, dial takes a bare PEER_ID and "
                            "finds its addresses")
        if name == "listen":
            p.add_argument("--relay-grace", type=float, default=None, metavar="SECONDS",
                           help="a relay unreachable this long is replaced by one from the DHT "
                                "(with --bootstrap; it is still retried) (default: 30)")
            p.add_argument("--direct", action="append", default=[], metavar="MULTIADDR",
                           help="also listen directly, e.g. /ip4/0.0.0.0/udp/4001/webrtc-direct "
                                "or /ip4/0.0.0.0/tcp/4001 (repeatable); advertised (and "
                                "published) once AutoNAT v2 servers confirm it public, which "
                                "also lets the relay reservations go")
            p.add_argument("--web-url", metavar="URL",
                           help="the page of `p2prtc web` (e.g. https://chat.example.org/): "
                                "print a link that opens it and dials us")
        _add_peer_budget_args(p)
        add_engine_arg(p)
        _add_common(p)
        p.set_defaults(func=cmd_peer, mode=name)

    # Subsystems with their own commands register them here (web, demo, lab).
    import importlib

    for module in EXTRA_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_parser(sub, _add_common)
    return parser


# Each module defines add_parser(subparsers, add_common) and sets func= on its parsers.
EXTRA_COMMANDS = ("p2prtc.web.cli", "p2prtc.lab.cli")


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "aiortc", "wrtc"), metavar="auto|aiortc|wrtc",
                   help="WebRTC engine: wrtc (libwebrtc, pip install 'p2prtc[fast]'), aiortc, or "
                        "auto (default, or $P2PRTC_ENGINE): wrtc when it works here")


def use_engine_arg(args: argparse.Namespace) -> None:
    """Resolve --engine/$P2PRTC_ENGINE for this process and say which engine on stderr."""
    from .transports.webrtc.engine_base import EngineUnavailable, choose_engine

    try:
        print(choose_engine(getattr(args, "engine", None)), file=sys.stderr, flush=True)
    except (EngineUnavailable, ValueError) as e:
        raise CliError(str(e)) from None


def _add_turn_args(p: argparse.ArgumentParser) -> None:
    import os

    from .relay import turn, turn_io

    g = p.add_argument_group("TURN (RFC 8656; credentials only for peers connected to the relay)")
    g.add_argument("--no-turn", action="store_true", help="serve no TURN")
    g.add_argument("--turn-port", type=int, metavar="P",
                   help="TURN UDP port (default: share the STUN port, as coturn does on 3478)")
    g.add_argument("--turn-tcp-port", type=int, metavar="P",
                   help="TURN over TCP port (default: the TURN UDP port's number; 0: any)")
    g.add_argument("--turn-realm", default=turn.DEFAULT_REALM, metavar="REALM",
                   help=f"TURN realm (default {turn.DEFAULT_REALM})")
    g.add_argument("--turn-secret", metavar="SECRET",
                   default=os.environ.get("P2PRTC_TURN_SECRET") or None,
                   help="shared secret of the TURN REST credentials (default: "
                        "$P2PRTC_TURN_SECRET, which other users cannot read in the process "
                        "list, else random per run); with --turn-url, the external server's "
                        "static-auth-secret")
    g.add_argument("--turn-url", action="append", default=[], metavar="URL",
                   help="hand out credentials for this external TURN server (coturn with "
                        "use-auth-secret) instead of serving TURN; repeatable, needs --turn-secret")
    g.add_argument("--turn-max-allocations", type=int, default=turn.MAX_ALLOCATIONS, metavar="N")
    g.add_argument("--turn-max-allocations-per-peer", type=int,
                   default=turn.MAX_ALLOCATIONS_PER_PEER, metavar="N")
    g.add_argument("--turn-max-lifetime", type=int, default=turn.MAX_LIFETIME, metavar="SECONDS")
    g.add_argument("--turn-max-bytes", type=int, default=turn.MAX_ALLOCATION_BYTES,
                   metavar="BYTES", help="per allocation, both directions; 0 = unlimited")
    g.add_argument("--turn-max-bandwidth", type=int, default=turn.MAX_ALLOCATION_BANDWIDTH,
                   metavar="BYTES_PER_S", help="per allocation; 0 = unlimited")
    g.add_argument("--turn-min-port", type=int, default=turn_io.MIN_RELAY_PORT, metavar="P",
                   help="relayed UDP ports start here (default %(default)s, as coturn)")
    g.add_argument("--turn-max-port", type=int, default=turn_io.MAX_RELAY_PORT, metavar="P")


def _turn_options(args: argparse.Namespace) -> TurnOptions:
    from .relay.app import TurnOptions
    from .relay.turn import TurnLimits

    if args.turn_url and not args.turn_secret:
        raise CliError("--turn-url needs --turn-secret (the external server's static-auth-secret)")
    for url in args.turn_url:
        if not url.startswith(("turn:", "turns:")):
            raise CliError(f"--turn-url needs a turn: or turns: URL, not {url!r}")
    if not 1 <= args.turn_min_port <= args.turn_max_port <= 65535:
        raise CliError("--turn-min-port/--turn-max-port: need 1 <= min <= max <= 65535")
    for name in ("turn_max_allocations", "turn_max_allocations_per_peer", "turn_max_lifetime",
                 "turn_max_bytes", "turn_max_bandwidth"):
        if getattr(args, name) < 0:
            raise CliError(f"--{name.replace('_', '-')} cannot be negative")
    return TurnOptions(
        enabled=not args.no_turn, port=args.turn_port, tcp_port=args.turn_tcp_port,
        realm=args.turn_realm, secret=args.turn_secret, min_port=args.turn_min_port,
        max_port=args.turn_max_port, external_urls=args.turn_url,
        limits=TurnLimits(max_allocations=args.turn_max_allocations,
                          max_allocations_per_peer=args.turn_max_allocations_per_peer,
                          max_lifetime=args.turn_max_lifetime, max_bytes=args.turn_max_bytes,
                          max_bandwidth=args.turn_max_bandwidth))


def ice_servers_arg(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    if values == ["none"]:
        return []
    for v in values:
        if not v.startswith(("stun:", "turn:", "turns:")):
            raise CliError(f"--stun needs a stun:/turn: URL, not {v!r}")
    return values


def turn_arg(urls: list[str] | None, user: str | None,
             password: str | None) -> str | list[IceServer]:
    """--turn/--turn-user/--turn-password -> "auto", "none" or a list of IceServers."""
    if not urls:
        if user or password:
            raise CliError("--turn-user/--turn-password need --turn URL")
        return "auto"
    if urls == ["none"]:
        return "none"
    from .transports.webrtc.engine import IceServer

    servers: list[IceServer] = []
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            raise CliError(f"--turn needs a turn:/turns: URL, not {url!r}")
        try:
            servers.append(IceServer.parse(url, user, password))
        except ValueError as e:
            raise CliError(f"--turn: {e}") from None
    return servers


def cmd_peer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import P2PError
    from .peerapp import PeerOptions, run_peer

    use_engine_arg(args)
    opts = PeerOptions(identity=load_identity(args), ice_servers=ice_servers_arg(args.stun),
                       turn=turn_arg(args.turn, args.turn_user, args.turn_password),
                       json=args.json, save_dir=Path(args.save_dir),
                       quit_on_eof=args.quit_on_eof, tls_ca=args.tls_ca,
                       web_url=getattr(args, "web_url", None), bootstrap=args.bootstrap,
                       resources=peer_budget_limits(args),
                       direct=list(getattr(args, "direct", [])))
    if getattr(args, "relay_grace", None) is not None:
        if args.relay_grace <= 0:
            raise CliError("--relay-grace must be more than 0 seconds")
        opts.relay_grace = args.relay_grace
    try:
        if args.mode == "listen":
            return run_async(run_peer(opts, listen=args.relay))
        from .web.links import addr_from_link

        # a link from the page or from `listen --web-url` (https://host/#/dial/<addr>) works too
        return run_async(run_peer(opts, dial=[addr_from_link(a) or a for a in args.peer]))
    except (P2PError, ValueError) as e:
        raise CliError(str(e)) from None


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    """The resource manager's budgets (p2prtc.resources; docs/deploy.md#budgets)."""
    from .resources import ResourceLimits

    d = ResourceLimits()
    g = p.add_argument_group(
        "budgets (go-libp2p's resource manager defaults, scaled to a 16 GiB node; 0 = none; "
        "a connection or stream over a budget is refused with the reason, others go on)")
    for flag, value, what in (
        ("--max-connections", d.system.conns, "connections, inbound and outbound together"),
        ("--max-connections-per-peer", d.peer.conns, "connections of one peer"),
        ("--max-pending-connections", d.transient.conns_inbound,
         "inbound connections still handshaking (no peer id yet)"),
        ("--max-pending-connections-per-ip", d.pending_per_ip,
         "inbound connections still handshaking from one IP"),
        ("--max-streams", d.system.streams, "streams, all connections together"),
        ("--max-streams-per-peer", d.peer.streams, "streams of one peer"),
    ):
        g.add_argument(flag, type=int, metavar="N", help=f"{what} (default {value})")
    for flag, value, what in (
        ("--max-memory", d.system.memory, "bytes buffered in streams, all peers together"),
        ("--max-memory-per-peer", d.peer.memory, "bytes buffered in one peer's streams"),
    ):
        g.add_argument(flag, type=size_arg, metavar="BYTES",
                       help=f"{what}; K/M/G suffixes (KiB...) (default {value >> 20}M)")
    g.add_argument("--limit-loopback", action="store_true",
                   help="apply the per-IP limit to 127.0.0.0/8 and ::1 too (go exempts them)")


def _add_peer_budget_args(p: argparse.ArgumentParser) -> None:
    """The budgets a peer is most likely to change (docs/deploy.md#budgets); the others keep
    their defaults."""
    from .resources import DEFAULT_PEER

    p.add_argument("--max-connections-per-peer", type=int, metavar="N",
                   help="connections of one peer, relayed and WebRTC (default "
                        f"{DEFAULT_PEER.conns})")
    p.add_argument("--max-memory-per-peer", type=size_arg, metavar="BYTES",
                   help="bytes one peer's streams may hold unread; K/M/G suffixes (default "
                        f"{DEFAULT_PEER.memory >> 20}M); past it the stream that passed it is reset")


def peer_budget_limits(args: argparse.Namespace) -> ResourceLimits | None:
    """ResourceLimits for `listen`/`dial`, or None (the defaults) when no budget flag is given."""
    from dataclasses import replace

    from .resources import ResourceLimits

    if args.max_connections_per_peer is None and args.max_memory_per_peer is None:
        return None
    d = ResourceLimits()
    peer = d.peer
    if args.max_connections_per_peer is not None:
        n = args.max_connections_per_peer
        peer = replace(peer, conns_inbound=n, conns_outbound=n, conns=n)
    if args.max_memory_per_peer is not None:
        peer = replace(peer, memory=args.max_memory_per_peer)
    return replace(d, peer=peer)


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BYTES, e.g. 536870912 or 512M, "
                                         f"not {text!r}") from None


def budget_limits(args: argparse.Namespace) -> ResourceLimits:
    """ResourceLimits from the budget flags: a count flag sets the inbound, outbound and total
    limits of its scope to N."""
    from dataclasses import replace

    from .resources import ResourceLimits

    d = ResourceLimits(exempt_loopback=not args.limit_loopback)

    def count(scope: ScopeLimits, n: int | None, kind: str) -> ScopeLimits:
        if n is None:
            return scope
        return replace(scope, **{f"{kind}_inbound": n, f"{kind}_outbound": n, kind: n})

    system = count(count(d.system, args.max_connections, "conns"), args.max_streams, "streams")
    peer = count(count(d.peer, args.max_connections_per_peer, "conns"),
                 args.max_streams_per_peer, "streams")
    if args.max_memory is not None:
        system = replace(system, memory=args.max_memory)
    if args.max_memory_per_peer is not None:
        peer = replace(peer, memory=args.max_memory_per_peer)
    transient = d.transient
    if args.max_pending_connections is not None:
        transient = replace(transient, conns_inbound=args.max_pending_connections)
    pending = d.pending_per_ip if args.max_pending_connections_per_ip is None \
        else args.max_pending_connections_per_ip
    return replace(d, system=system, peer=peer, transient=transient, pending_per_ip=pending)


def _fmt_rate(rate: RateLimit) -> str:
    return f"{rate.limit}/{rate.period:g}"


def rate_arg(text: str) -> RateLimit:
    from .relay.limits import RateLimit

    try:
        n, _, period = text.partition("/")
        rate = RateLimit(int(n), float(period))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS, e.g. 30/120, not {text!r}") from None
    if rate.limit < 1 or rate.period <= 0:
        raise argparse.ArgumentTypeError("rate needs N >= 1 and SECONDS > 0")
    return rate


def cmd_relay(args: argparse.Namespace) -> int:
    from .relay.app import AutoNATLimits, RelayOptions, run_relay
    from .relay.limits import RelayLimits

    def rate(v: RateLimit | str) -> RateLimit:
        return v if not isinstance(v, str) else rate_arg(v)

    limits = RelayLimits(
        max_reservations=args.max_reservations,
        max_reservations_per_peer=args.max_reservations_per_peer,
        reservation_duration=args.reservation_duration,
        max_circuits=args.max_circuits,
        max_circuits_per_peer=args.max_circuits_per_peer,
        max_circuit_duration=args.max_circuit_duration,
        max_circuit_bytes=args.max_circuit_bytes,
        reservation_rate_per_peer=rate(args.reservation_rate_per_peer),
        reservation_rate_per_ip=rate(args.reservation_rate_per_ip),
        circuit_rate_per_peer=rate(args.circuit_rate_per_peer),
        circuit_rate_per_ip=rate(args.circuit_rate_per_ip),
        max_connections_per_ip=args.max_connections_per_ip,
        connection_rate_per_ip=rate(args.connection_rate_per_ip),
    )
    if args.no_circuit_limits:
        limits.lift_circuit_limits()
    check_tls_args(args, "--wss-port", args.wss_port)
    if args.stun_alt_ip is not None:
        import ipaddress

        try:
            if ipaddress.ip_address(args.listen_ip).is_unspecified:
                raise CliError("--stun-alt-ip needs --listen-ip (the primary address the "
                               "second one pairs with)")
            ipaddress.ip_address(args.stun_alt_ip)
        except ValueError as e:
            raise CliError(f"--stun-alt-ip: {e}") from None
    opts = RelayOptions(
        identity=load_identity(args), port=args.port, websocket_port=args.websocket_port,
        webrtc_port=args.webrtc_port, stun_port=args.stun_port, listen_ip=args.listen_ip,
        stun_alt_port=args.stun_alt_port, stun_alt_ip=args.stun_alt_ip,
        use_ipv6=args.use_ipv6, announce=args.announce, metrics_port=args.metrics_port,
        wss_port=args.wss_port, tls_cert=args.tls_cert, tls_key=args.tls_key,
        limits=limits, json=args.json, turn=_turn_options(args),
        resources=budget_limits(args), dht=args.dht, bootstrap=args.bootstrap,
        autonat=args.autonat, autonat_allow_private=args.autonat_allow_private,
        autonat_limits=AutoNATLimits(rpm=args.autonat_rpm, per_peer_rpm=args.autonat_peer_rpm,
                                     dial_data_rpm=args.autonat_dial_data_rpm),
    )
    try:
        return run_async(run_relay(opts))
    except RuntimeError as e:
        raise CliError(str(e)) from None


def check_tls_args(args: argparse.Namespace, needs: str, wanted: object) -> None:
    """--tls-cert and --tls-key go together (and with `needs`, when given) and must load."""
    from .transports.tls import CertificateError, ReloadingCertificate

    if wanted is not None and not (args.tls_cert and args.tls_key):
        raise CliError(f"{needs} needs --tls-cert FILE and --tls-key FILE")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        try:
            ReloadingCertificate(args.tls_cert, args.tls_key)
        except CertificateError as e:
            raise CliError(str(e)) from None


def load_identity(args: argparse.Namespace) -> Identity:
    from .identity import Identity

    seed = getattr(args, "secret_key_seed", None)
    path = getattr(args, "identity", None)
    if seed is not None:
        try:
            return Identity.from_seed(seed)
        except ValueError as e:
            raise CliError(str(e)) from None
    if path:
        try:
            return Identity.load_or_create(path)
        except (OSError, ValueError) as e:
            raise CliError(f"cannot use key file {path}: {e}") from None
    return Identity.generate()


def cmd_nat(args: argparse.Namespace) -> int:
    import json

    from .nat import detect, stun_server_for

    try:
        host, port = stun_server_for(args.server)
    except ValueError as e:
        raise CliError(f"not a relay multiaddr or stun: URL: {e}") from None
    b = run_async(detect(host, port))
    if args.json:
        print(json.dumps(b.to_dict()), flush=True)
    elif b.public is not None:
        print(b.describe(), flush=True)
    if b.public is None:
        raise CliError(b.error or f"no answer from the STUN server at {b.server}")
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    ident = load_identity(args)
    print(ident.peer_id)
    return 0


def verbosity(args: argparse.Namespace) -> int:
    """-v/-vv counted before and after the command name."""
    return getattr(args, "global_verbose", 0) + getattr(args, "verbose", 0)


def setup_logging(verbose: int, log_format: str = "text") -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if log_format == "json":
        from .logjson import JsonLogFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=level, handlers=[handler])
        return
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a command's coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbosity(args), getattr(args, "log_format", "text"))
    try:
        code: int = args.func(args)  # (set_defaults(func=cmd_...) on every subcommand)
        return code
    except CliError as e:
        print(f"p2prtc: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
