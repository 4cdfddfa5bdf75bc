"""Core stack benchmark: connection setup and stream throughput over TCP+noise+yamux (and WS),
p2prtc against py-libp2p, js-libp2p (Node) and rust-libp2p, all measured in one run between two
processes on loopback.

    .venv/bin/python bench/core_bench.py [--setup-runs 5] [--runs 3] [--mb 100] [--json out.json]

Setup: a fresh dialer process per run (process start excluded); "cold" is its first
`ping {addr}` (dial + noise + yamux + ping stream + one ping reply, what a freshly started
program sees), "warm" its second one, to another listener of the same implementation it has
never talked to. Measured by this controller as the wall time of the control command; the
control round trip itself (a no-op command, reported) is included and is ~0.1-1 ms.

Throughput: `/perf/1.0.0` upload (default 100 MB = 1e8 bytes in 64 KiB writes, the server
replies 0 bytes) on an established connection, wall time from the command to the server's FIN;
`echo` sends N MB and reads them back (both directions at once; the only throughput command the
rust peer has). CPU columns are each process's utime+stime during the transfer divided by the
wall time (100% = one core): the dialer is the load generator. Every pair gets fresh processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from peers import (TCP, WS, CpuMeter, PeerProcessError, addr_of, available, fmt_range,
                   machine_info, markdown_table, med, peer_process, pid_of, ratio, rust_binary,
                   stop_all)

IMPLS = ["p2prtc", "py-libp2p", "js", "rust"]


async def timed(proc, cmd: str, timeout: float = 60, **args) -> tuple[float, dict]:
    t0 = time.perf_counter()
    reply = await proc.call(cmd, timeout=timeout, **args)
    return time.perf_counter() - t0, reply


def dialer_listen(impl: str) -> list[str]:
    # py-libp2p only dials transports it listens on; the others dial ws regardless.
    return [TCP, WS] if impl == "py-libp2p" else [TCP]


async def bench_setup(impls: list[str], runs: int, log) -> dict:
    """Round-robin over implementations (run 1 of each, then run 2 of each, ...), so that the
    noise of a shared machine falls on all of them alike."""
    out: dict[str, dict] = {}
    listeners: dict[str, list] = {}
    try:
        for impl in impls:
            try:
                ls = [peer_process(impl, [TCP], name=f"{impl}-L{i}") for i in (1, 2)]
                listeners[impl] = ls
                await asyncio.gather(*(l.start() for l in ls))
                out[impl] = {"cold_s": [], "warm_s": [], "control_rtt_s": [], "others_cpu_pct": []}
            except Exception as e:  # noqa: BLE001 - a failing peer is a row in the table
                out[impl] = {"error": f"{type(e).__name__}: {e}"}
        for i in range(runs):
            for impl in impls:
                res = out[impl]
                if "error" in res:
                    continue
                ls = listeners[impl]
                d = peer_process(impl, dialer_listen(impl), name=f"{impl}-D{i}")
                try:
                    await d.start()
                    rtts = [(await timed(d, "connections"))[0] for _ in range(3)]
                    res["control_rtt_s"].append(min(rtts))
                    with CpuMeter({"d": pid_of(d), "l1": pid_of(ls[0]), "l2": pid_of(ls[1])}) as m:
                        cold, _ = await timed(d, "ping", addr=addr_of(ls[0]))
                        warm, _ = await timed(d, "ping", addr=addr_of(ls[1]))
                    res["others_cpu_pct"].append(m.percent("others"))
                    res["cold_s"].append(cold)
                    res["warm_s"].append(warm)
                    log(f"  setup {impl} run {i + 1}: cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms, "
                        f"rest of machine {res['others_cpu_pct'][-1]:.0f}%")
                except Exception as e:  # noqa: BLE001
                    log(f"  setup {impl} run {i + 1} failed: {e}")
                    res.setdefault("failures", []).append(f"{type(e).__name__}: {str(e)[:200]}")
                finally:
                    await d.stop()
    finally:
        await stop_all([l for ls in listeners.values() for l in ls])
    return out


async def bench_transfer(dialer_impl: str, listener_impl: str, transport: str, test: str,
                         nbytes: int, runs: int, log, run_no: int | None = None) -> dict:
    """`test` is perf (upload nbytes) or echo (nbytes each way)."""
    listen = [TCP] if transport == "tcp" else [TCP, WS]
    if listener_impl == "rust":
        listen = [TCP]
    lp = peer_process(listener_impl, listen, name=f"{listener_impl}-listener")
    dp = peer_process(dialer_impl, dialer_listen(dialer_impl) if transport == "tcp" else
                      ([TCP, WS] if dialer_impl == "py-libp2p" else [TCP]), name=f"{dialer_impl}-dialer")
    res = {"dialer": dialer_impl, "listener": listener_impl, "transport": transport, "test": test,
           "bytes": nbytes, "mb_s": [], "dialer_cpu_pct": [], "listener_cpu_pct": [],
           "controller_cpu_s": [], "others_cpu_pct": [], "mb_per_cpu_s": [], "wall_s": [], "replies": []}
    try:
        await asyncio.gather(lp.start(), dp.start())
        target = addr_of(lp, transport)
        peer = lp.ready["peerId"]
        # connect and warm up (JITs, buffers) with a small transfer of the same kind
        if test == "perf":
            await dp.call("perf", addr=target, upload_bytes=1 << 20, timeout=120)
        else:
            await dp.call("echo", addr=target, bytes=1 << 20, timeout=120)
        pids = {"dialer": pid_of(dp), "listener": pid_of(lp)}
        for i in range(runs):
            with CpuMeter(pids) as m:
                if test == "perf":
                    reply = await dp.call("perf", peer=peer, upload_bytes=nbytes, download_bytes=0,
                                          timeout=900)
                else:
                    reply = await dp.call("echo", peer=peer, bytes=nbytes, timeout=900)
            if test == "echo" and reply.get("sha_sent") != reply.get("sha_received"):
                raise PeerProcessError(f"echo {dialer_impl}->{listener_impl}: data differs")
            res["wall_s"].append(m.wall)
            res["mb_s"].append(nbytes / 1e6 / m.wall)
            res["dialer_cpu_pct"].append(m.percent("dialer"))
            res["listener_cpu_pct"].append(m.percent("listener"))
            res["controller_cpu_s"].append(m.cpu["controller"])
            res["others_cpu_pct"].append(m.percent("others"))
            both = m.cpu["dialer"] + m.cpu["listener"]
            res["mb_per_cpu_s"].append(nbytes / 1e6 / both if both > 0 else float("nan"))
            res["replies"].append({k: v for k, v in reply.items() if k not in ("id", "ok")})
            log(f"  {test} {dialer_impl}->{listener_impl} {transport} run {run_no or i + 1}: "
                f"{res['mb_s'][-1]:.1f} MB/s, dialer CPU {res['dialer_cpu_pct'][-1]:.0f}%, "
                f"listener CPU {res['listener_cpu_pct'][-1]:.0f}%, rest of machine {res['others_cpu_pct'][-1]:.0f}%")
    finally:
        await stop_all([dp, lp])
    return res


def report(results: dict, labels: dict[str, str]) -> str:
    out = []
    m = results["machine"]
    out.append(f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['date']}; "
               f"load average at start {m['loadavg'][0]:.2f}")
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    out.append("")
    setup = results["setup"]
    py = setup.get("py-libp2p", {})
    js = setup.get("js", {})
    rows = []
    for impl in IMPLS:
        if impl in results["missing"]:
            rows.append([labels.get(impl, impl), f"not run: {results['missing'][impl]}", "", "", "", "", "", ""])
            continue
        r = setup.get(impl)
        if not r:
            continue
        if "error" in r:
            rows.append([labels.get(impl, impl), f"failed: {r['error'].splitlines()[0][:120]}", "", "", "", "", "", ""])
            continue
        c, w = med(r["cold_s"]), med(r["warm_s"])
        rows.append([labels.get(impl, impl), fmt_range(r["cold_s"], 1, 1000), fmt_range(r["warm_s"], 1, 1000),
                     ratio(c, med(py.get("cold_s", []))), ratio(w, med(py.get("warm_s", []))),
                     ratio(w, med(js.get("warm_s", []))),
                     f"{med(r['control_rtt_s']) * 1000:.2f}", f"{med(r['others_cpu_pct']):.0f}%"])
    out.append(f"### Connection setup: dial + first ping reply, TCP+noise+yamux, ms, median (min-max) of {results['args']['setup_runs']}")
    out.append("")
    out.append(markdown_table(["impl", "cold (1st dial of a fresh process)", "warm (2nd dial)",
                               "cold / py-libp2p", "warm / py-libp2p", "warm / js", "control RTT ms",
                               "rest of machine"], rows))
    out.append("")
    out.append("Ratios are time ratios: lower is faster (goal for p2prtc: <= 0.20x py-libp2p).")
    out.append("")
    # throughput
    tp = results["throughput"]

    def key(d, l, t, test):
        return f"{d}->{l}/{t}/{test}"

    def mbs(d, l, t, test):
        r = tp.get(key(d, l, t, test))
        return med(r["mb_s"]) if r and "mb_s" in r and r["mb_s"] else None

    def eff_of(d, l, t, test):
        r = tp.get(key(d, l, t, test))
        return med(r["mb_per_cpu_s"]) if r and r.get("mb_per_cpu_s") else None

    rows = []
    for r in tp.values():
        d, l, t, test = r["dialer"], r["listener"], r["transport"], r["test"]
        name = f"{labels.get(d, d)} -> {labels.get(l, l)}"
        if "error" in r:
            rows.append([name, t, test, f"failed: {r['error'].splitlines()[0][:100]}", "", "", "", "", "", "", "", ""])
            continue
        mine = med(r["mb_s"])
        eff = med(r["mb_per_cpu_s"])
        rows.append([name, t, test, fmt_range(r["mb_s"]), f"{eff:.0f}",
                     f"{med(r['dialer_cpu_pct']):.0f}%", f"{med(r['listener_cpu_pct']):.0f}%",
                     f"{med(r['controller_cpu_s']):.2f}", f"{med(r['others_cpu_pct']):.0f}%",
                     ratio(mine, mbs("py-libp2p", "py-libp2p", t, test)),
                     ratio(mine, mbs("js", "js", t, test)),
                     ratio(eff, eff_of("py-libp2p", "py-libp2p", t, test))])
    mb = results["args"]["mb"]
    out.append(f"### Stream throughput on loopback, MB/s (1 MB = 1e6 bytes), median (min-max) of {results['args']['runs']}")
    out.append("")
    out.append(f"perf = {mb} MB upload over /perf/1.0.0 in 64 KiB writes; echo = {results['args']['echo_mb']} MB "
               "sent and echoed back at the same time (MB/s counts one direction). CPU = process CPU time / "
               "wall time during the transfer (100% = one core; the dialer is the load generator); rest of machine = CPU used "
               "meanwhile by every other process on the machine (other sessions' builds and tests: noise). "
               "MB per CPU-s = MB moved per CPU-second spent by dialer + listener together: how much work the "
               "stacks need per byte, which noise from other processes disturbs much less than MB/s. "
               "Runs are round-robin over pairs, fresh processes for each.")
    out.append("")
    out.append(markdown_table(["dialer -> listener", "transport", "test", "MB/s", "MB per CPU-s",
                               "dialer CPU", "listener CPU", "controller CPU s", "rest of machine",
                               "MB/s vs py-libp2p", "MB/s vs js", "MB per CPU-s vs py-libp2p"], rows))
    out.append("")
    # goals
    ours_setup = setup.get("p2prtc", {})
    goal_lines = []
    for phase in ("warm_s", "cold_s"):
        a, b = med(ours_setup.get(phase, [])), med(py.get(phase, []))
        if a == a and b == b:
            goal_lines.append(f"- setup ({phase[:-2]}): p2prtc {a * 1000:.1f} ms vs py-libp2p {b * 1000:.1f} ms "
                              f"= {a / b:.2f}x (goal <= 0.20x): {'MET' if a / b <= 0.2 else 'MISSED'}")
    a, b = mbs("p2prtc", "p2prtc", "tcp", "perf"), mbs("py-libp2p", "py-libp2p", "tcp", "perf")
    if a and b:
        goal_lines.append(f"- throughput (tcp perf): p2prtc {a:.1f} MB/s vs py-libp2p {b:.1f} MB/s = {a / b:.2f}x "
                          f"(goal >= 2x): {'MET' if a / b >= 2 else 'MISSED'}")
    a, b = eff_of("p2prtc", "p2prtc", "tcp", "perf"), eff_of("py-libp2p", "py-libp2p", "tcp", "perf")
    if a and b:
        goal_lines.append(f"- CPU cost (tcp perf): p2prtc {a:.0f} MB per CPU-s vs py-libp2p {b:.0f} = {a / b:.2f}x")
    out.append("### Goals")
    out.append("")
    out += goal_lines or ["- (p2prtc or py-libp2p results missing)"]
    return "\n".join(out)


async def main_async(args) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    impls = [i for i in args.impls.split(",") if i]
    why = available(impls)
    missing = {k: v for k, v in why.items() if v}
    labels = {i: i for i in impls}
    if "rust" in impls and not missing.get("rust"):
        labels["rust"] = rust_binary()[1]
    for k, v in missing.items():
        log(f"{k}: not available ({v})")
    ok = [i for i in impls if i not in missing]
    results = {"machine": machine_info(), "args": vars(args), "missing": missing, "setup": {},
               "throughput": {}, "labels": labels}
    nbytes = int(args.mb * 1e6)
    echo_bytes = int(args.echo_mb * 1e6)

    if not args.skip_setup:
        log("setup: " + ", ".join(ok))
        results["setup"] = await bench_setup(ok, args.setup_runs, log)

    plan = []
    for impl in ok:
        if impl != "rust":
            plan.append((impl, impl, "tcp", "perf", nbytes))
    if "p2prtc" in ok and "js" in ok:
        plan += [("p2prtc", "js", "tcp", "perf", nbytes), ("js", "p2prtc", "tcp", "perf", nbytes)]
    for impl in ok:
        plan.append((impl, impl, "tcp", "echo", echo_bytes))
    for impl in ("p2prtc", "py-libp2p", "js"):
        if impl in ok:
            plan.append((impl, impl, "ws", "perf", nbytes))
    if args.only:
        plan = [p for p in plan if any(s in f"{p[0]}->{p[1]}/{p[2]}/{p[3]}" for s in args.only.split(","))]
    # Round-robin: run 1 of every pair, then run 2 of every pair, ... (fresh processes each time),
    # so that other load on the machine spreads over all pairs rather than hitting one.
    for r in range(args.runs):
        for d, l, t, test, n in plan:
            k = f"{d}->{l}/{t}/{test}"
            log(f"throughput run {r + 1}: {k}")
            try:
                one = await bench_transfer(d, l, t, test, n, 1, log, run_no=r + 1)
            except Exception as e:  # noqa: BLE001 - a failing pair is a row in the table
                log(f"  failed: {e}")
                prev = results["throughput"].setdefault(k, {"dialer": d, "listener": l, "transport": t,
                                                            "test": test})
                prev.setdefault("failures", []).append(f"{type(e).__name__}: {str(e)[:300]}")
                if "mb_s" not in prev:
                    prev["error"] = prev["failures"][0]
                continue
            prev = results["throughput"].get(k)
            if prev is None or "mb_s" not in prev:
                one["failures"] = (prev or {}).get("failures", [])
                results["throughput"][k] = one
            else:
                for key, v in one.items():
                    if isinstance(v, list):
                        prev[key].extend(v)

    text = report(results, labels)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ",".join(IMPLS))
    p.add_argument("--setup-runs", type=int, default=5)
    p.add_argument("--runs", type=int, default=3, help="throughput runs per pair")
    p.add_argument("--mb", type=float, default=100, help="perf upload size, MB (1e6 bytes)")
    p.add_argument("--echo-mb", type=float, default=50, help="echo size, MB each way")
    p.add_argument("--skip-setup", action="store_true")
    p.add_argument("--only", help="comma-separated substrings of throughput keys, e.g. 'p2prtc->p2prtc/tcp'")
    p.add_argument("--json", help="write raw results here")
    args = p.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
