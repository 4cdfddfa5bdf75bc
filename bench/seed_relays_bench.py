"""Dial to direct WebRTC through the seed's relays and ours, with and without a STUN server that
answers (issue 10: "numbers go in bench/: dial to direct through each relay, with and without a
reachable STUN server, beside the js browser pair in the same run").

    scripts/netns-run .venv/bin/python bench/seed_relays_bench.py [--runs 5]
        [--relays p2prtc-stun,p2prtc-nostun,rust,js] [--conditions default,reachable,silent,none]
        [--no-browser] [--json out.json]

Relays, one at a time (each with its own fresh process; the p2prtc one with STUN owns UDP 3478,
where a Python peer without --stun looks for STUN, so no other relay may run beside it):
- `p2prtc-stun`: `p2prtc relay` as users run it (STUN on 3478, default limits);
- `p2prtc-nostun`: the same with `--stun-port 0`;
- `rust`: rust-libp2p's examples/relay-server as upstream runs it (tests/interop/rust `relay` with
  TCP + QUIC, no WebSocket, no STUN, `--observed-addrs-only`, default limits; the bench's release
  build when there is one, else the interop tests' debug build);
- `js`: a relay configured like the js example's relay.js (`peer.mjs --example-relay`: WebSocket on
  127.0.0.1 only, identify + circuitRelayServer with js defaults, no STUN).

STUN given to the peers (`--conditions`):
- `default`: no `--stun` flag, what a user gets (the CLI guesses `stun:<relay host>:3478`: it
  answers only with `p2prtc-stun`);
- `reachable`: `--stun stun:<ip>:<port>` of a STUN server that answers (a separate `p2prtc relay`
  process used only for its STUN server);
- `silent`: `--stun stun:<ip>:<port>` of a UDP socket that never answers (a firewalled or dead
  STUN server; this controller holds it and never reads);
- `none`: `--stun none` (no ICE servers at all: the lower bound).

Python -> Python: per (relay, condition) one `p2prtc listen RELAY --json` listener; each run a
FRESH `p2prtc dial <its /p2p-circuit/webrtc address> --json` process. Dial to direct = the
dialer's `dialing` event to its `connected` event with transport webrtc, direct, on the dialer's
clock (its process start is excluded; the dial includes connecting to the relay, the circuit,
noise + yamux over it, /webrtc-signaling, ICE, DTLS, SCTP). CPU = CPU time of each process from
the moment the controller reads `dialing` to the moment it reads `connected` (thread schedstat,
ns resolution), in ms per dial.

browser -> browser through the js relay (same run): js-libp2p 3 pages in headless Chromium
(tests/interop/jspeer.py), one listener page per condition (iceServers [] for `none`/`default`,
the answering or the silent STUN server otherwise); each run a FRESH Chromium whose page dials
the listener's address with the example page's 5 s abort signal. Dial to direct = that `dial`
command's own clock (`ms`); CPU = each Chromium's whole process tree during the command.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import socket
import sys
import tempfile
import time

from peers import CpuMeter, GroupCpuMeter, machine_info, markdown_table, med, rust_binary
from webrtc_bench import DEFAULT_IP, Chromium, check_network, not_direct, strip

from tests.e2e.webpage import Cli, free_port  # noqa: E402
from tests.interop.jspeer import JsHarnessMissing, NodePeer, node_binary  # noqa: E402
from tests.interop.rustpeer import RustPeer  # noqa: E402

NETNS_HINT = "scripts/netns-run .venv/bin/python bench/seed_relays_bench.py"
RELAYS = {"p2prtc-stun": "p2prtc relay (STUN on 3478)",
          "p2prtc-nostun": "p2prtc relay --stun-port 0",
          "rust": "rust relay-server (upstream-like)",
          "js": "js relay (relay.js-like)"}
CONDITIONS = {"default": "no --stun (default)", "reachable": "--stun <answering server>",
              "silent": "--stun <silent server>", "none": "--stun none"}
DEFAULT_STUN_PORT = 3478  # where the CLI looks without --stun (transports/webrtc STUN_PORT)
PAGE_DIAL_DEADLINE_MS = 5000  # the example page's AbortSignal.timeout(5000)
EVENT_TIMEOUT = 30


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- relays -------------------------------------------------------------------------------------

class Relay:
    """One relay process: `python_addr` is what a Python peer is given, `ws_addr` (or None) what
    a browser can dial, `pid` its process."""

    def __init__(self, key: str, ip: str) -> None:
        self.key = key
        self.ip = ip
        self.python_addr = ""
        self.ws_addr: str | None = None
        self.pid = 0
        self._cli: Cli | None = None
        self._proc = None

    async def start(self) -> None:
        if self.key.startswith("p2prtc"):
            stun = str(DEFAULT_STUN_PORT) if self.key == "p2prtc-stun" else "0"
            self._cli = await Cli("relay", "--listen-ip", self.ip, "--port", "0",
                                  "--websocket-port", "0", "--stun-port", stun, "--json",
                                  name=self.key).start()
            addrs = (await self._cli.wait_event("listening", timeout=EVENT_TIMEOUT))["addrs"]
            self.python_addr = next(a for a in addrs if "/ws/" not in a and "/tcp/" in a)
            self.ws_addr = next(a for a in addrs if "/ws/" in a)
            self.pid = self._cli.proc.pid
        elif self.key == "rust":
            path, label = rust_binary()
            if path is None:
                raise RuntimeError(label)
            self._proc = RustPeer.relay(path, listen_ip=self.ip, quic=True,
                                        extra=["--observed-addrs-only"], name="rust-relay",
                                        env={"RUST_LOG": "warn"})
            await self._proc.start(timeout=60)
            self.python_addr = self._proc.addr("tcp")
            self.pid = self._proc.proc.pid
        elif self.key == "js":
            self._proc = NodePeer(listen=["/ip4/127.0.0.1/tcp/0/ws"], extra_args=["--example-relay"],
                                  name="js-relay")
            await self._proc.start()
            self.python_addr = self.ws_addr = self._proc.addr("ws")
            self.pid = self._proc.proc.pid
        else:
            raise ValueError(self.key)

    async def stop(self) -> None:
        if self._cli is not None:
            await self._cli.stop_or_kill(5)
            await self._cli.close()
        if self._proc is not None:
            await self._proc.stop()


class StunServers:
    """An answering STUN server (a `p2prtc relay` process, used for nothing else) and a silent
    one (a UDP socket of ours that is never read), both on the veth address."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.cli: Cli | None = None
        self.silent: socket.socket | None = None
        self.reachable_url = self.silent_url = ""

    async def start(self) -> None:
        port = free_port(self.ip, socket.SOCK_DGRAM)
        self.cli = await Cli("relay", "--listen-ip", self.ip, "--port", "0", "--stun-port",
                             str(port), "--stun-alt-port", "0", "--json", name="stun").start()
        await self.cli.wait_event("listening", timeout=EVENT_TIMEOUT)
        self.reachable_url = f"stun:{self.ip}:{port}"
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind((self.ip, 0))
        self.silent_url = f"stun:{self.ip}:{self.silent.getsockname()[1]}"

    @property
    def pid(self) -> int:
        return self.cli.proc.pid if self.cli and self.cli.proc else 0

    def cli_args(self, condition: str) -> list[str]:
        return {"default": [], "none": ["--stun", "none"],
                "reachable": ["--stun", self.reachable_url],
                "silent": ["--stun", self.silent_url]}[condition]

    def ice_servers(self, condition: str) -> list[dict]:
        url = {"reachable": self.reachable_url, "silent": self.silent_url}.get(condition)
        return [{"urls": url}] if url else []

    async def stop(self) -> None:
        if self.cli is not None:
            await self.cli.stop_or_kill(5)
            await self.cli.close()
        if self.silent is not None:
            self.silent.close()


