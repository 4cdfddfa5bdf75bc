"""The NAT lab end to end: real NATs between network namespaces, a relay, two peers.

What a user would see: the probe confirms each NAT; peers behind two port-restricted NATs (Python
and browsers) and behind full cone x symmetric end up on a direct WebRTC connection whose
candidate pair is host/srflx/prflx, also with TURN on; without TURN (`turn="none"`) behind two
symmetric NATs the dial reports the failure within 20 s, saying why, and chat still works over the
relay; with TURN (our relay's, or coturn's with credentials our relay hands out) a pair without a
direct path gets WebRTC through TURN, chat and a file whose SHA-256 the receiver confirms; nothing
is left behind, also after Ctrl-C or a killed run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from p2prtc.lab.netns import list_lab_namespaces, owner_pid
from p2prtc.lab.scenario import RunOptions, run_one, run_probes

pytestmark = [pytest.mark.lab]

MB = 1000 * 1000
ICE_TYPES = {"host", "srflx", "prflx"}


def assert_direct(r, *, chat: bool = True) -> None:
    assert r.probe_mismatches == [], r.probe_mismatches
    assert r.direct, f"expected a direct connection: {r.failure} / {r.error}"
    assert r.path == "direct", r.to_dict()
    assert r.matches_theory
    assert r.time_to_direct_ms is not None and r.time_to_direct_ms < 15000
    assert r.candidate_pair["local"] in ICE_TYPES and r.candidate_pair["remote"] in ICE_TYPES
    assert r.listener_candidate_pair is not None
    assert r.listener_candidate_pair["remote"] in ICE_TYPES
    assert r.rtt_ms.get("direct") is not None and r.rtt_ms.get("relay") is not None
    assert r.throughput is not None and r.throughput["bytes"] > 0
    if chat:
        assert r.chat == {"ok": True, "via": "webrtc", "ms": r.chat["ms"]}


async def test_probe_confirms_every_nat_type(lab):
    reports = await run_probes()
    wrong = {nat: rep for nat, rep in reports.items() if not rep["ok"]}
    assert not wrong, wrong
    assert reports["symmetric"]["mapping"] == "address-and-port-dependent"
    assert reports["double"]["hops"] == 2


@pytest.mark.engine_in_subprocesses  # the lab's agents take $P2PRTC_ENGINE
async def test_port_restricted_pair_connects_directly(lab, engine):
    r = await run_one(RunOptions("port-restricted", "port-restricted", bytes=2 * MB))
    assert_direct(r)
    # Both NATs keep ports: B's checks go to A's server-reflexive address from STUN.
    assert r.candidate_pair["remote"] == "srflx"
    assert r.candidate_pair["remote_addr"].startswith("203.0.113.1:")


@pytest.mark.engine_in_subprocesses
async def test_full_cone_vs_symmetric_connects_directly(lab, engine):
    r = await run_one(RunOptions("full-cone", "symmetric", bytes=2 * MB))
    assert_direct(r)
    # A only learns B's symmetric-NAT port from B's checks: a peer-reflexive candidate.
    assert r.listener_candidate_pair["remote"] == "prflx"


async def test_symmetric_pair_falls_back_to_relay_and_says_why(lab):
    r = await run_one(RunOptions("symmetric", "symmetric", bytes=2 * MB, turn="none"))
    assert r.probe_mismatches == []
    assert not r.direct and r.path == "relay" and r.matches_theory
    assert r.failure_reported_ms is not None and r.failure_reported_ms < 20000
    assert "symmetric NAT on both sides" in r.failure
    assert "no candidate pair works" in r.failure
    assert "no direct WebRTC connection" in r.error
    assert "relay" in r.error
    # Chat both ways (message and its ack) over the limited relayed connection.
    assert r.chat["ok"] and r.chat["via"] == "relay", r.chat
    assert r.rtt_ms.get("relay") is not None and r.rtt_ms.get("direct") is None
    assert r.throughput is None


async def test_nat_detected_and_ruled_out_pair_fails_at_once(lab):
    """Port-restricted x symmetric: both peers detect their NAT with the relay's RFC 5780 STUN,
    exchange it, and the dialer gives up on a direct path within 2 s, naming both NATs."""
    r = await run_one(RunOptions("port-restricted", "symmetric", bytes=0, pings=2, turn="none"))
    assert r.probe_mismatches == []
    assert (r.nat_a_detected, r.nat_b_detected) == ("port-restricted", "symmetric"), r.to_dict()
    assert not r.direct and r.matches_theory
    assert r.failure_reported_ms is not None and r.failure_reported_ms < 2000, r.to_dict()
    assert "no direct path possible" in r.error, r.error
    assert "symmetric NAT" in r.error and "port-restricted NAT" in r.error
    assert "relayed connection stays up" in r.error
    assert r.chat["ok"] and r.chat["via"] == "relay", r.chat


def assert_turn(r) -> None:
    """WebRTC through TURN where no direct path exists: chat and a 10 MB file over it."""
    assert r.probe_mismatches == [], r.probe_mismatches
    assert r.direct and r.path == "turn" and r.matches_theory, r.to_dict()
    assert r.turn_relay == "203.0.113.10", r.to_dict()
    assert "relay" in (r.candidate_pair or r.listener_candidate_pair).values(), r.to_dict()
    assert r.time_to_direct_ms is not None and r.time_to_direct_ms < 15000
    assert r.chat["ok"] and r.chat["via"] == "webrtc", r.chat
    assert r.file["ok"] and r.file["bytes"] == 10 * MB and len(r.file["sha256"]) == 64, r.file
    assert r.rtt_ms.get("direct") is not None


async def test_symmetric_vs_port_restricted_through_our_turn(lab):
    r = await run_one(RunOptions("symmetric", "port-restricted", bytes=0, file_bytes=10 * MB,
                                 pings=2, probe=False))
    assert r.turn == "builtin"
    assert_turn(r)


async def test_symmetric_vs_port_restricted_through_coturn(lab):
    r = await run_one(RunOptions("symmetric", "port-restricted", bytes=0, file_bytes=10 * MB,
                                 pings=2, probe=False, turn="coturn"))
    assert_turn(r)


@pytest.mark.parametrize("nat_a, nat_b", [("full-cone", "restricted"), ("public", "double"),
                                          ("restricted", "symmetric")])
async def test_nat_detected_as_built(lab, nat_a, nat_b):
    """Full cone and restricted told apart (the relay's second IP), a double NAT seen as the
    port-restricted NAT it behaves as, and a pair theory allows still connects directly."""
    r = await run_one(RunOptions(nat_a, nat_b, bytes=200_000, pings=2, probe=False))
    want_b = "port-restricted" if nat_b == "double" else nat_b
    assert (r.nat_a_detected, r.nat_b_detected) == (nat_a, want_b), r.to_dict()
    assert r.direct and r.matches_theory, r.to_dict()


async def test_cli_peers_report_nat_and_give_up_at_once(lab, tmp_path):
    """`p2prtc listen` / `p2prtc dial` (the commands, behind port-restricted and symmetric NATs):
    each emits its `nat` event, and the dialer's `error` names both NATs < 2 s after `dialing`,
    then chats over the relay."""
    from p2prtc.lab.netns import remove_leftovers
    from p2prtc.lab.procs import ProcessGroup, python_argv
    from p2prtc.lab.topology import (RELAY_IP, RELAY_IP2, RELAY_PORT, STUN_ALT_PORT, STUN_PORT,
                                     Lab)

    remove_leftovers()
    net = Lab("port-restricted", "symmetric").build()
    procs = ProcessGroup(keep_logs=str(tmp_path))
    try:
        relay = await procs.start("relay", net.relay_ns, python_argv(
            "p2prtc", "relay", "--listen-ip", RELAY_IP, "--port", str(RELAY_PORT), "--stun-port",
            str(STUN_PORT), "--stun-alt-port", str(STUN_ALT_PORT), "--stun-alt-ip", RELAY_IP2,
            "--no-turn", "--json"))  # no TURN: the dialer has nothing left to try
        raddr = (await relay.wait_event("listening", 30))["addrs"][0]
        a = await procs.start("a", net.sides["a"].peer_ns,
                              python_argv("p2prtc", "listen", raddr, "--json"))
        nat_a = await a.wait_event("nat", 30)
        assert (nat_a["type"], nat_a["public"].split(":")[0]) == ("port-restricted", "203.0.113.1")
        listening = await a.wait_event("listening", 30)
        target = next(x for x in listening["addrs"] if "/p2p-circuit/webrtc/" in x)
        b = await procs.start("b", net.sides["b"].peer_ns,
                              python_argv("p2prtc", "dial", target, "--json"))
        dialing = await b.wait_event("dialing", 30)
        err = await b.wait_event("error", 30)
        assert err["t"] - dialing["t"] < 2.0, (dialing, err)
        assert "no direct path possible" in err["reason"], err
        assert "symmetric NAT" in err["reason"] and "port-restricted NAT" in err["reason"]
        nat_b = await b.wait_event("nat", 5)
        assert nat_b["type"] == "symmetric" and nat_b["mapping"] == "address-and-port-dependent"
        peer_b = await b.wait_event("nat-peer", 5)
        assert peer_b["type"] == "port-restricted" and peer_b["ruled_out"]
        # The listener hears the dialer's behaviour too, and why no direct path exists.
        peer_a = await a.wait_event("nat-peer", 5)
        assert peer_a["type"] == "symmetric" and peer_a["ruled_out"]
        # Chat goes on over the relayed connection.
        await b.send_line("over the relay")
        await a.wait_event("message", 10, lambda e: e.get("text") == "over the relay")
    finally:
        await procs.stop_all()
        net.destroy()


async def test_delay_and_loss_are_applied(lab):
    r = await run_one(RunOptions("public", "port-restricted", delay_ms=25, loss_pct=1,
                                 bytes=200_000, pings=5, probe=False))
    assert r.direct, r.failure
    # 25 ms on each side's way out: 50 ms round trip between the peers, at least.
    assert r.rtt_ms.get("direct", 0) >= 50, r.to_dict()
    assert r.rtt_ms.get("relay", 0) >= 50, r.to_dict()


@pytest.fixture(scope="session")
def js_harness():
    from ..interop.jspeer import install

    try:
        install()
    except Exception as e:  # noqa: BLE001 - the install's output is the failure message
        pytest.fail(f"installing the js-libp2p harness failed:\n{e}", pytrace=False)
    if not os.access("/usr/bin/chromium", os.X_OK):
        pytest.fail("chromium is missing: apt-get install -y chromium", pytrace=False)


@pytest.mark.browser
async def test_port_restricted_pair_connects_directly_with_browsers(lab, js_harness):
    r = await run_one(RunOptions("port-restricted", "port-restricted", peers="browser",
                                 bytes=2 * MB))
    assert_direct(r, chat=False)
    assert r.chat is None  # the harness page has no chat protocol


@pytest.mark.browser
async def test_symmetric_vs_port_restricted_through_turn_with_browsers(lab, js_harness):
    """The harness pages fetch TURN credentials from the relay with the web app's client
    (web/src/turn.js) and reach each other through our relay's TURN server."""
    r = await run_one(RunOptions("symmetric", "port-restricted", peers="browser", bytes=MB,
                                 pings=2, probe=False))
    assert r.direct and r.path == "turn" and r.matches_theory, r.to_dict()
    assert r.turn_relay == "203.0.113.10", r.to_dict()
    assert "relay" in (r.candidate_pair or {}).values(), r.to_dict()
    assert r.throughput is not None and r.throughput["bytes"] == MB
    assert r.rtt_ms.get("direct") is not None


# -- the command line ---------------------------------------------------------------------------

def p2prtc(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2prtc", *args]


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *p2prtc(*args), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def wait_json_event(proc, name: str, timeout: float = 60) -> dict:
    async def find() -> dict:
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"no {name!r} event before the output ended: "
                                     f"{(await proc.stderr.read()).decode()}")
            ev = json.loads(line)
            if ev["event"] == name:
                return ev

    return await asyncio.wait_for(find(), timeout)


def namespaces_of(pid: int) -> list[str]:
    return [n for n in list_lab_namespaces() if owner_pid(n) == pid]


async def test_cli_run_json(lab):
    proc = await start_cli("lab", "run", "--nat-a", "restricted", "--nat-b", "public", "--json",
                           "--bytes", "500000")
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert all("event" in e and "t" in e for e in events)
    names = [e["event"] for e in events]
    assert "lab-built" in names and "probed" in names and "direct" in names
    result = events[-1]
    assert result["event"] == "result"
    assert result["direct"] and result["matches_theory"] and result["probe_mismatches"] == []
    assert result["candidate_pair"]["local"] in ICE_TYPES
    assert result["throughput"]["bytes"] == 500000
    assert namespaces_of(proc.pid) == []


# The full matrix runs on wrtc, the engine `auto` picks (~100 s here); aiortc runs the pairs the
# tests above give it (every NAT type in one, the direct, ruled-out, relay-only and TURN cases).
@pytest.mark.engine_in_subprocesses
@pytest.mark.parametrize("engine", ["wrtc"], indirect=True)
async def test_cli_matrix_every_pair_writes_markdown(lab, engine, tmp_path):
    """`p2prtc lab matrix` (all 21 unordered pairs, TURN for the 3 without a direct path): every
    pair matches theory, WebRTC in all of them, and the markdown table has a row per pair."""
    md = tmp_path / "matrix.md"
    proc = await start_cli("lab", "matrix", "--bytes", "200000", "--no-probe",
                           "--markdown", str(md))
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode == 0, err.decode()
    rows = md.read_text().splitlines()
    assert len(rows) == 2 + 21  # header, separator, 21 unordered pairs
    direct = [r for r in rows[2:] if "| direct | direct | direct |" in r]
    turn = [r for r in rows[2:] if "| TURN | TURN | turn (" in r]
    assert (len(direct), len(turn)) == (18, 3), "\n".join(rows)
    assert all("| webrtc |" in r for r in rows[2:]), "\n".join(rows)  # chat over WebRTC
    assert "MISMATCH" not in out.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_interrupt_removes_everything(lab, sig):
    proc = await start_cli("lab", "run", "--nat-a", "double", "--nat-b", "symmetric", "--json")
    try:
        await wait_json_event(proc, "listening")  # the relay runs inside the lab
        # inet, relay; a, ra1, ra2 (double NAT); b, rb1
        assert len(namespaces_of(proc.pid)) == 7
    finally:
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert err.decode().strip().count("\n") == 0 and "interrupted" in err.decode()
    assert namespaces_of(proc.pid) == []


async def test_leftovers_of_a_killed_run_are_removed(lab):
    proc = await start_cli("lab", "run", "--nat-a", "full-cone", "--nat-b", "port-restricted",
                           "--json")
    await wait_json_event(proc, "listening")
    proc.kill()
    await proc.wait()
    left = namespaces_of(proc.pid)
    assert left, "the killed run should have left its namespaces"
    events = []
    await run_one(RunOptions("public", "public", probe_only=True),
                  on_event=lambda source, ev: events.append(ev))
    removed = next(e for e in events if e["event"] == "leftovers-removed")["namespaces"]
    assert set(left) <= set(removed)
    assert namespaces_of(proc.pid) == []


def test_refuses_without_root(lab_supported):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root")
    proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                           *p2prtc("lab", "run", "--nat-a", "public", "--nat-b", "public")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs root" in lines[0], proc.stderr
    assert proc.stdout == ""
