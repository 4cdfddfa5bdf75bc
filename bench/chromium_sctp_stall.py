"""Chromium's data-channel sender stalls on a fast receiver: the repro behind issue 13's
browser -> Python (wrtc) upload numbers (bench/README.md, "browser -> Python (wrtc) uploads").

No libp2p: a headless Chromium page makes an RTCPeerConnection and one data channel and sends
`--mb` MB in 16 KiB messages (bufferedAmount kept under 8 MiB, low-water 1 MiB), `--transfers`
times one after the other on the same connection. The receiver is either a bare wrtc
RTCPeerConnection in this process (`wrtc`: libwebrtc, the engine of `P2PRTC_ENGINE=wrtc`) or a
page in a second Chromium (`chromium`); `--receivers` are measured round-robin, a fresh connection
(and fresh Chromiums) per run. Signalling is one offer and one answer with all candidates (no
trickle), through Playwright.

Per transfer: MB/s, the gaps (> `--gap-ms` between two received messages: SCTP retransmission
timeouts show as ~400 ms), how often the sending Chromium logged "UDP send of ... failed" (its
renderer -> network-service packet socket refusing a packet: the packet is dropped below SCTP,
which repairs the holes on retransmission timeouts), and each side's CPU. `--tbf RATE` adds a
token-bucket bottleneck on lo (tc; the namespace's traffic to its own address goes over lo).

    scripts/netns-run sh -c 'ip route add default dev p2p-v0 && \
        .venv/bin/python bench/chromium_sctp_stall.py --runs 4'          # ~2 min
    ... --tbf 160mbit

(the default route is needed: without one Chromium gathers no host candidate.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.interop

from peers import (GroupCpuMeter, descendants, fmt_range, markdown_table, med,  # noqa: E402
                   process_table)

from tests.interop.jspeer import (CHROMIUM_ARGS, LOOPBACK_ARG, chromium_logging_to,  # noqa: E402
                                  chromium_send_failures)

# what js-libp2p's /webrtc stream writes at most per message (16 KiB) and its send buffer
MESSAGE = 16 * 1024
HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 1024 * 1024
TRANSFER_TIMEOUT = 120  # s
RECEIVERS = {"wrtc": "wrtc (libwebrtc in Python)", "chromium": "Chromium"}

PAGE_JS = """
window.bench = {
  async offer() {
    const pc = new RTCPeerConnection({iceServers: []});
    this.pc = pc;
    this.ch = pc.createDataChannel("bulk", {ordered: true});
    this.ch.binaryType = "arraybuffer";
    this.ch.bufferedAmountLowThreshold = LOW_WATER;
    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered(pc);
    return pc.localDescription.sdp;
  },
  async answer(sdp) {
    const pc = new RTCPeerConnection({iceServers: []});
    this.pc = pc;
    this.received = 0; this.stamps = [];
    this.channel = new Promise(resolve => pc.ondatachannel = e => {
      e.channel.binaryType = "arraybuffer";
      e.channel.onmessage = m => { this.received += m.data.byteLength;
                                   this.stamps.push(performance.now()); };
      resolve(e.channel);
    });
    await pc.setRemoteDescription({type: "offer", sdp});
    await pc.setLocalDescription(await pc.createAnswer());
    await this.gathered(pc);
    return pc.localDescription.sdp;
  },
  async accept(sdp) { await this.pc.setRemoteDescription({type: "answer", sdp}); },
  gathered(pc) {
    return new Promise(resolve => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange",
                          () => pc.iceGatheringState === "complete" && resolve());
    });
  },
  async send(total) {
    const ch = this.ch;
    if (ch.readyState !== "open") await new Promise(r => ch.onopen = r);
    const msg = new Uint8Array(MESSAGE);
    const start = performance.now();
    for (let sent = 0; sent < total; sent += msg.length) {
      if (ch.bufferedAmount > HIGH_WATER)
        await new Promise(r => ch.onbufferedamountlow = r);
      ch.send(msg);
    }
    return performance.now() - start;
  },
  async receivedAll(total) {
    while (this.received < total) await new Promise(r => setTimeout(r, 20));
    return this.stamps;
  },
};
""".replace("LOW_WATER", str(LOW_WATER)).replace("HIGH_WATER", str(HIGH_WATER)) \
    .replace("MESSAGE", str(MESSAGE))


class ChromiumPage:
    """A headless Chromium of its own (and its own Playwright driver, so that its processes can
    be told apart) with one blank page running PAGE_JS, logging to a file."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.log_path = tmp / f"chromium-{name}.log"
        self.pw = None
        self.browser = None
        self.page = None
        self.driver_pid: int | None = None

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        before = descendants(process_table(), os.getpid())
        self.pw = await async_playwright().start()
        executable, logging_args = chromium_logging_to(self.log_path)
        args = [a for a in CHROMIUM_ARGS if a != LOOPBACK_ARG] + logging_args
        self.browser = await self.pw.chromium.launch(executable_path=executable, args=args)
        table = process_table()
        drivers = [p for p in descendants(table, os.getpid()) - before
                   if table[p][0] == os.getpid()]
        self.driver_pid = drivers[0] if len(drivers) == 1 else None
        self.page = await (await self.browser.new_context()).new_page()
        await self.page.goto("about:blank")
        await self.page.evaluate(PAGE_JS)

    def pids(self, table) -> set[int]:
        """Chromium's processes (not the driver)."""
        if self.driver_pid is None:
            return set()
        return descendants(table, self.driver_pid, include_root=False)

    def send_failures(self) -> int:
        return chromium_send_failures(self.log_path)

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self.pw is not None:
            await self.pw.stop()