# --- Python -> Python ---------------------------------------------------------------------------

def new_result() -> dict:
    return {"dial_s": [], "attempts": 0, "failures": [], "cpu_ms": {}, "others_pct": [],
            "samples": []}


async def py_listener(relay: Relay, stun: StunServers, condition: str, tmp: str) -> tuple[Cli, str]:
    cli = await Cli("listen", relay.python_addr, "--json", "--save-dir", tmp,
                    *stun.cli_args(condition), name=f"listen-{relay.key}-{condition}").start()
    ev = await cli.wait_event("listening", timeout=EVENT_TIMEOUT)
    target = next(a for a in ev["addrs"] if a.startswith(relay.python_addr + "/p2p-circuit/webrtc/"))
    return cli, target


async def py_dial_once(relay: Relay, stun: StunServers, condition: str, listener: Cli,
                       target: str, tmp: str, res: dict) -> None:
    peer = target.rsplit("/p2p/", 1)[1]
    res["attempts"] += 1
    dialer = await Cli("dial", target, "--json", "--save-dir", tmp, *stun.cli_args(condition),
                       name=f"dial-{relay.key}-{condition}").start()
    try:
        dialing = await dialer.wait_event("dialing", timeout=EVENT_TIMEOUT)
        pids = {"dialer": dialer.proc.pid, "listener": listener.proc.pid, "relay": relay.pid}
        if stun.pid and condition == "reachable":
            pids["stun"] = stun.pid
        with CpuMeter(pids) as m:
            connected = await dialer.wait_event("connected", peer=peer, transport="webrtc",
                                                timeout=EVENT_TIMEOUT)
        if not connected.get("direct") or "/p2p-circuit" in connected["addr"]:
            raise RuntimeError(f"not direct: {connected}")
        dial_s = connected["t"] - dialing["t"]
        res["dial_s"].append(dial_s)
        for k, v in m.cpu.items():
            res["cpu_ms"].setdefault(k, []).append(v * 1000)
        res["others_pct"].append(m.percent("others"))
        res["samples"].append({"dial_s": dial_s, "connected": connected,
                               "cpu_ms": {k: round(v * 1000, 2) for k, v in m.cpu.items()}})
        log(f"  {relay.key} / {condition}: {dial_s * 1000:.0f} ms "
            f"({connected.get('candidate_pair') or connected['addr']})")
    except Exception as e:  # noqa: BLE001 - counted and reported
        msg = str(e).splitlines()[0][:200]
        res["failures"].append(f"{type(e).__name__}: {msg}")
        log(f"  {relay.key} / {condition}: FAILED {msg}")
    finally:
        await dialer.stop_or_kill(3)
        await dialer.close()


