"""`p2prtc lab`: run the NAT lab (see docs/lab.md). Argument parsing and output only."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .nat import NAT_TYPES

if TYPE_CHECKING:
    from .procs import LabEvent
    from .scenario import RunOptions, RunResult

HELP_TYPES = ", ".join(NAT_TYPES)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    lab = subparsers.add_parser(
        "lab", help="NAT lab: two peers behind real NATs (network namespaces) meet via a relay",
        description="Builds an 'internet', a relay and two NATed networks in network namespaces "
                    "(needs root), then measures whether and how fast two peers connect directly. "
                    f"NAT types: {HELP_TYPES}.")
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    sub.required = True

    def impairment(p: argparse.ArgumentParser) -> None:
        p.add_argument("--peers", choices=["python", "browser", "mixed"], default="python",
                       help="python (default), browser (Chromium pages), or mixed (a browser "
                            "listener, a Python dialer)")
        p.add_argument("--delay", type=float, default=0.0, metavar="MS",
                       help="delay added to packets leaving each side towards the internet")
        p.add_argument("--loss", type=float, default=0.0, metavar="PCT",
                       help="packet loss on the same path, in percent")
        p.add_argument("--bytes", type=int, default=10_000_000, metavar="N",
                       help="bytes sent over the direct connection to measure throughput "
                            "(default 10 MB; 0 skips)")
        p.add_argument("--turn", choices=["builtin", "coturn", "none"], default="builtin",
                       help="TURN for pairs without a direct path: builtin (the relay's own TURN "
                            "server, default), coturn (Debian's coturn beside the relay, the "
                            "relay hands out its credentials) or none (the relayed circuit only)")
        p.add_argument("--no-probe", action="store_true", help="skip the NAT behaviour probe")
        p.add_argument("--keep-logs", metavar="DIR",
                       help="keep the processes' logs (stderr, events) in DIR; with -v they "
                            "carry debug output (default: a temporary directory, deleted unless "
                            "something went wrong)")

    p = sub.add_parser("run", help="one pair of NAT types",
                       description="Build the lab with NAT type A and B, let A listen via the "
                                   "relay and B dial it, and report what happened.")
    p.add_argument("--nat-a", required=True, choices=NAT_TYPES, metavar="TYPE",
                   help=f"NAT in front of peer A (the listener): {HELP_TYPES}")
    p.add_argument("--nat-b", required=True, choices=NAT_TYPES, metavar="TYPE",
                   help="NAT in front of peer B (the dialer)")
    impairment(p)
    add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("matrix", help="every pair of NAT types, prediction beside measurement")
    p.add_argument("--types", default=",".join(NAT_TYPES), metavar="T1,T2,...",
                   help="NAT types to combine (default: all)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    impairment(p)
    add_common(p)
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("chaos", help="faults on a direct connection: the relay killed and "
                                     "restarted, loss and delay, a peer killed",
                       description="A NATed pair on a direct WebRTC connection chats and sends "
                                   "files while the relay is killed (SIGKILL) and restarted, "
                                   "under loss and delay, and while one peer is killed; checks "
                                   "that nothing is lost, reservations come back within 2 s, "
                                   "and the other side reports a killed peer within 10 s.")
    p.add_argument("--nat-a", default="port-restricted", choices=NAT_TYPES, metavar="TYPE",
                   help="NAT in front of peer A (default port-restricted; the pair must have "
                        "a direct path)")
    p.add_argument("--nat-b", default="port-restricted", choices=NAT_TYPES, metavar="TYPE")
    p.add_argument("--faults", default="relay-kill,loss,peer-kill", metavar="F1,F2,...",
                   help="which faults, in this order: relay-kill, loss, peer-kill (default all)")
    p.add_argument("--file-bytes", type=int, default=10_000_000, metavar="N",
                   help="the file sent while the relay is killed and restarted (default 10 MB)")
    p.add_argument("--loss-file-bytes", type=int, default=10_000_000, metavar="N",
                   help="the file sent under loss and delay (default 10 MB)")
    p.add_argument("--loss", type=float, default=5.0, metavar="PCT",
                   help="loss on each side's way to the internet (default 5)")
    p.add_argument("--delay", type=float, default=50.0, metavar="MS",
                   help="delay on the same path (default 50: 100 ms RTT between the peers)")
    p.add_argument("--chat-interval", type=float, default=0.2, metavar="S",
                   help="one chat message every S seconds during each fault (default 0.2)")
    p.add_argument("--relay-down", type=float, default=5.0, metavar="S",
                   help="how long the killed relay stays down before it restarts (default 5)")
    p.add_argument("--turn", choices=["builtin", "none"], default="builtin")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the processes' logs in DIR")
    add_common(p)
    p.set_defaults(func=cmd_chaos)

    p = sub.add_parser("internet", help="a small internet: DHT nodes (go, rust, ours) and 3 "
                                        "relays; NATed peers find each other by peer id",
                       description="20 DHT servers (go-libp2p-kad-dht, rust-libp2p kad, ours) "
                                   "and 3 relays on the lab's internet; a listener behind NAT A "
                                   "finds two relays in the DHT and publishes its record, a "
                                   "dialer behind NAT B dials its peer id; then the relay the "
                                   "dial went through is SIGKILLed and a fresh dial must still "
                                   "reach the listener, which moves to the third relay. Reports "
                                   "lookup and connection times.")
    p.add_argument("--nodes", type=int, default=20, metavar="N",
                   help="DHT servers besides the relays, a third each of ours, go's, rust's "
                        "(default 20)")
    p.add_argument("--nat-a", default="port-restricted", choices=NAT_TYPES, metavar="TYPE",
                   help="NAT in front of the listener (default port-restricted)")
    p.add_argument("--nat-b", default="port-restricted", choices=NAT_TYPES, metavar="TYPE",
                   help="NAT in front of the dialers (symmetric on both: WebRTC via TURN)")
    p.add_argument("--no-kill", action="store_true", help="do not kill a relay")
    p.add_argument("--relay-grace", type=float, default=None, metavar="SECONDS",
                   help="the listener's `listen --relay-grace`: how long the killed relay may "
                        "be unreachable before it is replaced by the third (default 3)")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the processes' logs in DIR")
    add_common(p)
    p.set_defaults(func=cmd_internet)

    p = sub.add_parser("probe", help="build each NAT type and check it behaves as its name says",
                       description="Builds every NAT type (or --types) and measures its mapping "
                                   "and filtering with the probe; exit 1 on any mismatch.")
    p.add_argument("--types", default=",".join(NAT_TYPES), metavar="T1,T2,...")
    add_common(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("clean", help="delete namespaces left by lab runs that crashed")
    add_common(p)
    p.set_defaults(func=cmd_clean)


def _options(args: argparse.Namespace, nat_a: str, nat_b: str) -> RunOptions:
    from .scenario import RunOptions

    return RunOptions(nat_a=nat_a, nat_b=nat_b, peers=args.peers, delay_ms=args.delay,
                      loss_pct=args.loss, bytes=args.bytes, turn=args.turn,
                      probe=not args.no_probe,
                      keep_logs=args.keep_logs, verbose=args.verbose)


class Printer:
    """Progress on stdout: JSON lines with --json, a few human lines otherwise."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.t0 = time.monotonic()

    def emit(self, event: str, **fields: object) -> None:
        print(json.dumps({"event": event, "t": round(time.monotonic() - self.t0, 3), **fields}),
              flush=True)

    def on_event(self, source: str, ev: LabEvent) -> None:
        name = str(ev.get("event"))
        if self.as_json:
            if name in ("output",):
                return
            # "source" names the process; an event's own "source" (`found`: record, provider)
            # becomes "event_source"
            fields = {("event_source" if k == "source" else k): v for k, v in ev.items()
                      if k not in ("event", "t")}
            self.emit(name, source=source, **fields)
            return
        if source == "lab" and name == "leftovers-removed":
            print(f"removed leftovers of a crashed run: {', '.join(ev['namespaces'])}", flush=True)
        elif source == "lab" and name == "probed":
            for m in ev.get("mismatches", []):
                print(f"PROBE MISMATCH: {m}", flush=True)
        elif source in ("peer-a", "peer-b") and name == "nat":
            print(f"{source} detected: {ev.get('type')} (mapping {ev.get('mapping')}, filtering "
                  f"{ev.get('filtering')}, public {ev.get('public')})", flush=True)
        elif source == "peer-b" and name == "direct":
            how = "WebRTC via TURN" if ev.get("path") == "turn" else "direct WebRTC"
            print(f"{how} after {ev.get('ms')} ms", flush=True)
        elif source == "peer-b" and name == "no-direct":
            print(f"no direct connection after {ev.get('ms')} ms: {ev.get('reason')}", flush=True)