class WrtcReceiver:
    """A bare wrtc answerer in this process that notes the arrival of every message."""

    def __init__(self) -> None:
        import webrtc
        self.webrtc = webrtc
        self.pc = webrtc.RTCPeerConnection()
        self.received = 0
        self.stamps: list[float] = []
        self.done = asyncio.Event()
        self.total = 0
        self.pc.on("datachannel", self._channel)

    def _channel(self, event) -> None:
        event.channel.on("message", self._message)

    def _message(self, event) -> None:
        self.received += len(event.data)
        self.stamps.append(time.monotonic() * 1000)
        if self.received >= self.total:
            self.done.set()

    async def answer(self, sdp: str) -> str:
        w = self.webrtc
        gathered = asyncio.Event()

        def gathering(_event) -> None:
            state = self.pc.ice_gathering_state
            if getattr(state, "value", state) == "complete":
                gathered.set()

        self.pc.on("icegatheringstatechange", gathering)
        await self.pc.set_remote_description(w.RTCSessionDescriptionInit(type="offer", sdp=sdp))
        await self.pc.set_local_description(await self.pc.create_answer())
        await asyncio.wait_for(gathered.wait(), 10)
        return self.pc.local_description.sdp

    async def received_all(self, total: int) -> list[float]:
        self.total = total
        self.done.clear()
        if self.received < total:
            await asyncio.wait_for(self.done.wait(), TRANSFER_TIMEOUT)
        return self.stamps

    async def close(self) -> None:
        self.pc.close()


def gaps(stamps: list[float], gap_ms: float) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False) if b - a > gap_ms]


async def one_connection(receiver_kind: str, total: int, gap_ms: float, tmp: Path,
                         transfers: int) -> list[dict]:
    """One fresh connection, `transfers` sends of `total` bytes one after the other."""
    sender = ChromiumPage("sender", tmp)
    other = ChromiumPage("receiver", tmp) if receiver_kind == "chromium" else None
    wrtc = None
    try:
        await sender.start()
        offer = await sender.page.evaluate("bench.offer()")
        if other is not None:
            await other.start()
            answer = await other.page.evaluate("sdp => bench.answer(sdp)", offer)
        else:
            wrtc = WrtcReceiver()
            answer = await wrtc.answer(offer)
        await sender.page.evaluate("sdp => bench.accept(sdp)", answer)
        groups = {"sender": sender.pids,
                  "receiver": other.pids if other is not None else lambda _t: {os.getpid()}}
        results = []
        seen = failed = 0
        for i in range(1, transfers + 1):
            with GroupCpuMeter(groups) as cpu:
                send = asyncio.ensure_future(sender.page.evaluate("n => bench.send(n)", total))
                if other is not None:
                    stamps = await asyncio.wait_for(other.page.evaluate(
                        "n => bench.receivedAll(n)", i * total), TRANSFER_TIMEOUT)
                else:
                    stamps = await wrtc.received_all(i * total)
                await send
            mine, seen = stamps[seen:], len(stamps)
            now_failed = sender.send_failures()
            results.append({
                "mb_s": total / 1e6 / ((mine[-1] - mine[0]) / 1000), "gaps": gaps(mine, gap_ms),
                "send_failed": now_failed - failed, "sender_cpu": cpu.percent("sender"),
                "receiver_cpu": cpu.percent("receiver"), "rest": cpu.percent("others")})
            failed = now_failed
        return results
    finally:
        if wrtc is not None:
            await wrtc.close()
        await sender.close()
        if other is not None:
            await other.close()