async def bench_python(relay_key: str, args, stun: StunServers, tmp: str) -> dict:
    relay = Relay(relay_key, args.ip)
    out = {c: new_result() for c in args.conditions}
    listeners: dict[str, tuple[Cli, str]] = {}
    try:
        await relay.start()
        log(f"relay {relay_key}: {relay.python_addr}")
        for c in args.conditions:
            listeners[c] = await py_listener(relay, stun, c, tmp)
        for _run in range(args.runs):  # round-robin over conditions
            for c in args.conditions:
                cli, target = listeners[c]
                await py_dial_once(relay, stun, c, cli, target, tmp, out[c])
    except Exception as e:  # noqa: BLE001 - the whole relay row says why
        for c in args.conditions:
            out[c].setdefault("error", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        log(f"relay {relay_key}: {e}")
    finally:
        for cli, _ in listeners.values():
            await cli.stop_or_kill(3)
            await cli.close()
        await relay.stop()
    return out


# --- browser -> browser through the js relay -----------------------------------------------------

async def browser_page(name: str, chromium: Chromium, ice: list[dict]):
    page = await chromium.session.new_peer(name)
    await page.start(ice_servers=ice)
    return page


def browser_conditions(conditions: list[str]) -> list[str]:
    """The example page's default ICE servers are public STUN servers, which nothing here may
    reach: pages run with `none` (iceServers []), `reachable` and `silent` only."""
    return [c for c in conditions if c != "default"]


async def bench_browsers(args, stun: StunServers, versions: dict) -> dict:
    conditions = browser_conditions(args.conditions)
    out = {c: new_result() for c in conditions}
    relay = Relay("js", args.ip)
    listen_chromium = Chromium("listener-chromium")
    try:
        await relay.start()
        await listen_chromium.start()
        versions["chromium"] = listen_chromium.version
        listeners = {}
        for c in conditions:
            page = await browser_page(f"listener-{c}", listen_chromium, stun.ice_servers(c))
            await page.dial(relay.ws_addr, timeout=30)
            listeners[c] = (page, await page.wait_for_addr("/p2p-circuit/webrtc", timeout=30))
        for run in range(args.runs):
            for c in conditions:
                listener, target = listeners[c]
                res = out[c]
                res["attempts"] += 1
                dialer = Chromium(f"dialer-{c}-{run + 1}")
                try:
                    await dialer.start()
                    page = await browser_page(dialer.name, dialer, stun.ice_servers(c))
                    groups = {"dialer": dialer.pids, "listener": listen_chromium.pids,
                              "relay": lambda t: {relay.pid} & set(t)}
                    with GroupCpuMeter(groups) as m:
                        reply = await page.call("dial", addr=target, timeout_ms=PAGE_DIAL_DEADLINE_MS,
                                                timeout=PAGE_DIAL_DEADLINE_MS / 1000 + 10)
                    why = not_direct(reply, listener.peer_id)
                    if why:
                        raise RuntimeError(f"{why}: {reply}")
                    res["dial_s"].append(reply["ms"] / 1000)
                    for k, v in m.cpu.items():
                        res["cpu_ms"].setdefault(k, []).append(v * 1000)
                    res["others_pct"].append(m.percent("others"))
                    res["samples"].append({"dial_s": reply["ms"] / 1000, "wall_s": m.wall,
                                           "reply": strip(reply)})
                    log(f"  browser / {c}: {reply['ms']:.0f} ms")
                except Exception as e:  # noqa: BLE001 - counted and reported
                    msg = str(e).splitlines()[0][:200]
                    res["failures"].append(f"{type(e).__name__}: {msg}")
                    log(f"  browser / {c}: FAILED {msg}")
                finally:
                    await dialer.close()
    except Exception as e:  # noqa: BLE001
        for c in conditions:
            out[c].setdefault("error", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        log(f"browser pair: {e}")
    finally:
        await listen_chromium.close()
        await relay.stop()
    return out


# --- report -------------------------------------------------------------------------------------

def cpu_cell(res: dict, key: str) -> str:
    xs = res["cpu_ms"].get(key)
    return f"{med(xs):.0f}" if xs else "-"


def rows_for(pair: str, relay_label: str, results: dict, conditions: list[str], stun_col) -> list:
    rows = []
    for c in conditions:
        r = results[c]
        if "error" in r and not r["dial_s"]:
            rows.append([pair, relay_label, stun_col(c), f"not run: {r['error']}", "", "", "",
                         "", "", "", "", ""])
            continue
        xs = [x * 1000 for x in r["dial_s"]]
        rows.append([pair, relay_label, stun_col(c),
                     f"{med(xs):.0f}" if xs else "-", f"{min(xs):.0f}" if xs else "-",
                     f"{max(xs):.0f}" if xs else "-", f"{len(xs)}/{r['attempts']}",
                     cpu_cell(r, "dialer"), cpu_cell(r, "listener"), cpu_cell(r, "relay"),
                     cpu_cell(r, "stun"),
                     f"{med(r['others_pct']):.0f}%" if r["others_pct"] else "-"])
    return rows


def report(results: dict) -> str:
    m = results["machine"]
    args = results["args"]
    out = [f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['date']}; "
           f"load average at start {m['loadavg'][0]:.2f}",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
           "#### Dial to direct WebRTC through each relay, ms (n = direct dials / attempts, "
           "fresh dialer each)", ""]
    rows = []
    for key, res in results["python"].items():
        label = RELAYS[key] + (f" [{results['rust_label']}]" if key == "rust"
                               and results.get("rust_label", "rust") != "rust" else "")
        rows += rows_for("Python -> Python", label, res, args["conditions"], lambda c: CONDITIONS[c])
    if results.get("browser"):
        page_stun = {"none": "iceServers []", "reachable": "iceServers [answering STUN server]",
                     "silent": "iceServers [silent STUN server]"}
        rows += rows_for("browser -> browser", RELAYS["js"], results["browser"],
                         browser_conditions(args["conditions"]), lambda c: page_stun[c])
    out.append(markdown_table(
        ["pair", "relay", "STUN given to both peers", "median", "min", "max", "n",
         "dialer CPU ms", "listener CPU ms", "relay CPU ms", "STUN server CPU ms",
         "rest of machine"], rows))
    out.append("")
    out.append("Python: dialer's `dialing` -> `connected` (webrtc, direct) on its own clock; CPU = "
               "CPU time of each process during that window, ms per dial (100 ms of CPU in a 100 ms "
               "dial = one core busy). browser: the page's `dial` command with a 5 s abort signal, "
               "its own clock; CPU = each Chromium's whole process tree. `rest of machine` = the "
               "other sessions' load meanwhile (% of one core).")
    fails = []
    for section in ("python", "browser"):
        groups = results.get(section) or {}
        if section == "browser":
            groups = {"js": groups}
        for key, res in groups.items():
            for c, r in res.items():
                counts: dict[str, int] = {}
                for msg in r.get("failures", []):
                    counts[msg] = counts.get(msg, 0) + 1
                for msg, n in counts.items():
                    fails.append(f"- {section} {key} / {c}: {n}x {msg}")
    if fails:
        out += ["", "Failures:", ""] + fails
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------------

async def main_async(args) -> int:
    why = check_network(args.ip)
    if why:
        log(f"seed_relays_bench: {why}.\nRun it inside a network namespace with a veth pair:\n\n"
            f"    {NETNS_HINT}\n")
        return 2
    try:
        node_binary()
    except JsHarnessMissing as e:
        log(f"seed_relays_bench: {e}")
        return 2
    results: dict = {"args": vars(args), "machine": machine_info(), "python": {}, "browser": None}
    for dist in ("aiortc", "aioice"):
        try:
            results["machine"]["versions"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    path, label = rust_binary()
    results["rust_label"] = label if path else f"not available: {label}"
    stun = StunServers(args.ip)
    tmp = tempfile.mkdtemp(prefix="seed-bench-")
    t0 = time.perf_counter()
    try:
        await stun.start()
        log(f"STUN: answering {stun.reachable_url}, silent {stun.silent_url}")
        for key in args.relays:
            results["python"][key] = await bench_python(key, args, stun, tmp)
        if args.browser:
            results["browser"] = await bench_browsers(args, stun, results["machine"]["versions"])
    finally:
        await stun.stop()
    log(f"done in {time.perf_counter() - t0:.0f} s")
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="dials per relay and condition")
    p.add_argument("--relays", default=",".join(RELAYS), help="comma-separated: " + ", ".join(RELAYS))
    p.add_argument("--conditions", default="default,reachable,silent,none",
                   help="comma-separated: " + ", ".join(CONDITIONS))
    p.add_argument("--no-browser", dest="browser", action="store_false",
                   help="skip the browser pair through the js relay")
    p.add_argument("--ip", default=DEFAULT_IP, help="the namespace's veth address")
    p.add_argument("--json", help="write raw results (every dial, every CPU reading) here")
    args = p.parse_args()
    args.relays = [r for r in args.relays.split(",") if r]
    args.conditions = [c for c in args.conditions.split(",") if c]
    bad = [r for r in args.relays if r not in RELAYS] + [c for c in args.conditions if c not in CONDITIONS]
    if bad:
        p.error(f"unknown relay/condition: {', '.join(bad)}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
