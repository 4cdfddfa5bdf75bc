"""A py-libp2p 0.8.1 peer driven by JSON lines, for the benchmarks (run it with the interpreter of
bench/.venv-pylibp2p, made by bench/setup-pylibp2p.sh).

    bench/.venv-pylibp2p/bin/python bench/pylibp2p_peer.py --listen /ip4/127.0.0.1/tcp/0 [--relay]

Speaks the control protocol of tests/interop/control.py (what the benchmarks need of it):
events `ready {peerId, addrs}`; commands `dial {addr}`, `ping {peer|addr}`, `perf {peer|addr,
upload_bytes, download_bytes}`, `echo {peer|addr, bytes, chunk}`, `hangup {peer}`, `connections`,
`stop`. Serves `/perf/1.0.0` (py-libp2p's own PerfService), `/echo/1.0.0` and ping/identify.
`--relay` also serves circuit relay v2 hop with py-libp2p's CircuitV2Protocol, limits lifted.

Everything here is py-libp2p's own stack (TCP/WS, noise, yamux, multistream, host); only the perf
and echo clients are written here, in the same shape as p2prtc's testpeer, so both sides do the
same work per byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time

import multiaddr
import trio

import libp2p
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.perf.perf_service import PerfService

PERF = TProtocol("/perf/1.0.0")
ECHO = TProtocol("/echo/1.0.0")
BLOCK = bytes(64 * 1024)
log = logging.getLogger("pylibp2p_peer")


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def handle_echo(stream) -> None:
    try:
        while True:
            data = await read_some(stream, 65536)
            if not data:
                break
            await stream.write(data)
        await stream.close()
    except Exception as e:  # noqa: BLE001 - a benchmark peer: log and drop the stream
        log.info("echo stream ended: %s", e)
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001
            pass


async def read_some(stream, n: int) -> bytes:
    """py-libp2p raises StreamEOF at the end of a stream where others return b''."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


