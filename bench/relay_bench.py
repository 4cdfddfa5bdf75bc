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

from peers import (P2PRTC_PY, ROOT, TCP, ControlledProcess, CpuMeter, PeerProcessError, available,
                   fmt_range, machine_info, markdown_table, med, peer_process, pid_of, ratio,
                   rss_kib, rust_binary, self_cpu, stop_all)

sys.path.insert(0, str(ROOT / "src"))

from p2prtc.host import Host  # noqa: E402
from p2prtc.identity import Identity  # noqa: E402
from p2prtc.multiaddr import Multiaddr  # noqa: E402
from p2prtc.protocols import relay_hop as hop  # noqa: E402
from p2prtc.protocols.relay_hop import HopMessage  # noqa: E402

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
               "loadgen_cpu_pct": 100 * m.cpu["controller"] / m.wall, "others_cpu_pct": m.percent("others")}
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
        await asyncio.wait_for(listener._listeners[-1].first_attempt, 30)
        for d in dialers:
            await d.dial(addr)
        dst = listener.peer_id

        async def one(i: int) -> None:
            conn = await dialers[i % len(dialers)].circuit.dial_via(addr, dst)
            close_later(conn)  # counted once noise + yamux over the circuit are up

        with CpuMeter({"relay": pid_of(relay)}) as m:
            ok, errors = await bounded(n, concurrency, one)
        res = {"n": n, "ok": ok, "errors": errors[:5], "n_errors": len(errors), "wall_s": m.wall,
               "per_s": ok / m.wall, "relay_cpu_pct": m.percent("relay"),
               "loadgen_cpu_pct": 100 * m.cpu["controller"] / m.wall, "others_cpu_pct": m.percent("others")}
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
           "listener_cpu_pct": [], "others_cpu_pct": []}
    try:
        await asyncio.gather(relay.start(), lp.start(), dp.start())
        raddr = relay_tcp_addr(relay)
        circuit = (await lp.call("listen_relay", addr=raddr, timeout=60))["addrs"]
        target = next((a for a in circuit if "/p2p-circuit/" in a),
                      f"{raddr}/p2p-circuit/p2p/{lp.ready['peerId']}")
        await dp.call("echo", addr=target, bytes=1 << 20, timeout=120)  # connect + warm up
        pids = {"relay": pid_of(relay), "dialer": pid_of(dp), "listener": pid_of(lp)}
        for i in range(runs):
            with CpuMeter(pids) as m:
                reply = await dp.call("echo", addr=target, bytes=nbytes, timeout=900)
            if reply["sha_sent"] != reply["sha_received"]:
                raise PeerProcessError(f"relayed echo via {impl}: data differs")
            res["mb_s"].append(nbytes / 1e6 / m.wall)
            for k in ("relay", "dialer", "listener", "others"):
                res[f"{k}_cpu_pct"].append(m.percent(k))
            log(f"  relayed echo via {impl} run {i + 1}: {res['mb_s'][-1]:.1f} MB/s, relay CPU "
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


def report(results: dict) -> str:
    m = results["machine"]
    a = results["args"]
    out = [f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['date']}; "
           f"load average at start {m['loadavg'][0]:.2f}",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    r = results["relays"]
    labels = results["labels"]

    def val(impl, key, field):
        x = r.get(impl, {}).get(key)
        if not x or "error" in x or "skipped" in x:
            return None
        v = x.get(field)
        return med(v) if isinstance(v, list) else v

    rows = []
    for impl in [i for i in RELAYS if i in labels]:
        if impl in results["missing"]:
            rows.append([labels.get(impl, impl), f"not run: {results['missing'][impl]}"] + [""] * 7)
            continue
        x = r.get(impl, {})

        def cell(key, fmt):
            y = x.get(key)
            if y is None:
                return "not measured"
            if "skipped" in y:
                return "not measured: " + y["skipped"]
            if "error" in y:
                return "failed: " + y["error"].splitlines()[0][:100]
            return fmt(y)

        res_c = cell("reservations", lambda y: f"{y['per_s']:.0f}/s ({y['ok']}/{y['n']} in {y['wall_s']:.2f} s; "
                                               f"relay CPU {y['relay_cpu_pct']:.0f}%, load gen {y['loadgen_cpu_pct']:.0f}%, rest {y['others_cpu_pct']:.0f}%)")
        cir_c = cell("circuits", lambda y: f"{y['per_s']:.0f}/s ({y['ok']}/{y['n']} in {y['wall_s']:.2f} s; "
                                           f"relay CPU {y['relay_cpu_pct']:.0f}%, load gen {y['loadgen_cpu_pct']:.0f}%, rest {y['others_cpu_pct']:.0f}%)")
        thr_c = cell("throughput", lambda y: f"{fmt_range(y['mb_s'])} MB/s (relay CPU {med(y['relay_cpu_pct']):.0f}%, "
                                             f"endpoints {med(y['dialer_cpu_pct']):.0f}%/{med(y['listener_cpu_pct']):.0f}%, rest {med(y['others_cpu_pct']):.0f}%)")
        mem_c = cell("memory", lambda y: f"{y['idle_kib'] / 1024:.1f} -> {y['loaded_kib'] / 1024:.1f} MiB "
                                         f"({y['live']} live; +{(y['per_reservation_kib'] or 0):.1f} KiB each)")
        rows.append([labels.get(impl, impl), res_c, ratio(val(impl, "reservations", "per_s"), val("js", "reservations", "per_s")),
                     cir_c, ratio(val(impl, "circuits", "per_s"), val("js", "circuits", "per_s")),
                     thr_c, ratio(val(impl, "throughput", "mb_s"), val("js", "throughput", "mb_s")),
                     mem_c, ratio(val(impl, "memory", "loaded_kib"), val("js", "memory", "loaded_kib"))])
    out.append(f"### Relay: {a['reservations']} reservations and {a['circuits']} circuits at concurrency "
               f"{a['concurrency']}; {a['mb']} MB echoed through one circuit (median of {a['runs']}); "
               f"RSS with {a['live']} live reservations")
    out.append("")
    out.append(markdown_table(["relay", "reservations/s", "vs js", "circuit set-ups/s", "vs js",
                               "relayed echo throughput", "vs js", "RSS idle -> loaded", "RSS vs js"], rows))
    out.append("")
    out.append("Ratios: higher is better for rates and throughput; for memory lower is better (loaded RSS / js's).")
    out.append("")
    goals = []
    for key, field, better in (("reservations", "per_s", "high"), ("circuits", "per_s", "high"),
                               ("throughput", "mb_s", "high"), ("memory", "loaded_kib", "low")):
        ours, js = val("p2prtc", key, field), val("js", key, field)
        if ours is None or js is None:
            goals.append(f"- {key}: not comparable (missing result)")
            continue
        ok = ours > js if better == "high" else ours < js
        goals.append(f"- {key}: p2prtc {ours:.1f} vs js {js:.1f} ({ours / js:.2f}x): "
                     f"{'AHEAD' if ok else 'BEHIND'}")
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
    for impl in [i for i in impls if i not in missing]:
        rr = results["relays"].setdefault(impl, {})
        small = impl == "rust"
        for phase in phases:
            log(f"{phase}: {impl}")
            try:
                if phase == "reservations":
                    rr[phase] = await bench_reservations(impl, args.rust_count if small else args.reservations,
                                                         min(args.concurrency, 4) if small else args.concurrency, log)
                elif phase == "circuits":
                    rr[phase] = await bench_circuits(impl, args.rust_count if small else args.circuits,
                                                     4 if small else args.concurrency, log,
                                                     n_dialers=4 if small else 20)
                elif phase == "throughput":
                    rr[phase] = await bench_relayed_throughput(impl, int(args.mb * 1e6), args.runs, log)
                elif phase == "memory":
                    if small:
                        rr[phase] = {"skipped": "rust relay keeps its 128-reservation cap"}
                        continue
                    rr[phase] = await bench_memory(impl, args.live, args.concurrency, log)
            except Exception as e:  # noqa: BLE001 - a failing relay is a cell in the table
                rr[phase] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                log(f"  failed: {e}")
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
    p.add_argument("--runs", type=int, default=3)
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
