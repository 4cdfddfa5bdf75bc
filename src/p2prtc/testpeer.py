"""A p2prtc node driven by JSON lines on stdin/stdout, the same control protocol as the js and rust
test peers (tests/interop/control.py). Used by interop tests and benchmarks:

    python -m p2prtc.testpeer --listen /ip4/127.0.0.1/tcp/0 [--seed N] [--relay]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any

from .errors import P2PError
from .events import ConnectionClosed, ConnectionOpened, Identified, ReservationMade
from .host import Host, default_transports
from .identity import Identity, PeerId
from .multiaddr import Multiaddr
from .protocols.echo import ECHO, handle_echo
from .protocols.perf import PerfService

log = logging.getLogger("p2prtc.testpeer")

# A command or a reply: decoded JSON, its values checked by use (the peer is driven by our tests).
Json = dict[str, Any]


class ControlPeer:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.perf = PerfService(host)
        host.handle(ECHO, handle_echo, allow_limited=True)
        host.events.on(ConnectionOpened, lambda e: self.emit(
            "connection", peer=str(e.connection.remote_peer),
            remoteAddr=str(e.connection.remote_addr), direction=e.connection.direction,
            limited=e.connection.limited))
        host.events.on(ConnectionClosed, lambda e: self.emit(
            "disconnection", peer=str(e.connection.remote_peer),
            reason=e.connection.close_reason))
        host.events.on(Identified, lambda e: self.emit(
            "identify", peer=str(e.peer), agentVersion=e.info.agent_version,
            protocolVersion=e.info.protocol_version, protocols=e.info.protocols,
            listenAddrs=[str(a) for a in e.info.addrs],
            observedAddr=str(e.info.observed_addr) if e.info.observed_addr else None))
        host.events.on(ReservationMade, lambda e: self.emit(
            "reservation", relay=str(e.info.relay), addrs=[str(a) for a in e.info.addrs]))

    def emit(self, event: str, **fields: object) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def reply(self, msg_id: object, **fields: object) -> None:
        sys.stdout.write(json.dumps({"id": msg_id, **fields}) + "\n")
        sys.stdout.flush()

    def _target(self, args: Json) -> PeerId | Multiaddr:
        if "peer" in args:
            return PeerId.from_string(args["peer"])
        return Multiaddr(args["addr"])

    async def cmd_dial(self, args: Json) -> Json:
        t0 = time.perf_counter()
        conn = await self.host.dial(args["addr"])
        return {"peer": str(conn.remote_peer), "remoteAddr": str(conn.remote_addr),
                "ms": (time.perf_counter() - t0) * 1000}

    async def cmd_ping(self, args: Json) -> Json:
        rtts = await self.host.ping_service.ping(self._target(args), args.get("count", 1))
        return {"rtt_ms": min(rtts) * 1000, "rtts_ms": [r * 1000 for r in rtts]}

    async def cmd_identify(self, args: Json) -> Json:
        peer = PeerId.from_string(args["peer"])
        conn = await self.host.connect(peer)
        if self.host.identify is None:
            raise ValueError("this peer runs no identify service")
        info = await self.host.identify.identified(conn)
        return {"agentVersion": info.agent_version, "protocolVersion": info.protocol_version,
                "protocols": info.protocols, "listenAddrs": [str(a) for a in info.addrs],
                "observedAddr": str(info.observed_addr) if info.observed_addr else None}

    async def cmd_echo(self, args: Json) -> Json:
        n, chunk = int(args["bytes"]), int(args.get("chunk", 65536))
        payload = os.urandom(n)
        t0 = time.perf_counter()
        stream = await self.host.new_stream(self._target(args), [ECHO], allow_limited=True)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, n, chunk):
                await stream.write(view[i:i + chunk])
            await stream.close_write()

        async def receive() -> bytes:
            parts: list[bytes] = []
            while True:
                data = await stream.read(1 << 20)
                if not data:
                    return b"".join(parts)
                parts.append(data)

        _, got = await asyncio.gather(send(), receive())
        await stream.close()
        return {"sha_sent": hashlib.sha256(payload).hexdigest(),
                "sha_received": hashlib.sha256(got).hexdigest(),
                "ms": (time.perf_counter() - t0) * 1000}

    async def cmd_perf(self, args: Json) -> Json:
        r = await self.perf.run(self._target(args), int(args.get("upload_bytes", 0)),
                                int(args.get("download_bytes", 0)))
        return {"upload_ms": r["upload_s"] * 1000, "download_ms": r["download_s"] * 1000,
                "downloaded": r["downloaded"]}

    async def cmd_listen_relay(self, args: Json) -> Json:
        before = set(self.host.listen_addrs)
        info = await self.host.listen_via_relay(args["addr"], 30)
        return {"addrs": [str(a.with_peer_id(self.host.peer_id)) for a in self.host.listen_addrs
                          if a not in before and a.protocols()[-1] == "p2p-circuit"],
                "expires": info.expires}

    async def cmd_connections(self, args: Json) -> Json:
        return {"connections": [
            {"peer": str(c.remote_peer), "remoteAddr": str(c.remote_addr),
             "direction": c.direction, "limited": c.limited, "transport": c.transport}
            for c in self.host.connections()]}

    async def cmd_hangup(self, args: Json) -> Json:
        peer = PeerId.from_string(args["peer"])
        for c in self.host.connections(peer):
            await c.close()
        return {}

    async def handle(self, line: str) -> None:
        try:
            msg = json.loads(line)
            msg_id = msg.get("id")
            cmd = msg.get("cmd")
        except (ValueError, AttributeError):
            return
        fn = getattr(self, f"cmd_{cmd}", None)
        if fn is None:
            self.reply(msg_id, ok=False, error=f"unknown command {cmd!r}")
            return
        try:
            result = await fn(msg)
            self.reply(msg_id, ok=True, **result)
        except (TimeoutError, P2PError, OSError, ValueError, KeyError) as e:
            self.reply(msg_id, ok=False, error=f"{type(e).__name__}: {e}")


async def main_async(args: argparse.Namespace) -> int:
    identity = Identity.from_seed(args.seed) if args.seed is not None else Identity.generate()
    transports = default_transports()
    if args.webrtc:
        from .transports.webrtc.transport import WebRTCTransport

        transports.insert(0, functools.partial(WebRTCTransport, ice_servers=args.ice or []))
    host = Host(identity, transports=transports)
    if args.relay:
        from .relay.limits import RelayLimits
        from .relay.server import RelayService

        limits = RelayLimits()
        limits.lift_circuit_limits()
        RelayService(host, limits)
    peer = ControlPeer(host)
    addrs = []
    for a in args.listen:
        addrs += await host.listen(a)
    peer.emit("ready", peerId=str(host.peer_id),
              addrs=[str(a.with_peer_id(host.peer_id)) for a in addrs])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        if b'"stop"' in line:
            break
        t = asyncio.ensure_future(peer.handle(line.decode()))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await host.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.testpeer")
    p.add_argument("--listen", action="append", default=[])
    p.add_argument("--seed", type=int)
    p.add_argument("--relay", action="store_true", help="also serve circuit relay v2 (no limits)")
    p.add_argument("--webrtc", action="store_true", help="enable /webrtc (listen with /webrtc)")
    p.add_argument("--ice", action="append", help="ICE server URL (default: none)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
