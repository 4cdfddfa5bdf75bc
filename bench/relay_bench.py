"""Relay benchmark: `p2prtc relay` against the js-libp2p relay (Node), the py-libp2p relay and the
rust-libp2p relay, measured in one run on loopback with the same load generator.

    .venv/bin/python bench/relay_bench.py [--reservations 200] [--circuits 200]
        [--concurrency 20] [--mb 50] [--live 1000] [--json out.json]

The load generator is this process: p2prtc `Host`s (one per simulated client, each its own peer
id and TCP connection) on one asyncio loop (uvloop when installed). Its CPU time is reported
with every number, next to the relay's: on a 2-core machine the two compete.

- reservations/s: N fresh clients, `concurrency` at a time, each dials the relay (TCP, noise,
  yamux) and sends RESERVE; wall time from the first dial to the last OK.
- circuits/s: one listener holds a reservation; 20 dialer clients, already connected to the
  relay, open N circuits (`concurrency` at a time): hop CONNECT, relay -> listener STOP, then
  noise + yamux over the circuit; each circuit is closed once up. Wall time for all N.
- relayed throughput: two p2prtc testpeer processes (a listener with a reservation, a dialer)
  echo `--mb` MB through one circuit (MB/s counts one direction; the relay carries it both
  ways at once), with circuit limits lifted.
- memory: relay VmRSS when idle (just started) and with `--live` clients each holding a live
  reservation (and its connection), and the difference per reservation.

Each of the first three is measured `--runs` times, round-robin over the relays (run 1 of each,
then run 2, ...), and every table also gives the relay's CPU time per operation, which other
load on the machine disturbs less than the rates.

Relays are fresh processes for every measurement, limits lifted: p2prtc with its CLI flags; js
by peer.mjs --relay (1024 reservations, no default circuit limit, connection manager limits
raised); py-libp2p by bench/pylibp2p_peer.py --relay; rust by `p2prtc-interop-rust relay
--no-limits`, which lifts only the per-circuit limits: rust's reservation and circuit caps and
rate limits (128 reservations, 16 circuits, 60 per minute per IP) stay, so its rows use smaller
counts (`--rust-count`) that fit in the burst allowance and its memory row is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from peers import (ROOT, TCP, ControlledProcess, CpuMeter, PeerProcessError, available,
                   fmt_range, machine_info, markdown_table, med, peer_process, pid_of, ratio,
                   rss_kib, rust_binary, self_cpu, stop_all)

sys.path.insert(0, str(ROOT / "src"))

from p2prtc.host import Host  # noqa: E402
from p2prtc.identity import Identity  # noqa: E402
from p2prtc.multiaddr import Multiaddr  # noqa: E402
from p2prtc.protocols import relay_hop as hop  # noqa: E402
from p2prtc.protocols.relay_hop import HopMessage  # noqa: E402
from p2prtc.transports.circuit import CircuitListener, CircuitTransport  # noqa: E402

RELAYS = ["p2prtc", "js", "py-libp2p", "rust"]
BIG = "1000000"


class CliRelay(ControlledProcess):
    """`p2prtc relay` (the real CLI) with every limit lifted; `ready` from its `listening` event."""

    def __init__(self) -> None:
        rate = f"{BIG}/1"
        argv = [str(ROOT / ".venv/bin/p2prtc"), "relay", "--port", "0", "--listen-ip", "127.0.0.1",
                "--stun-port", "0", "--json", "--no-circuit-limits",
                "--max-reservations", BIG, "--max-reservations-per-peer", BIG,
                "--max-circuits", BIG, "--max-circuits-per-peer", BIG,
                "--reservation-rate-per-peer", rate, "--reservation-rate-per-ip", rate,
                "--circuit-rate-per-peer", rate, "--circuit-rate-per-ip", rate,
                "--max-connections-per-ip", BIG, "--connection-rate-per-ip", rate]
        super().__init__(argv, name="p2prtc-relay", cwd=str(ROOT))

    async def start(self, timeout: float = 60) -> dict:
        self.ready = {"event": "ready"}
        # ControlledProcess.start waits for "ready": feed it from the CLI's "listening" event
        self._events.append(self.ready)
        await super().start(timeout)
        ev = await self.wait_event("listening", timeout=timeout)
        self.ready = {"peerId": ev["peer"], "addrs": ev["addrs"]}
        return self.ready


def start_relay(impl: str) -> ControlledProcess:
    if impl == "p2prtc":
        return CliRelay()
    return peer_process(impl, [TCP], relay=True, name=f"{impl}-relay")


def relay_tcp_addr(relay: ControlledProcess) -> str:
    pid = relay.ready["peerId"]
    for a in relay.ready["addrs"]:
        parts = a.split("/")
        if "tcp" in parts and "127.0.0.1" in parts and not {"ws", "wss", "p2p-circuit"} & set(parts):
            return a if "/p2p/" in a else f"{a}/p2p/{pid}"
    raise LookupError(f"relay has no TCP address: {relay.ready}")


def new_client() -> Host:
    return Host(Identity.generate(), identify=False)


_closing: set[asyncio.Task] = set()


def close_later(closable) -> None:
    """Close a stream/connection without waiting for it (see reserve())."""
    t = asyncio.ensure_future(closable.close())
    _closing.add(t)
    t.add_done_callback(_closing.discard)


async def finish_closing(timeout: float = 15) -> None:
    if _closing:
        await asyncio.wait(list(_closing), timeout=timeout)


async def reserve(conn) -> None:
    """RESERVE on the relay over `conn`: done when the relay's OK arrives.

    Like p2prtc.transports.circuit.reserve, except that it does not wait for the relay to close
    its side of the hop stream: p2prtc's yamux `close()` waits up to 10 s for the remote FIN,
    and py-libp2p's relay never sends one, so every reservation would take 10 s and the number
    would measure that timeout, not the relay."""
    stream = await conn.new_stream([hop.HOP])
    await hop.write_message(stream, HopMessage(type=HopMessage.RESERVE))
    reply = await hop.read_message(stream, HopMessage)
    close_later(stream)
    if reply.type != HopMessage.STATUS or reply.status != hop.OK:
        raise RuntimeError(f"reservation refused: {hop.status_name(reply.status)}")


async def bounded(n: int, concurrency: int, fn) -> tuple[int, list[str]]:
    """Run fn(i) for i in range(n), `concurrency` at a time; (successes, error texts)."""
    sem = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(i: int) -> bool:
        async with sem:
            try:
                await fn(i)
                return True
            except Exception as e:  # noqa: BLE001 - counted, first few reported
                errors.append(f"{type(e).__name__}: {e}")
                return False

    done = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(done), errors


async def bench_reservations(impl: str, n: int, concurrency: int, log) -> dict:
    relay = start_relay(impl)
    clients = [new_client() for _ in range(n)]
    try:
        await relay.start()
        addr = Multiaddr(relay_tcp_addr(relay))

        async def one(i: int) -> None:
            conn = await clients[i].dial(addr)
            await reserve(conn)

        with CpuMeter({"relay": pid_of(relay)}) as m:
            ok, errors = await bounded(n, concurrency, one)
        res = {"n": n, "ok": ok, "errors": errors[:5], "n_errors": len(errors), "wall_s": m.wall,
               "per_s": ok / m.wall, "relay_cpu_pct": m.percent("relay"),
               "loadgen_cpu_pct": 100 * m.cpu["controller"] / m.wall, "others_cpu_pct": m.percent("others"),
               "relay_cpu_ms_per_op": 1000 * m.cpu["relay"] / ok if ok else None,
               "loadgen_cpu_ms_per_op": 1000 * m.cpu["controller"] / ok if ok else None}
        log(f"  reservations {impl}: {ok}/{n} in {m.wall:.2f} s = {res['per_s']:.0f}/s, relay CPU "
            f"{res['relay_cpu_pct']:.0f}%, load generator CPU {res['loadgen_cpu_pct']:.0f}%, rest of machine {res['others_cpu_pct']:.0f}%"
            + (f"; errors e.g. {errors[0]}" if errors else ""))
        return res
    finally:
        await finish_closing()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.stop()


async def bench_circuits(impl: str, n: int, concurrency: int, log, n_dialers: int = 20) -> dict:
    relay = start_relay(impl)
    listener = new_client()
    dialers = [new_client() for _ in range(min(n_dialers, n))]
    try:
        await relay.start()
        addr = Multiaddr(relay_tcp_addr(relay))
        await listener.listen(addr.encapsulate("/p2p-circuit"))
        await listener.listeners(CircuitListener)[-1].reserved(30)
        for d in dialers:
            await d.dial(addr)
        dst = listener.peer_id

        async def one(i: int) -> None:
            conn = await dialers[i % len(dialers)].transport(CircuitTransport).dial_via(addr, dst)
            close_later(conn)  # counted once noise + yamux over the circuit are up

        with CpuMeter({"relay": pid_of(relay)}) as m:
            ok, errors = await bounded(n, concurrency, one)
        res = {"n": n, "ok": ok, "errors": errors[:5], "n_errors": len(errors), "wall_s": m.wall,
               "per_s": ok / m.wall, "relay_cpu_pct": m.percent("relay"),
               "loadgen_cpu_pct": 100 * m.cpu["controller"] / m.wall, "others_cpu_pct": m.percent("others"),
               "relay_cpu_ms_per_op": 1000 * m.cpu["relay"] / ok if ok else None,
               "loadgen_cpu_ms_per_op": 1000 * m.cpu["controller"] / ok if ok else None}
        log(f"  circuits {impl}: {ok}/{n} in {m.wall:.2f} s = {res['per_s']:.0f}/s, relay CPU "
            f"{res['relay_cpu_pct']:.0f}%, load generator CPU {res['loadgen_cpu_pct']:.0f}%, rest of machine {res['others_cpu_pct']:.0f}%"
            + (f"; errors e.g. {errors[0]}" if errors else ""))
        return res
    finally:
        await finish_closing()
        await asyncio.gather(*(c.close() for c in [listener, *dialers]), return_exceptions=True)
        await relay.stop()


async def bench_relayed_throughput(impl: str, nbytes: int, runs: int, log) -> dict:
    relay = start_relay(impl)
    lp = peer_process("p2prtc", [TCP], name="circuit-listener")
    dp = peer_process("p2prtc", [TCP], name="circuit-dialer")
    res = {"bytes": nbytes, "mb_s": [], "relay_cpu_pct": [], "dialer_cpu_pct": [],
           "listener_cpu_pct": [], "others_cpu_pct": [], "relay_cpu_s_per_gb": []}
    try:
        await asyncio.gather(relay.start(), lp.start(), dp.start())
        raddr = relay_tcp_addr(relay)
        circuit = (await lp.call("listen_relay", addr=raddr, timeout=60))["addrs"]
        target = next((a for a in circuit if "/p2p-circuit/" in a),
                      f"{raddr}/p2p-circuit/p2p/{lp.ready['peerId']}")
        await dp.call("echo", addr=target, bytes=1 << 20, timeout=120)  # connect + warm up
        pids = {"relay": pid_of(relay), "dialer": pid_of(dp), "listener": pid_of(lp)}
        for _ in range(runs):
            with CpuMeter(pids) as m:
                reply = await dp.call("echo", addr=target, bytes=nbytes, timeout=900)
            if reply["sha_sent"] != reply["sha_received"]:
                raise PeerProcessError(f"relayed echo via {impl}: data differs")
            res["mb_s"].append(nbytes / 1e6 / m.wall)
            # the relay forwards nbytes in each direction
            res["relay_cpu_s_per_gb"].append(m.cpu["relay"] / (2 * nbytes / 1e9))
            for k in ("relay", "dialer", "listener", "others"):
                res[f"{k}_cpu_pct"].append(m.percent(k))
            log(f"  relayed echo via {impl}: {res['mb_s'][-1]:.1f} MB/s, relay CPU "
                f"{res['relay_cpu_pct'][-1]:.0f}%, endpoints {res['dialer_cpu_pct'][-1]:.0f}% / "
                f"{res['listener_cpu_pct'][-1]:.0f}%, rest of machine {res['others_cpu_pct'][-1]:.0f}%")
        return res
    finally:
        await stop_all([dp, lp, relay])


async def bench_memory(impl: str, live: int, concurrency: int, log) -> dict:
    relay = start_relay(impl)
    clients: list[Host] = []
    try:
        await relay.start()
        pid = pid_of(relay)
        addr = Multiaddr(relay_tcp_addr(relay))
        await asyncio.sleep(1.0)  # let the runtime finish starting (timer, not synchronisation)
        idle = rss_kib(pid)
        clients = [new_client() for _ in range(live)]

        async def one(i: int) -> None:
            conn = await clients[i].dial(addr)
            await reserve(conn)

        t0, c0 = time.perf_counter(), self_cpu()
        ok, errors = await bounded(live, concurrency, one)
        took, cpu = time.perf_counter() - t0, self_cpu() - c0
        await asyncio.sleep(2.0)  # let the relay settle before reading RSS
        loaded = rss_kib(pid)
        res = {"live": ok, "wanted": live, "n_errors": len(errors), "errors": errors[:5],
               "idle_kib": idle, "loaded_kib": loaded,
               "per_reservation_kib": (loaded - idle) / ok if ok else None,
               "setup_s": took, "loadgen_cpu_s": cpu}
        log(f"  memory {impl}: idle {idle / 1024:.1f} MiB, {ok} live reservations "
            f"{loaded / 1024:.1f} MiB (+{(loaded - idle) / max(ok, 1):.1f} KiB each); made in "
            f"{took:.1f} s" + (f"; errors e.g. {errors[0]}" if errors else ""))
        return res
    finally:
        await finish_closing()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.stop()


def _runs_median(x: dict | None, field: str) -> float | None:
    if not x or "runs" not in x:
        return None
    vals = []
    for run in x["runs"]:
        v = run.get(field)
        if isinstance(v, list):
            vals.extend(v)
        elif v is not None:
            vals.append(v)
    return med(vals) if vals else None


def _runs_list(x: dict | None, field: str) -> list[float]:
    out: list[float] = []
    for run in (x or {}).get("runs", []):
        v = run.get(field)
        out.extend(v if isinstance(v, list) else [v] if v is not None else [])
    return out


def report(results: dict) -> str:
    m = results["machine"]
    a = results["args"]
    out = [f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['date']}; "
           f"load average at start {m['loadavg'][0]:.2f}",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    r = results["relays"]
    labels = results["labels"]
    shown = [i for i in RELAYS if i in labels]

    def val(impl, key, field):
        x = r.get(impl, {}).get(key)
        if not x or "skipped" in x:
            return None
        if key == "memory":
            return x.get(field) if "error" not in x else None
        return _runs_median(x, field)

    def unavailable(impl, key):
        if impl in results["missing"]:
            return f"not run: {results['missing'][impl]}"
        x = r.get(impl, {}).get(key)
        if x is None:
            return "not measured"
        if "skipped" in x:
            return "not measured: " + x["skipped"]
        if "error" in x:
            return "failed: " + x["error"].splitlines()[0][:100]
        return None

    def rate_table(key: str, what: str) -> str:
        rows = []
        for impl in shown:
            bad = unavailable(impl, key)
            if bad:
                rows.append([labels.get(impl, impl), bad] + [""] * 7)
                continue
            x = r[impl][key]
            ok = sum(run["ok"] for run in x["runs"])
            n = sum(run["n"] for run in x["runs"])
            rows.append([labels.get(impl, impl), fmt_range(_runs_list(x, "per_s"), 0), f"{ok}/{n}",
                         f"{val(impl, key, 'relay_cpu_ms_per_op'):.2f}",
                         f"{val(impl, key, 'relay_cpu_pct'):.0f}%", f"{val(impl, key, 'loadgen_cpu_pct'):.0f}%",
                         f"{val(impl, key, 'others_cpu_pct'):.0f}%",
                         ratio(val(impl, key, "per_s"), val("js", key, "per_s")),
                         ratio(val("js", key, "relay_cpu_ms_per_op"), val(impl, key, "relay_cpu_ms_per_op"))])
        return markdown_table([ "relay", f"{what}/s median (min-max)", "ok", "relay CPU ms each",
                               "relay CPU", "load gen CPU", "rest of machine", "rate vs js",
                               "CPU efficiency vs js"], rows)

    out.append(f"### Reservations: {a['reservations']} clients, {a['concurrency']} at a time, {a['runs']} runs")
    out.append("")
    out.append(rate_table("reservations", "reservations"))
    out.append("")
    out.append(f"### Circuit set-ups: {a['circuits']} circuits from 20 dialers, {a['concurrency']} at a time, {a['runs']} runs")
    out.append("")
    out.append(rate_table("circuits", "circuits"))
    out.append("")
    rows = []
    for impl in shown:
        bad = unavailable(impl, "throughput")
        if bad:
            rows.append([labels.get(impl, impl), bad] + [""] * 6)
            continue
        x = r[impl]["throughput"]
        rows.append([labels.get(impl, impl), fmt_range(_runs_list(x, "mb_s")),
                     f"{val(impl, 'throughput', 'relay_cpu_s_per_gb'):.2f}",
                     f"{val(impl, 'throughput', 'relay_cpu_pct'):.0f}%",
                     f"{val(impl, 'throughput', 'dialer_cpu_pct'):.0f}% / {val(impl, 'throughput', 'listener_cpu_pct'):.0f}%",
                     f"{val(impl, 'throughput', 'others_cpu_pct'):.0f}%",
                     ratio(val(impl, "throughput", "mb_s"), val("js", "throughput", "mb_s")),
                     ratio(val("js", "throughput", "relay_cpu_s_per_gb"), val(impl, "throughput", "relay_cpu_s_per_gb"))])
    out.append(f"### Relayed throughput: {a['mb']} MB echoed through one circuit (both directions at once), {a['runs']} runs")
    out.append("")
    out.append(markdown_table(["relay", "MB/s (one direction)", "relay CPU-s per GB forwarded", "relay CPU",
                               "endpoint CPU (dialer / listener)", "rest of machine", "MB/s vs js",
                               "CPU efficiency vs js"], rows))
    out.append("")
    rows = []
    for impl in shown:
        bad = unavailable(impl, "memory")
        if bad:
            rows.append([labels.get(impl, impl), bad] + [""] * 5)
            continue
        y = r[impl]["memory"]
        rows.append([labels.get(impl, impl), f"{y['idle_kib'] / 1024:.1f}", f"{y['loaded_kib'] / 1024:.1f}",
                     f"{y['live']}/{y['wanted']}", f"{(y['per_reservation_kib'] or 0):.1f}",
                     ratio(y["loaded_kib"], val("js", "memory", "loaded_kib")),
                     ratio(y["per_reservation_kib"], (r.get("js", {}).get("memory") or {}).get("per_reservation_kib"))])
    out.append(f"### Memory: relay RSS idle and with {a['live']} live reservations")
    out.append("")
    out.append(markdown_table(["relay", "idle MiB", "loaded MiB", "live", "KiB per reservation",
                               "loaded vs js", "per reservation vs js"], rows))
    out.append("")
    out.append("Ratios: \"vs js\" for rates/throughput = ours / js's (higher is better); \"CPU efficiency vs js\" = "
               "js's relay CPU per operation / ours (higher = we need less CPU); memory = ours / js's (lower is better).")
    out.append("")
    goals = []
    for key, field, better in (("reservations", "per_s", "high"), ("circuits", "per_s", "high"),
                               ("throughput", "mb_s", "high"), ("memory", "loaded_kib", "low")):
        ours, js = val("p2prtc", key, field), val("js", key, field)
        if ours is None or js is None:
            goals.append(f"- {key}: not comparable (missing result)")
            continue
        ok = ours > js if better == "high" else ours < js
        extra = ""
        cpu_field = {"reservations": "relay_cpu_ms_per_op", "circuits": "relay_cpu_ms_per_op",
                     "throughput": "relay_cpu_s_per_gb"}.get(key)
        if cpu_field:
            oc, jc = val("p2prtc", key, cpu_field), val("js", key, cpu_field)
            if oc and jc:
                extra = f"; relay CPU per unit of work {oc:.3g} vs js {jc:.3g} ({jc / oc:.2f}x less)"
        goals.append(f"- {key}: p2prtc {ours:.1f} vs js {js:.1f} ({ours / js:.2f}x): "
                     f"{'AHEAD' if ok else 'BEHIND'}{extra}")
    out.append("### Goal: ahead of the js relay on each")
    out.append("")
    out += goals
    return "\n".join(out)


async def main_async(args) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import logging

    logging.basicConfig(level=logging.ERROR)  # the load generator's own warnings are noise here
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.live + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # relays inherit it

    impls = [i for i in args.relays.split(",") if i]
    why = available(impls)
    missing = {k: v for k, v in why.items() if v}
    labels = {i: i for i in impls}
    if "rust" in impls and "rust" not in missing:
        labels["rust"] = rust_binary()[1] + " (rust caps, small N)"
    results = {"machine": machine_info(), "args": vars(args), "missing": missing, "relays": {},
               "labels": labels}
    phases = [p for p in args.phases.split(",") if p]
    run_impls = [i for i in impls if i not in missing]
    for impl in run_impls:
        results["relays"][impl] = {}
    for phase in phases:
        # phase by phase, round-robin over the relays (run 1 of each, run 2 of each, ...), a fresh
        # relay process each time, so that other load on the machine spreads over all of them
        repeats = 1 if phase == "memory" else args.runs
        for r in range(repeats):
            for impl in run_impls:
                rr = results["relays"][impl]
                small = impl == "rust"
                log(f"{phase} run {r + 1}: {impl}")
                try:
                    if phase == "reservations":
                        one = await bench_reservations(impl, args.rust_count if small else args.reservations,
                                                       min(args.concurrency, 4) if small else args.concurrency, log)
                    elif phase == "circuits":
                        one = await bench_circuits(impl, args.rust_count if small else args.circuits,
                                                   4 if small else args.concurrency, log,
                                                   n_dialers=4 if small else 20)
                    elif phase == "throughput":
                        one = await bench_relayed_throughput(impl, int(args.mb * 1e6), 1, log)
                    else:
                        if small:
                            rr[phase] = {"skipped": "rust relay keeps its 128-reservation cap"}
                            continue
                        rr[phase] = await bench_memory(impl, args.live, args.concurrency, log)
                        continue
                except Exception as e:  # noqa: BLE001 - a failing relay is a cell in the table
                    log(f"  failed: {e}")
                    rr.setdefault(phase, {}).setdefault("failures", []).append(f"{type(e).__name__}: {str(e)[:300]}")
                    if "runs" not in rr[phase]:
                        rr[phase]["error"] = rr[phase]["failures"][0]
                    continue
                cur = rr.setdefault(phase, {})
                cur.pop("error", None)
                cur.setdefault("runs", []).append(one)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relays", default=",".join(RELAYS))
    p.add_argument("--phases", default="reservations,circuits,throughput,memory")
    p.add_argument("--reservations", type=int, default=200)
    p.add_argument("--circuits", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--rust-count", type=int, default=40,
                   help="reservations/circuits for the rust relay (its rate limits stay: 60/min per IP)")
    p.add_argument("--mb", type=float, default=50, help="MB echoed through the circuit")
    p.add_argument("--runs", type=int, default=3,
                   help="runs of the reservation, circuit and throughput measurements (round-robin)")
    p.add_argument("--live", type=int, default=1000, help="live reservations for the memory figure")
    p.add_argument("--json")
    args = p.parse_args()
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