def _report(out: Printer, result: dict[str, Any], human: Callable[[], tuple[str, str]],
            ok: bool, failure: str) -> int:
    """A run's end: its result object (--json), else its description and table (`human`), then
    the exit status, with `failure` on stderr when the run did not hold."""
    if out.as_json:
        out.emit("result", **result)
    else:
        description, table = human()
        print(description, flush=True)
        print(flush=True)
        print(table, flush=True)
    if not ok:
        print(f"p2prtc: {failure}", file=sys.stderr)
        return 1
    return 0


def _run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the lab coroutine; Ctrl-C and SIGTERM cancel it, so its cleanup always runs (also when
    the shell started us with SIGINT ignored, as it does for background jobs)."""
    from ..cli import CliError, run_async
    from .netns import LabError

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            # Repeat until the task ends: a cancellation can be lost in a race with an awaited
            # future completing (asyncio.wait_for in Python 3.11, in libraries too); the lab's
            # cleanup itself shrugs off repeated cancellations.
            if task is not None and not task.done():
                task.cancel()
                loop.call_later(0.5, interrupt)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        return await coro_fn()

    try:
        return run_async(main())
    except LabError as e:
        raise CliError(str(e)) from None
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("p2prtc: interrupted; the lab's namespaces were removed", file=sys.stderr)
        return 130


def _require_support(peers: str = "python") -> None:
    """Refuse, in one line, where the lab cannot run (not root, no namespaces; for browser
    peers no Playwright or Chromium)."""
    from ..cli import CliError
    from .netns import unsupported_reason

    reason = unsupported_reason()
    if not reason and peers != "python":
        from .browser_page import missing_prerequisite

        reason = missing_prerequisite()
    if reason:
        raise CliError(reason)


def cmd_run(args: argparse.Namespace) -> int:
    from .scenario import describe_result, run_one

    _require_support(args.peers)
    out = Printer(args.json)

    async def go() -> int:
        r = await run_one(_options(args, args.nat_a, args.nat_b), out.on_event)
        if args.json:
            out.emit("result", **r.to_dict())
        else:
            print(describe_result(r), flush=True)
        if r.probe_mismatches:
            print("p2prtc: the NAT probe disagrees with the NAT type that was built: "
                  + "; ".join(r.probe_mismatches), file=sys.stderr)
            return 1
        if r.error and not r.failure:
            print(f"p2prtc: {r.error}", file=sys.stderr)
            return 1
        return 0

    return _run(go)


def cmd_matrix(args: argparse.Namespace) -> int:
    from .scenario import matrix_table, run_matrix

    types = _types(args.types)
    _require_support(args.peers)
    out = Printer(args.json)

    def on_result(r: RunResult) -> None:
        if args.json:
            out.emit("result", **r.to_dict())
        else:
            flag = "" if r.matches_theory and not r.probe_mismatches else "  <-- MISMATCH"
            how = (f"{r.path} in {r.time_to_direct_ms:.0f} ms" if r.direct and r.time_to_direct_ms
                   else r.path)
            print(f"{r.nat_a:>15} x {r.nat_b:<15} theory: {r.expected_path:<6} measured: "
                  f"{how}{flag}", flush=True)

    async def go() -> int:
        results = await run_matrix(_options(args, types[0], types[0]), types,
                                   out.on_event if args.json else None, on_result)
        table = matrix_table(results)
        if args.json:
            out.emit("matrix", table=table, mismatches=sum(not r.matches_theory for r in results))
        else:
            print()
            print(table, flush=True)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table + "\n")
        bad = [r for r in results if not r.matches_theory or r.probe_mismatches]
        if bad:
            print(f"p2prtc: {len(bad)} of {len(results)} pairs disagree with theory or their "
                  "probe", file=sys.stderr)
            return 1
        return 0

    return _run(go)


def cmd_chaos(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from .chaos import ChaosOptions, chaos_table, describe_chaos, run_chaos
    from .netns import LabError

    _require_support()
    try:
        opts = ChaosOptions(nat_a=args.nat_a, nat_b=args.nat_b,
                            faults=tuple(f.strip() for f in args.faults.split(",") if f.strip()),
                            file_bytes=args.file_bytes, loss_file_bytes=args.loss_file_bytes,
                            loss_pct=args.loss, delay_ms=args.delay,
                            chat_interval=args.chat_interval, relay_down=args.relay_down,
                            turn=args.turn,
                            keep_logs=args.keep_logs, verbose=args.verbose)
        opts.check()
    except LabError as e:
        raise CliError(str(e)) from None
    out = Printer(args.json)

    async def go() -> int:
        r = await run_chaos(opts, out.on_event if args.json else None)
        why = r.error or "; ".join(s for f in r.faults for s in f.failed)
        return _report(out, r.to_dict(), lambda: (describe_chaos(r), chaos_table(r)), r.ok,
                       f"the chaos run failed: {why}")

    return _run(go)


def cmd_internet(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from .internet import InternetOptions, describe_internet, internet_table, run_internet
    from .netns import LabError

    _require_support()
    opts = InternetOptions(nodes=args.nodes, nat_a=args.nat_a, nat_b=args.nat_b,
                           kill_relay=not args.no_kill, keep_logs=args.keep_logs,
                           verbose=args.verbose)
    if args.relay_grace is not None:
        opts.relay_grace = args.relay_grace
    try:
        opts.check()
    except LabError as e:
        raise CliError(str(e)) from None
    out = Printer(args.json)

    async def go() -> int:
        r = await run_internet(opts, out.on_event if args.json else None)
        return _report(out, r.to_dict(), lambda: (describe_internet(r), internet_table(r)),
                       r.ok, f"the internet run failed: {r.error or 'see the table'}")

    return _run(go)


def _types(text: str) -> tuple[str, ...]:
    from ..cli import CliError

    types = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in types if t not in NAT_TYPES]
    if bad or not types:
        raise CliError(f"unknown NAT type(s) {', '.join(bad) or '(none)'}: use {HELP_TYPES}")
    return types


def cmd_probe(args: argparse.Namespace) -> int:
    from .scenario import run_probes

    types = _types(args.types)
    _require_support()
    out = Printer(args.json)

    async def go() -> int:
        reports = await run_probes(types)
        for nat in types:
            rep = reports[nat]
            if args.json:
                out.emit("probe", nat=nat, **rep)
            else:
                mark = "ok" if rep["ok"] else "MISMATCH"
                print(f"{nat:>15}: measured {rep.get('type')} (mapping {rep.get('mapping')}, "
                      f"filtering {rep.get('filtering')}, {rep.get('hops')} NAT hop(s)) {mark}",
                      flush=True)
        bad = [n for n in types if not reports[n]["ok"]]
        if bad:
            print(f"p2prtc: the probe disagrees with the NAT built for: {', '.join(bad)}",
                  file=sys.stderr)
            return 1
        return 0

    return _run(go)


def cmd_clean(args: argparse.Namespace) -> int:
    from .netns import remove_leftovers

    _require_support()
    removed = remove_leftovers()
    if args.json:
        print(json.dumps({"event": "cleaned", "namespaces": removed}), flush=True)
    else:
        print(f"removed {len(removed)} leftover namespace(s)" + (
            f": {', '.join(removed)}" if removed else ""), flush=True)
    return 0
