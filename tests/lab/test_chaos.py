"""Chaos in the NAT lab (issue 12): a NATed pair on a direct WebRTC connection chats and sends a
file while the relay is SIGKILLed and restarted (the transfer completes, chat goes on, both
reservations are back within 2 s of the relay's return), under 5 % loss and 100 ms RTT (chat
and the file arrive whole), and when one peer is SIGKILLed (the other says so within 10 s);
no byte is lost on the direct connection through any of it.

The short run (CI, each engine, ~25 s) sends 10 MB across the relay's death and 1 MB under loss;
the soak (`-m soak`) sends 10 MB under loss too (~2.5 min: 5 % loss at 100 ms RTT leaves SCTP
~70 KB/s) and keeps the relay down for 20 s.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from p2prtc.lab.netns import list_lab_namespaces, owner_pid
from p2prtc.lab.chaos import (FAULTS, PEER_GONE_LIMIT, RESERVATION_RETURN_LIMIT, ChaosOptions,
                              ChaosResult, chaos_table, describe_chaos, run_chaos)

pytestmark = [pytest.mark.lab]

MB = 1000 * 1000


def assert_survived(r: ChaosResult, opts: ChaosOptions) -> None:
    assert r.error is None, describe_chaos(r)
    assert [f.fault for f in r.faults] == list(FAULTS), describe_chaos(r)
    assert r.ok and r.faults_survived == len(FAULTS), describe_chaos(r)
    assert r.bytes_lost == 0
    faults = {f.fault: f for f in r.faults}

    kill = faults["relay-kill"]
    for peer in ("peer-a", "peer-b"):
        assert kill.times_ms[f"{peer}_noticed"] < 5000, kill.times_ms  # the FIN, at once
        assert kill.times_ms[f"{peer}_reserved"] <= RESERVATION_RETURN_LIMIT * 1000
    assert kill.times_ms["relay_down"] == opts.relay_down * 1000
    assert (kill.bytes_sent, kill.bytes_received, kill.bytes_lost) == (
        opts.file_bytes, opts.file_bytes, 0)
    assert kill.details["file"]["transport"] == "webrtc"
    assert kill.chat is not None and kill.chat["sent"] > 0
    assert kill.chat["acked"] == kill.chat["sent"] and kill.chat["lost"] == 0
    assert kill.chat["via"] == ["webrtc"]

    loss = faults["loss"]
    assert loss.details["netem"]["loss_pct"] > opts.loss_pct / 2, loss.details
    assert (loss.bytes_sent, loss.bytes_received, loss.bytes_lost) == (
        opts.loss_file_bytes, opts.loss_file_bytes, 0)
    assert loss.chat is not None and loss.chat["lost"] == 0 and loss.chat["unsent"] == 0

    gone = faults["peer-kill"]
    assert gone.times_ms["peer_a_reported"] <= PEER_GONE_LIMIT * 1000, gone.times_ms
    assert gone.details["reason"]

    table = chaos_table(r)
    assert table.count("| ok |") == len(FAULTS), table


@pytest.mark.engine_in_subprocesses  # the lab's agents take $P2PRTC_ENGINE
async def test_chaos_short(lab, engine):
    opts = ChaosOptions(file_bytes=10 * MB, loss_file_bytes=1 * MB, relay_down=3.0)
    r = await run_chaos(opts)
    assert r.engine == engine
    assert_survived(r, opts)


@pytest.mark.soak
@pytest.mark.engine_in_subprocesses
async def test_chaos_soak(lab, engine):
    opts = ChaosOptions(file_bytes=10 * MB, loss_file_bytes=10 * MB, relay_down=20.0)
    r = await run_chaos(opts)
    assert_survived(r, opts)


def test_options_and_table_without_root():
    """The pure parts: what a chaos run refuses, and how a result reads."""
    from p2prtc.lab.chaos import FaultResult
    from p2prtc.lab.netns import LabError

    for bad in (ChaosOptions(nat_a="symmetric", nat_b="symmetric"),  # no direct path
                ChaosOptions(faults=("relay-kill", "meteor")), ChaosOptions(loss_pct=100)):
        with pytest.raises(LabError):
            bad.check()
    ok = FaultResult("relay-kill", ok=True, survived=["direct connection"],
                     times_ms={"peer-a_reserved": 310, "peer-b_reserved": 290, "relay_down": 3000},
                     bytes_sent=10 * MB, bytes_received=10 * MB,
                     chat={"sent": 12, "acked": 12, "lost": 0, "via": ["webrtc"],
                           "max_rtt_ms": 80.0})
    failed = FaultResult("peer-kill", failed=["peer-a reports the peer gone within 10 s: "
                                              "after 11.8 s"], times_ms={"peer_a_reported": 11848})
    r = ChaosResult("port-restricted", "port-restricted", "wrtc", faults=[ok, failed])
    assert not r.ok and r.faults_survived == 1 and r.bytes_lost == 0
    d = r.to_dict()
    assert d["faults_survived"] == 1 and d["bytes_lost"] == 0 and d["ok"] is False
    table = chaos_table(r)
    assert "| relay-kill | ok | direct connection | relay down 3 s, reservations back 310 / 290 ms" \
        in table
    assert "10,000,000 / 10,000,000 / 0 | 12 / 12 / 0 |" in table
    assert "| peer-kill | FAILED: peer-a reports the peer gone within 10 s: after 11.8 s |" in table
    assert "faults survived: 1 of 2, bytes lost: 0" in describe_chaos(r)


async def test_cli_chaos_json(lab):
    """`p2prtc lab chaos --json`: the events, then one result; a pair without a direct path is
    refused in one line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "lab", "chaos", "--faults", "peer-kill", "--json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    names = [e["event"] for e in events]
    assert "lab-built" in names and "peer-killed" in names and "fault-result" in names
    result = events[-1]
    assert result["event"] == "result" and result["ok"], result
    assert result["faults_survived"] == 1 and result["bytes_lost"] == 0
    (fault,) = result["faults"]
    assert fault["fault"] == "peer-kill" and fault["times_ms"]["peer_a_reported"] <= 10000
    assert set(result["cpu_seconds"]) >= {"relay", "peer-a", "peer-b"}
    assert [n for n in list_lab_namespaces() if owner_pid(n) == proc.pid] == []

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "lab", "chaos", "--nat-a", "symmetric", "--nat-b",
        "symmetric", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "has no direct path" in lines[0], lines
