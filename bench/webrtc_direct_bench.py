"""webrtc-direct benchmark: connection setup and throughput, our listener against js-libp2p's
listener in Node (@libp2p/webrtc webRTCDirect on node-datachannel), each dialed by our Python
client and by js's Node client, all in one run between separate processes.

    .venv/bin/python bench/webrtc_direct_bench.py [--setup-runs 10] [--runs 3] [--mb 20]
        [--ip 127.0.0.1] [--json out.json]

Setup = `ping {addr}` on a dialer that is not connected: ICE check, DTLS, SCTP, Noise on
channel 0, a ping stream (multistream-select) and one ping reply, as wall time of the control
command (its own round trip, ~0.2 ms, included). The dialer hangs up between runs, so every
run is a new connection (new ufrag, new client certificate) to a listener process that stays
up; the first run of a fresh dialer is reported apart as "cold" (lazy imports, JIT).

Throughput = `/perf/1.0.0` on an established connection (warmed by 1 MiB): upload N MB
(server replies 0 bytes), then download N MB (client sends 0 bytes); MB = 1e6 bytes. CPU
columns: each process's CPU time during the transfer / wall time (100% = one core). The
machine is shared: "rest" is what every other process used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from peers import (CpuMeter, available, fmt_range, machine_info, markdown_table, med,
                   peer_process, pid_of, ratio, stop_all)

IMPLS = ["p2prtc", "js"]


def direct_listen(ip: str) -> list[str]:
    return [f"/ip4/{ip}/udp/0/webrtc-direct"]


def start_peer(impl: str, name: str, listen: list[str]):
    # js needs the transport to dial webrtc-direct even when it listens on nothing
    return peer_process(impl, listen, name=name, extra=["--webrtc-direct"] if impl == "js" else [])


def direct_addr_of(proc) -> str:
    for a in proc.ready.get("addrs", []):
        if "/webrtc-direct/" in a:
            return a
    raise LookupError(f"{proc.name}: no webrtc-direct address in {proc.ready.get('addrs')}")


async def timed(proc, cmd: str, timeout: float = 60, **args) -> tuple[float, dict]:
    t0 = time.perf_counter()
    reply = await proc.call(cmd, timeout=timeout, **args)
    return time.perf_counter() - t0, reply


async def bench_pair(dialer: str, listener: str, args, log) -> dict:
    res = {"dialer": dialer, "listener": listener, "cold_s": None, "setup_s": [],
           "dial_only_ms": [], "rtt_ms": [], "up_mb_s": [], "down_mb_s": [], "cpu": [],
           "failures": []}
    lp = start_peer(listener, f"{listener}-listener", direct_listen(args.ip))
    dp = start_peer(dialer, f"{dialer}-dialer", [])
    try:
        await asyncio.gather(lp.start(), dp.start())
        target = direct_addr_of(lp)
        peer = lp.ready["peerId"]
        for i in range(args.setup_runs + 1):
            try:
                with CpuMeter({"dialer": pid_of(dp), "listener": pid_of(lp)}):
                    t, reply = await timed(dp, "ping", addr=target, timeout=30)
                if i == 0:
                    res["cold_s"] = t
                else:
                    res["setup_s"].append(t)
                # a second ping on the now open connection: the RTT alone
                res["rtt_ms"].append((await dp.call("ping", peer=peer))["rtt_ms"])
            except Exception as e:  # noqa: BLE001 - counted and shown
                res["failures"].append(f"setup: {str(e).splitlines()[0][:160]}")
                log(f"  {dialer}->{listener} setup run {i}: {str(e).splitlines()[0][:160]}")
            try:
                await dp.call("hangup", peer=peer, timeout=15)
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(0.05)
        # the dial alone (no stream): `dial` replies once the connection is up
        for _ in range(min(5, args.setup_runs)):
            try:
                t, reply = await timed(dp, "dial", addr=target, timeout=30)
                res["dial_only_ms"].append(t * 1000)
                await dp.call("hangup", peer=peer, timeout=15)
                await asyncio.sleep(0.05)
            except Exception as e:  # noqa: BLE001
                res["failures"].append(f"dial: {str(e).splitlines()[0][:160]}")
        log(f"  {dialer}->{listener}: setup {fmt_range(res['setup_s'], 1, 1000)} ms")

        nbytes = int(args.mb * 1e6)
        await dp.call("perf", addr=target, upload_bytes=1 << 20, download_bytes=1 << 20, timeout=120)
        pids = {"dialer": pid_of(dp), "listener": pid_of(lp)}
        for i in range(args.runs):
            for direction in ("up", "down"):
                up, down = (nbytes, 0) if direction == "up" else (0, nbytes)
                try:
                    with CpuMeter(pids) as m:
                        reply = await dp.call("perf", peer=peer, upload_bytes=up, download_bytes=down,
                                              timeout=600)
                except Exception as e:  # noqa: BLE001
                    res["failures"].append(f"perf {direction}: {str(e).splitlines()[0][:160]}")
                    log(f"  {dialer}->{listener} perf {direction}: {str(e).splitlines()[0][:160]}")
                    continue
                res[f"{direction}_mb_s"].append(nbytes / 1e6 / m.wall)
                res["cpu"].append({"direction": direction, "wall_s": m.wall,
                                   **{k: round(m.percent(k), 1) for k in m.cpu}, "reply": reply})
                log(f"  {dialer}->{listener} perf {direction} run {i + 1}: "
                    f"{nbytes / 1e6 / m.wall:.2f} MB/s (dialer {m.percent('dialer'):.0f}%, "
                    f"listener {m.percent('listener'):.0f}%, rest {m.percent('others'):.0f}%)")
    except Exception as e:  # noqa: BLE001 - a pair that cannot run is a row saying why
        res["failures"].append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        log(f"  {dialer}->{listener} failed: {e}")
    finally:
        await stop_all([dp, lp])
    return res


def cpu_pct(res: dict, direction: str, who: str) -> str:
    xs = [c[who] for c in res["cpu"] if c["direction"] == direction]
    return f"{med(xs):.0f}%" if xs else "-"


def report(results: list[dict], info: dict, args) -> str:
    by = {(r["dialer"], r["listener"]): r for r in results}
    rows = []
    for r in results:
        pair = f"{r['dialer']} -> {r['listener']}"
        setup = fmt_range(r["setup_s"], 1, 1000)
        cold = f"{r['cold_s'] * 1000:.0f}" if r["cold_s"] else "-"
        dial = fmt_range(r["dial_only_ms"], 1)
        rtt = f"{med(r['rtt_ms']):.2f}" if r["rtt_ms"] else "-"
        up = fmt_range(r["up_mb_s"], 2)
        down = fmt_range(r["down_mb_s"], 2)
        fails = str(len(r["failures"])) if r["failures"] else "0"
        rows.append([pair, setup, cold, dial, rtt, up, cpu_pct(r, "up", "dialer") + " / " +
                     cpu_pct(r, "up", "listener"), down, cpu_pct(r, "down", "dialer") + " / " +
                     cpu_pct(r, "down", "listener"), cpu_pct(r, "up", "others"), fails])
    table = markdown_table(
        ["dialer -> listener", "setup ms (median, min-max)", "cold ms", "dial only ms",
         "ping RTT ms", "upload MB/s", "CPU dialer/listener", "download MB/s",
         "CPU dialer/listener", "rest of machine", "failures"], rows)
    # our listener vs js's, same dialer
    cmp_rows = []
    for d in IMPLS:
        ours, theirs = by.get((d, "p2prtc")), by.get((d, "js"))
        if not ours or not theirs:
            continue
        cmp_rows.append([f"dialed by {d}",
                         ratio(med(ours["setup_s"]), med(theirs["setup_s"])),
                         ratio(med(ours["up_mb_s"]), med(theirs["up_mb_s"])),
                         ratio(med(ours["down_mb_s"]), med(theirs["down_mb_s"]))])
    cmp = markdown_table(["p2prtc listener / js listener", "setup time", "upload MB/s",
                          "download MB/s"], cmp_rows)
    v = info["versions"]
    head = (f"webrtc-direct on {args.ip} ({info['cores']} cores, {info['cpu']}, load "
            f"{info['loadavg'][0]:.1f}); python {v.get('python')}, node {v.get('node', '?')}, "
            f"js-libp2p {v.get('js-libp2p', '?')}; {args.setup_runs} setups, {args.runs} x "
            f"{args.mb:g} MB each way per pair")
    return f"{head}\n\n{table}\n\n{cmp}\n"


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup-runs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--ip", default="127.0.0.1", help="address the listeners bind to")
    ap.add_argument("--dialers", default=",".join(IMPLS))
    ap.add_argument("--listeners", default=",".join(IMPLS))
    ap.add_argument("--json")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    dialers = args.dialers.split(",")
    listeners = args.listeners.split(",")
    why = available(sorted(set(dialers + listeners)))
    missing = {k: v for k, v in why.items() if v}
    if missing:
        log(f"not available: {missing}")
    info = machine_info()
    results = []
    for listener in listeners:
        for dialer in dialers:
            if dialer in missing or listener in missing:
                continue
            log(f"{dialer} -> {listener}")
            results.append(await bench_pair(dialer, listener, args, log))
    print(report(results, info, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=1)
    return 0 if all(not r["failures"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
