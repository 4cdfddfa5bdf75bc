"""`p2prtc web` and `p2prtc demo` (registered through p2prtc.cli.EXTRA_COMMANDS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .app import DEFAULT_PORT, ConfigError, WebConfig, check_relay_addr, check_stun_url

if TYPE_CHECKING:  # imported where used: the ACME client is optional
    from ..acme import AcmeCertificates
    from ..transports.tls import ReloadingCertificate


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is between 0 and 65535 (0: any free port)")
    return port


def relay_arg(text: str) -> str:
    try:
        return str(check_relay_addr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def stun_arg(text: str) -> str:
    if text == "none":
        return text
    try:
        return check_stun_url(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def stun_list(values: list[str] | None) -> list[str] | None:
    """--stun values: None -> derive from the relay; ['none'] -> no ICE servers at all."""
    if not values:
        return None
    if "none" in values:
        if len(values) > 1:
            raise argparse.ArgumentTypeError("--stun none cannot be combined with other --stun URLs")
        return []
    return values


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "web", help="serve the browser app (a js-libp2p peer) with the relay pre-filled",
        description="Serve the browser peer: a page that connects to a relay, shows its own "
                    "/webrtc address, and chats and sends files to another peer over direct "
                    "WebRTC. The relay address and ICE servers given here are handed to the page "
                    "in /config.json.")
    p.add_argument("--host", default="0.0.0.0",
                   help="address to serve on (default 0.0.0.0: every interface)")
    p.add_argument("--port", type=port_arg, default=DEFAULT_PORT,
                   help=f"HTTP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--relay", type=relay_arg, metavar="MULTIADDR", action="append",
                   help="the relay's WebSocket address, e.g. /dns4/relay.example.org/tcp/443/tls/"
                        "ws/p2p/12D3KooW... (a `Listening on` line of `p2prtc relay`); repeatable: "
                        "an https page takes a /tls/ws, /wss or /webrtc-direct one")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve https with this certificate chain (PEM, e.g. certbot's "
                        "fullchain.pem; reloaded when the file changes)")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    acme = p.add_argument_group("ACME: a certificate without a separate tool (http-01)")
    acme.add_argument("--acme-domain", action="append", metavar="NAME",
                      help="get and renew a certificate for NAME (repeatable) from an ACME CA; "
                           "the CA checks NAME on --acme-http-port")
    acme.add_argument("--acme-email", metavar="E", help="contact address for the ACME account")
    acme.add_argument("--acme-directory", metavar="URL",
                      help="ACME directory URL (default: Let's Encrypt)")
    acme.add_argument("--acme-dir", metavar="DIR",
                      help="where the account key and certificate live (default: "
                           "$STATE_DIRECTORY/acme under systemd, else ~/.local/state/p2prtc/acme)")
    acme.add_argument("--acme-http-port", type=port_arg, default=80, metavar="P",
                      help="plain-http port for the challenges, redirecting to https (default 80)")
    acme.add_argument("--acme-ca", metavar="FILE",
                      help="CA file to trust for the ACME server's own https (private CAs)")
    p.add_argument("--stun", action="append", type=stun_arg, metavar="URL",
                   help="ICE server URL for the browsers (repeatable); default: "
                        "stun:<relay host>:3478, the relay's own STUN server; 'none' for none")
    add_common(p)
    p.set_defaults(func=cmd_web)

    p = sub.add_parser(
        "demo", help="relay + web app + a Python peer on this machine, in one command",
        description="Start a relay, the web app (pre-filled with the relay) and a Python peer that "
                    "echoes chat messages, all in one process. Open the printed URL and click "
                    "'Chat with the Python peer', or open it twice and chat between the pages.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address for the web app and the relay (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 lets other machines on the network join)")
    p.add_argument("--port", type=port_arg, default=DEFAULT_PORT,
                   help=f"web app HTTP port (default {DEFAULT_PORT})")
    p.add_argument("--relay-port", type=port_arg, default=4884, help="relay TCP port (default 4884)")
    p.add_argument("--websocket-port", type=port_arg, default=8080,
                   help="relay WebSocket port, the one browsers use (default 8080)")
    from ..cli import add_engine_arg

    add_engine_arg(p)
    add_common(p)
    p.set_defaults(func=cmd_demo)


def cmd_web(args: argparse.Namespace) -> int:
    from ..cli import CliError, check_tls_args, run_async
    from ..transports.tls import ReloadingCertificate

    relays = args.relay or []
    try:
        cfg = WebConfig(relay=relays[0] if relays else None, more_relays=relays[1:],
                        stun=stun_list(args.stun))
    except argparse.ArgumentTypeError as e:
        print(f"p2prtc web: error: {e}", file=sys.stderr)
        return 2
    check_tls_args(args, "", None)
    tls = ReloadingCertificate(args.tls_cert, args.tls_key) if args.tls_cert else None
    acme = None
    if args.acme_domain:
        from ..acme import LETS_ENCRYPT, AcmeCertificates

        if tls is not None:
            raise CliError("--acme-domain and --tls-cert exclude each other")
        try:
            import aioacme  # noqa: F401
        except ImportError:
            raise CliError("--acme-domain needs the ACME client: pip install 'p2prtc[acme]'") \
                from None
        acme = AcmeCertificates(args.acme_domain, args.acme_email, acme_state_dir(args.acme_dir),
                                directory=args.acme_directory or LETS_ENCRYPT,
                                ca_file=args.acme_ca)
    from ..acme import AcmeFailure

    try:
        return run_async(run_web(cfg, args.host, args.port, as_json=args.json, tls=tls,
                                 acme=acme, acme_http_port=args.acme_http_port))
    except (OSError, FileNotFoundError, AcmeFailure) as e:
        raise CliError(str(e)) from None


def acme_state_dir(given: str | None) -> str:
    import os

    if given:
        return given
    if os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        return os.path.join(os.environ["STATE_DIRECTORY"].split(":")[0], "acme")
    return os.path.expanduser("~/.local/state/p2prtc/acme")


async def run_web(cfg: WebConfig, host: str, port: int, *, as_json: bool = False,
                  tls: ReloadingCertificate | None = None, acme: AcmeCertificates | None = None,
                  acme_http_port: int = 80) -> int:
    from ..multiaddr import Multiaddr
    from .app import WebServer, config_for, rewrite_for_request

    started = time.monotonic()
    acme_running = None
    if acme is not None:
        from .acme_server import start_acme

        try:
            acme_running = await start_acme(acme, host, acme_http_port, port)
        except OSError as e:
            raise OSError(f"cannot serve ACME challenges on {host}:{acme_http_port}: "
                          f"{e.strerror or e}") from None
        tls = acme_running.certificate
    server = WebServer(cfg, tls=tls)
    try:
        await server.start(host, port)
    except OSError as e:
        if acme_running is not None:
            await acme_running.close()
        raise OSError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    if acme_running is not None:
        acme_running.https_port = server.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    doc = config_for(cfg)
    try:
        if as_json:
            print(json.dumps({"event": "listening", "t": round(time.monotonic() - started, 3),
                              "urls": [u for _, u in server.urls()], "port": server.port,
                              "relay": doc["relay"],
                              "relays": doc.get("relays", [doc["relay"]] if doc["relay"] else []),
                              "iceServers": doc["iceServers"],
                              **({"acme": {"domains": acme.domains,
                                           "expires": str(acme.expires()),
                                           "http_port": acme_running.http_port}}
                                 if acme_running is not None and acme is not None else {})}),
                  flush=True)
        else:
            lines = ["", f"  p2prtc web  ready in {(time.monotonic() - started) * 1000:.0f} ms", ""]
            lines += [f"  {label + ':':<9}{url}" for label, url in server.urls()]
            lines.append(f"  {'Relay:':<9}{doc['relay'] or 'none given: paste a relay address in the page'}")
            lines += [f"  {'':<9}{a}" for a in doc.get("relays", [])[1:]]
            if acme_running is not None and acme is not None:
                lines.append(f"  {'ACME:':<9}certificate for {', '.join(acme.domains)} until "
                             f"{acme.expires()}, challenges on port {acme_running.http_port}")
            if cfg.relay and rewrite_for_request(Multiaddr(cfg.relay), "192.0.2.1") != Multiaddr(cfg.relay):
                lines.append(f"  {'':<9}(pages opened through a Network URL get that host instead)")
            ice = [u for s in doc["iceServers"] for u in s["urls"]]
            lines.append(f"  {'STUN:':<9}{', '.join(ice) or 'none (direct connections only between hosts that see each other)'}")
            lines += ["", "  press Ctrl-C to stop", ""]
            print("\n".join(lines), flush=True)
        await stop.wait()
    finally:
        await server.close()
        if acme_running is not None:
            await acme_running.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..cli import CliError, run_async, use_engine_arg
    from ..errors import P2PError
    from .demo import DemoError, DemoOptions, run_demo

    use_engine_arg(args)  # the demo's Python listener

    opts = DemoOptions(host=args.host, port=args.port, relay_port=args.relay_port,
                       websocket_port=args.websocket_port, json=args.json)
    try:
        return run_async(run_demo(opts))
    except (DemoError, P2PError, FileNotFoundError) as e:
        raise CliError(str(e)) from None
