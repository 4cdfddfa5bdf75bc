"""One of our DHT server nodes in `p2prtc lab internet`: a host with TCP and the Kademlia
server only (no relay, STUN, TURN or AutoNAT: a light process, and not a relay the listeners
could pick), joined through `--bootstrap`.

Prints JSON lines: `listening {peer, addr}` once it listens, `joined {bootstrap, peers}` once
the bootstrap (and the lookup of itself) is done. Runs until SIGTERM.

    python -m p2prtc.lab.internet_node --ip 203.0.113.100 [--bootstrap ADDR ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from ..host import Host
from ..identity import Identity
from ..kad.service import KadService
from .procs import stop_on_signals

# The port our DHT nodes listen on (go's and rust's take any: tcp/0); 4001 is IPFS's.
NODE_PORT = 4001


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="p2prtc.lab.internet_node")
    ap.add_argument("--ip", required=True)
    ap.add_argument("--port", type=int, default=NODE_PORT)
    ap.add_argument("--bootstrap", action="append", default=[])
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    stop = asyncio.Event()
    stop_on_signals("listen", stop)
    host = Host(Identity.generate(), agent_version="p2prtc-lab-dht")
    kad = KadService(host, server=True).start()
    addrs = await host.listen(f"/ip4/{args.ip}/tcp/{args.port}")
    emit("listening", peer=str(host.peer_id), addr=f"{addrs[0]}/p2p/{host.peer_id}")
    joined = await kad.bootstrap(args.bootstrap) if args.bootstrap else []
    emit("joined", bootstrap=[str(p) for p in joined], peers=len(kad.table))
    await stop.wait()
    kad.stop()
    await host.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