def tbf(rate: str | None) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    if rate:
        subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
                        "burst", "64kb", "latency", "20ms"], check=True)


def summary(rows: dict[tuple[str, int], list[dict]], gap_ms: float) -> str:
    out = []
    for (receiver, k), rs in rows.items():
        stalled = [r for r in rs if r["gaps"]]
        all_gaps = [g for r in rs for g in r["gaps"]]
        out.append([
            f"Chromium -> {RECEIVERS[receiver]}", str(k + 1),
            fmt_range([r["mb_s"] for r in rs]), f"{len(stalled)}/{len(rs)}",
            f"{len(all_gaps) / len(rs):.1f}",
            f"{statistics.median(all_gaps):.0f}" if all_gaps else "-",
            f"{statistics.median(r['send_failed'] for r in rs):.0f}",
            f"{med([r['sender_cpu'] for r in rs]):.0f}% / {med([r['receiver_cpu'] for r in rs]):.0f}%",
            f"{med([r['rest'] for r in rs]):.0f}%"])
    return markdown_table(
        ["pair", "transfer on the connection", "MB/s median (min-max)", "runs with a gap",
         f"gaps > {gap_ms:.0f} ms per run", "gap ms (median)",
         "sender's 'UDP send failed' (median)", "CPU sender / receiver", "rest of machine"], out)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--receivers", default="wrtc,chromium",
                    help="comma-separated, measured round-robin: wrtc, chromium")
    ap.add_argument("--runs", type=int, default=3, help="fresh connections per receiver")
    ap.add_argument("--transfers", type=int, default=2,
                    help="sends one after the other on each connection (the stall is the first's)")
    ap.add_argument("--mb", type=float, default=30)
    ap.add_argument("--gap-ms", type=float, default=100)
    ap.add_argument("--tbf", metavar="RATE", help="token-bucket bottleneck on lo, e.g. 160mbit")
    args = ap.parse_args()
    receivers = args.receivers.split(",")
    if unknown := set(receivers) - set(RECEIVERS):
        ap.error(f"unknown receivers {sorted(unknown)}")
    if not any(line.split()[1] == "00000000" for line in
               Path("/proc/net/route").read_text().splitlines()[1:]):
        print("no default route: Chromium would gather no host candidate (see the docstring)",
              file=sys.stderr)
        return 2
    total = int(args.mb * 1e6) // MESSAGE * MESSAGE
    rows: dict[tuple[str, int], list[dict]] = {}
    tbf(args.tbf)
    try:
        for i in range(args.runs):
            for receiver in receivers:
                with tempfile.TemporaryDirectory() as tmp:
                    per = await one_connection(receiver, total, args.gap_ms, Path(tmp),
                                               args.transfers)
                for k, r in enumerate(per):
                    rows.setdefault((receiver, k), []).append(r)
                    g = r["gaps"]
                    print(f"run {i + 1} Chromium -> {receiver} transfer {k + 1}: "
                          f"{r['mb_s']:.1f} MB/s, {len(g)} gaps > {args.gap_ms:.0f} ms "
                          f"({sum(g) / 1000:.2f} s), 'UDP send failed' {r['send_failed']}, "
                          f"CPU {r['sender_cpu']:.0f}% / {r['receiver_cpu']:.0f}%, "
                          f"rest {r['rest']:.0f}%", file=sys.stderr, flush=True)
    finally:
        tbf(None)
    print(f"{args.mb:g} MB per transfer in {MESSAGE // 1024} KiB messages, tbf on lo: "
          f"{args.tbf or 'none'}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(summary(dict(sorted(rows.items())), args.gap_ms))
    print("\nCPU = the process's (Chromium: its whole process tree) CPU time / transfer time; "
          "100% = one core. A gap is a pause between two received messages: the ~400 ms ones "
          "are SCTP retransmission timeouts.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