class Peer:
    def __init__(self, host) -> None:
        self.host = host
        self.ping_service = PingService(host)

    async def _peer(self, args: dict) -> ID:
        """The peer to talk to; with `addr`, dial it first (no-op when connected)."""
        if "addr" in args:
            info = info_from_p2p_addr(multiaddr.Multiaddr(args["addr"]))
            await self.host.connect(info)
            return info.peer_id
        return ID.from_base58(args["peer"])

    async def cmd_dial(self, args: dict) -> dict:
        t0 = time.perf_counter()
        info = info_from_p2p_addr(multiaddr.Multiaddr(args["addr"]))
        await self.host.connect(info)
        return {"peer": str(info.peer_id), "ms": (time.perf_counter() - t0) * 1000}

    async def cmd_ping(self, args: dict) -> dict:
        peer = await self._peer(args)
        t0 = time.perf_counter()
        await self.ping_service.ping(peer, int(args.get("count", 1)))
        return {"rtt_ms": (time.perf_counter() - t0) * 1000}

    async def cmd_perf(self, args: dict) -> dict:
        peer = await self._peer(args)
        up, down = int(args.get("upload_bytes", 0)), int(args.get("download_bytes", 0))
        stream = await self.host.new_stream(peer, [PERF])
        t0 = time.perf_counter()
        await stream.write(down.to_bytes(8, "big"))
        left = up
        while left > 0:
            k = min(left, len(BLOCK))
            await stream.write(BLOCK if k == len(BLOCK) else BLOCK[:k])
            left -= k
        await stream.close_write()
        t1 = time.perf_counter()
        got = 0
        while True:
            data = await read_some(stream, 256 * 1024)
            if not data:
                break
            got += len(data)
        t2 = time.perf_counter()
        await stream.close()
        return {"upload_ms": (t1 - t0) * 1000, "download_ms": (t2 - t1) * 1000, "downloaded": got}

    async def cmd_echo(self, args: dict) -> dict:
        peer = await self._peer(args)
        n, chunk = int(args["bytes"]), int(args.get("chunk", 65536))
        payload = os.urandom(n)
        t0 = time.perf_counter()
        stream = await self.host.new_stream(peer, [ECHO])
        parts: list[bytes] = []

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, n, chunk):
                await stream.write(bytes(view[i:i + chunk]))
            await stream.close_write()

        async def receive() -> None:
            while True:
                data = await read_some(stream, 1 << 20)
                if not data:
                    return
                parts.append(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
        got = b"".join(parts)
        ms = (time.perf_counter() - t0) * 1000
        await stream.close()
        return {"sha_sent": hashlib.sha256(payload).hexdigest(),
                "sha_received": hashlib.sha256(got).hexdigest(), "ms": ms}

    async def cmd_hangup(self, args: dict) -> dict:
        await self.host.disconnect(ID.from_base58(args["peer"]))
        return {}

    async def cmd_connections(self, args: dict) -> dict:
        conns = self.host.get_network().connections
        return {"connections": [{"peer": str(p)} for p, cs in conns.items() for _ in
                                (cs if isinstance(cs, list) else [cs])]}

    async def handle(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        msg_id = msg.get("id")
        fn = getattr(self, f"cmd_{msg.get('cmd')}", None)
        if fn is None:
            emit({"id": msg_id, "ok": False, "error": f"unknown command {msg.get('cmd')!r}"})
            return
        try:
            result = await fn(msg)
        except Exception as e:  # noqa: BLE001 - reported to the controller
            emit({"id": msg_id, "ok": False, "error": f"{type(e).__name__}: {e}"})
            return
        emit({"id": msg_id, "ok": True, **result})


def lift_relay_limits():
    """py-libp2p RelayLimits with nothing limiting a benchmark.

    py-libp2p sends `duration`/`data` to clients as the circuit Limit; 0 means unlimited in the
    spec and in its own duration check, but its data accounting compares against `data` literally
    (0 would refuse every byte), so that check is told that 0 means no limit."""
    from libp2p.relay.circuit_v2 import resources

    original = resources.Reservation.track_data_transfer

    def track(self, n: int) -> bool:
        if self.limits.data == 0:
            self.data_used += n
            return True
        return original(self, n)

    resources.Reservation.track_data_transfer = track
    return resources.RelayLimits(duration=0, data=0, max_circuit_conns=1 << 30,
                                 max_reservations=1 << 30, reservation_ttl=3600)


async def stdin_lines():
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    while True:
        data = await stream.receive_some(65536)
        if not data:
            if buf:
                yield buf.decode()
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


async def main_async(args: argparse.Namespace) -> None:
    from libp2p.rcmgr import new_resource_manager
    from libp2p.rcmgr.connection_limits import ConnectionLimits

    listen = [multiaddr.Multiaddr(a) for a in args.listen]
    # py-libp2p's default resource manager refuses more than 256 inbound connections: lift it
    # (the relay benchmark holds 1,000)
    rcmgr = new_resource_manager(connection_limits=ConnectionLimits(
        max_pending_inbound=1024, max_pending_outbound=1024, max_established_inbound=20000,
        max_established_outbound=20000, max_established_per_peer=8, max_established_total=40000))
    host = new_host(
        listen_addrs=listen, muxer_preference="YAMUX", resource_manager=rcmgr,
        connection_config=ConnectionConfig(max_connections=10000, high_watermark=10000,
                                           low_watermark=9000, max_connections_per_peer=8))
    async with host.run(listen_addrs=listen):
        perf = PerfService(host)
        await perf.start()
        host.set_stream_handler(ECHO, handle_echo)
        async with trio.open_nursery() as nursery:
            if args.relay:
                from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
                from libp2p.tools.anyio_service.context import background_trio_service

                relay = CircuitV2Protocol(host, lift_relay_limits(), allow_hop=True)

                async def run_relay(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    async with background_trio_service(relay):
                        await relay.event_started.wait()
                        task_status.started()
                        await trio.sleep_forever()

                await nursery.start(run_relay)
            pid = host.get_id().to_base58()
            addrs = []
            for a in host.get_addrs():
                s = str(a)
                addrs.append(s if "/p2p/" in s else f"{s}/p2p/{pid}")
            emit({"event": "ready", "peerId": pid, "addrs": addrs,
                  "version": libp2p.__version__ if hasattr(libp2p, "__version__") else "0.8.1"})
            peer = Peer(host)
            async for line in stdin_lines():
                if not line.strip():
                    continue
                if '"stop"' in line:
                    try:
                        emit({"id": json.loads(line).get("id"), "ok": True})
                    except ValueError:
                        pass
                    break
                nursery.start_soon(peer.handle, line)
            nursery.cancel_scope.cancel()


def main() -> int:
    p = argparse.ArgumentParser(prog="pylibp2p_peer.py")
    p.add_argument("--listen", action="append", default=[])
    p.add_argument("--relay", action="store_true", help="serve circuit relay v2 hop, no limits")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args()
    if not args.listen:
        args.listen = ["/ip4/127.0.0.1/tcp/0"]
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
