"""Delay and loss for the lab without `tc netem` (this kernel has neither netem nor fq).

An iptables rule hands each packet to NFQUEUE (`-j NFQUEUE --queue-num N --queue-bypass`; nft's
own `queue` statement is missing here, iptables-nft's xt target works). This program binds the
queue over raw nfnetlink (socket(AF_NETLINK, NETLINK_NETFILTER), no libnetfilter_queue or
`netfilterqueue` module needed), asks for metadata only (the packet stays in the kernel), and
gives each packet its verdict later: NF_DROP at once for a lost packet, NF_ACCEPT after the delay
otherwise. The delay is the same for every packet, so packets leave in order and one batch verdict
("accept every id up to N") releases everything due; a notification lost to a full socket buffer
only delays its packet until the next batch. With `--queue-bypass` and the fail-open flag, traffic
flows unhindered if this program is not running or cannot keep up.

    python -m p2prtc.lab.netem --queue 0 --delay 20 --loss 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NFQA_CFG_F_GSO = 4
NF_DROP = 0
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")

# Packets held at once: at 20 ms and ~10 MB/s that is ~150 full-size packets; leave room.
QUEUE_MAXLEN = 8192
RCVBUF = 8 << 20


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


class NetlinkQueue:
    """One bound NFQUEUE, metadata-only, on a non-blocking netlink socket."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, 0))
        self.seq = 0

    def _send(self, msg_type: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> None:
        self.seq += 1
        body = NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(self.queue)) + attrs
        header = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                                flags, self.seq, 0)
        self.sock.send(header + body)

    def _config(self, attrs: bytes) -> None:
        self._send(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK)
        data = self.sock.recv(65536)
        _len, kind, _f, _seq, _pid = NLMSG_HDR.unpack_from(data)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, NLMSG_HDR.size)
            if err != 0:
                raise OSError(-err, f"NFQUEUE {self.queue} config failed")

    def bind(self) -> None:
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))
        flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
        self._config(_attr(NFQA_CFG_FLAGS, struct.pack("!I", flags))
                     + _attr(NFQA_CFG_MASK, struct.pack("!I", flags)))
        self.sock.setblocking(False)

    def verdict(self, packet_id: int, verdict: int, batch: bool = False) -> None:
        kind = NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT
        self._send(kind, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)))

    def packet_ids(self) -> list[int]:
        """Ids of the packets waiting in the socket (non-blocking; [] when none)."""
        ids: list[int] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return ids
            except OSError:  # ENOBUFS: notifications lost; the next batch verdict covers them
                continue
            pos = 0
            while pos + NLMSG_HDR.size <= len(data):
                length, kind, _f, _seq, _pid = NLMSG_HDR.unpack_from(data, pos)
                if length < NLMSG_HDR.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = pos + NLMSG_HDR.size + NFGENMSG.size
                    end = pos + length
                    while a + 4 <= end:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype & 0x7FFF == NFQA_PACKET_HDR:
                            ids.append(struct.unpack_from("!I", data, a + 4)[0])
                            break
                        a += alen + (-alen % 4)
                pos += length + (-length % 4)


class Impairment:
    """Holds each packet `delay` seconds and drops a fraction `loss` of them."""

    def __init__(self, q: NetlinkQueue, delay: float, loss: float, seed: int | None) -> None:
        self.q = q
        self.delay = delay
        self.loss = loss
        self.rng = random.Random(seed)
        self.held: collections.deque[tuple[float, int]] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.passed = self.dropped = 0

    def on_readable(self) -> None:
        now = time.monotonic()
        for pid in self.q.packet_ids():
            if self.loss and self.rng.random() < self.loss:
                self.q.verdict(pid, NF_DROP)
                self.dropped += 1
            elif self.delay <= 0:
                self.q.verdict(pid, NF_ACCEPT)
                self.passed += 1
            else:
                self.held.append((now + self.delay, pid))
        if self.held and self.timer is None:
            self._schedule()

    def _schedule(self) -> None:
        due = self.held[0][0]
        self.timer = self.loop.call_at(self.loop.time() + max(0.0, due - time.monotonic()),
                                       self._release)

    def _release(self) -> None:
        self.timer = None
        now = time.monotonic()
        last = None
        while self.held and self.held[0][0] <= now + 0.0005:
            last = self.held.popleft()[1]
            self.passed += 1
        if last is not None:
            self.q.verdict(last, NF_ACCEPT, batch=True)
        if self.held:
            self._schedule()


async def run(queue: int, delay_ms: float, loss_pct: float, seed: int | None) -> int:
    q = NetlinkQueue(queue)
    q.bind()
    imp = Impairment(q, delay_ms / 1000, loss_pct / 100, seed)
    loop = asyncio.get_running_loop()
    loop.add_reader(q.sock.fileno(), imp.on_readable)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "netem", "queue": queue, "delay_ms": delay_ms,
                      "loss_pct": loss_pct}), flush=True)
    await stop.wait()
    loop.remove_reader(q.sock.fileno())
    if imp.held:  # let what we hold go rather than strand it
        q.verdict(imp.held[-1][1], NF_ACCEPT, batch=True)
    print(json.dumps({"event": "netem-stats", "passed": imp.passed, "dropped": imp.dropped}),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.lab.netem")
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, metavar="MS")
    p.add_argument("--loss", type=float, default=0.0, metavar="PCT")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    try:
        return asyncio.run(run(args.queue, args.delay, args.loss, args.seed))
    except OSError as e:
        print(f"netem: cannot bind NFQUEUE {args.queue}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
