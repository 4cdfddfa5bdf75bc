"""A small internet in the lab (issue 15.5): DHT servers of three implementations (go-libp2p-kad-
dht, rust-libp2p kad, ours) and three relays on the lab's internet, two NATed sites. The listener
finds two relays in the DHT and publishes its record, the dialer finds it by peer id and connects
directly; the relay the dial went through is SIGKILLed, the listener republishes without it and a
fresh `dial PEER_ID` still reaches it, through the other relay.

CI: one run with 8 DHT nodes through the CLI (`p2prtc lab internet --json`, ~10 s); the full 20
nodes, and two symmetric NATs (WebRTC via TURN), are `-m soak`.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from p2prtc.lab.internet import (DialResult, InternetOptions, InternetResult, describe_internet,
                                 internet_table, node_kinds, run_internet)
from p2prtc.lab.netns import LabError, list_lab_namespaces, owner_pid

pytestmark = [pytest.mark.lab]

# Generous bounds for a loaded 2-core machine (measured: lookup ~0.1-0.2 s, direct ~0.4 s).
LOOKUP_LIMIT_MS = 10_000
CONNECT_LIMIT_MS = 30_000


def assert_internet(r: dict, nodes: int, path: str) -> None:
    """`r`: InternetResult.to_dict()."""
    assert r["error"] is None, r
    assert sum(r["nodes"].values()) == nodes and set(r["nodes"]) == {"ours", "go", "rust"}
    assert len(r["listener_relays"]) == 2
    first = r["first"]
    assert first["found"] and first["source"] == "record", first
    assert first["lookup_ms"] < LOOKUP_LIMIT_MS
    assert first["path"] == path and first["connected_ms"] < CONNECT_LIMIT_MS, first
    killed = r["killed_relay"]
    assert killed in r["listener_relays"] and first["relay"] == killed
    assert r["republished_ms"] is not None
    after = r["after"]
    assert after["found"] and not any(killed in a for a in after["addrs"]), after
    assert after["relay"] is not None and after["relay"] != killed
    assert after["path"] in ("direct", "turn"), after
    assert r["reachable_after_kill"] and r["ok"]
    # the relay keeper moved the listener to the third relay after its grace
    assert r["replacement"] not in (*r["listener_relays"], None), r
    assert r["replaced_ms"] is not None and r["replaced_ms"] >= r["relay_grace"] * 1000, r
    assert {"relay-1", "relay-2", "relay-3", "listener", "dialer", "dialer-2"} <= set(
        r["cpu_seconds"])


async def test_cli_internet_json(lab):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "lab", "internet", "--nodes", "8", "--json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    events = [json.loads(line) for line in out.decode().splitlines()]
    names = [e["event"] for e in events]
    assert "dht-up" in names and "relays-up" in names and "relay-killed" in names
    result = events[-1]
    assert result["event"] == "result"
    assert_internet(result, 8, "direct")
    assert [n for n in list_lab_namespaces() if owner_pid(n) == proc.pid] == []


@pytest.mark.soak
async def test_internet_20_nodes(lab):
    r = await run_internet(InternetOptions(nodes=20))
    assert_internet(r.to_dict(), 20, "direct")
    assert r.nodes == {"ours": 7, "go": 7, "rust": 6}


@pytest.mark.soak
async def test_internet_symmetric_nats_via_turn(lab):
    r = await run_internet(InternetOptions(nodes=8, nat_a="symmetric", nat_b="symmetric"))
    assert_internet(r.to_dict(), 8, "turn")


def test_options_and_table_without_root():
    assert node_kinds(20).count("ours") == 7 and node_kinds(20).count("rust") == 6
    assert node_kinds(8)[0] == "ours"
    for bad in (InternetOptions(nodes=2), InternetOptions(nat_a="moat")):
        with pytest.raises(LabError):
            bad.check()
    r = InternetResult("port-restricted", "port-restricted", "direct",
                       nodes={"ours": 3, "go": 3, "rust": 2}, listener_relays=["R1", "R2"],
                       published_ms=1200,
                       first=DialResult("rust", True, "record", 102, 249, "direct", "direct",
                                        "R1"),
                       killed_relay="R1", republished_ms=76,
                       after=DialResult("ours", True, "record", 86, 600, "direct", "turn", "R2"),
                       kill_to_reachable_ms=859, replacement="R3", replaced_ms=3400,
                       cpu_seconds={"go-1": 0.25, "go-4": 0.05})
    assert r.ok and r.to_dict()["reachable_after_kill"]
    table = internet_table(r)
    assert "| DHT nodes | 3 ours, 3 go, 2 rust + 3 relays |" in table
    assert "| DHT lookup (found - dial start; via a rust node) | 102 ms (record) |" in table
    assert "| fresh dial PEER_ID -> connected | 600 ms (turn -> direct) |" in table
    assert "| reachable after the relay died | yes |" in table
    assert "go 0.3" in table
    assert "| relay killed -> record through a third relay (grace 3 s) | 3400 ms |" in table
    assert describe_internet(r).startswith("lab internet: ok")
    r.replaced_ms = None
    assert not r.ok  # the listener never moved to the third relay
    r.replaced_ms = 3400
    r.after = None
    assert not r.ok and "| reachable after the relay died | NO |" in internet_table(r)


def test_json_printer_keeps_an_events_own_source(capsys):
    """`lab ... --json` printed each event with source=<process>; `found` has a `source` of its
    own, the TypeError killed the lab's reader of the dialer and the run hung (issue 15.5)."""
    from p2prtc.lab.cli import Printer

    Printer(as_json=True).on_event("dialer", {"event": "found", "t": 0.2, "source": "record"})
    line = json.loads(capsys.readouterr().out)
    assert line["source"] == "dialer" and line["event_source"] == "record"


async def test_a_failing_observer_does_not_stop_reading(lab, tmp_path):
    from p2prtc.lab.netns import Namespaces
    from p2prtc.lab.procs import LabProcess

    seen: list[str] = []

    def observer(_name: str, ev: dict) -> None:
        seen.append(ev["event"])
        raise TypeError("observer bug")

    namespaces = Namespaces()
    try:
        p = LabProcess("echo", namespaces.add("echo"), [
            sys.executable, "-c", 'print(\'{"event": "a"}\'); print(\'{"event": "b"}\')'],
            str(tmp_path), observer)
        await p.start()
        assert (await p.wait_event("b", 30))["event"] == "b"
        await p.stop()
    finally:
        namespaces.delete_all()
    assert seen == ["a", "b"]
