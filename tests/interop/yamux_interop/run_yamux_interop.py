"""Drive p2prtc's YamuxMuxer against a real js or rust yamux peer over plain TCP on 127.0.0.1.

    python run_yamux_interop.py --peer "node yamux_peer.mjs"          # js
    python run_yamux_interop.py --peer path/to/yamux-interop-peer     # rust (rust/src/main.rs)

The peer command gets `client PORT` or `server` appended (see yamux_peer.mjs, rust/src/main.rs).
Runs twice: Python as yamux server (the peer dials) and as yamux client (the peer listens). In
each run both sides open streams the other echoes (1 MiB each, checked by SHA-256), Python also
sends one large stream, stops reading one stream for a while (the peer must respect our
window), resets a stream mid-way, and pings. Prints one JSON line per run; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shlex
import sys
import time

from p2prtc.errors import StreamClosed
from p2prtc.muxer.yamux import DEFAULT_WINDOW, YamuxMuxer
from p2prtc.transports.tcp import TcpStream

STREAMS = 4
SIZE = 1024 * 1024
BIG = 32 * 1024 * 1024
CHUNK = 64 * 1024


async def echo(stream, done: list[int]) -> None:
    total = 0
    try:
        while chunk := await stream.read(CHUNK):
            total += len(chunk)
            await stream.write(chunk)
        await stream.close()
    except StreamClosed as exc:
        print(f"[py] echo on stream {stream.stream_id} failed: {exc}", file=sys.stderr)
    done.append(total)


async def round_trip(muxer: YamuxMuxer, size: int, *, pause: float = 0.0) -> dict:
    stream = await muxer.open_stream()
    payload = os.urandom(size)
    max_buffered = 0

    async def send() -> None:
        for off in range(0, size, CHUNK):
            await stream.write(payload[off : off + CHUNK])
        await stream.close_write()

    sender = asyncio.create_task(send())
    if pause:
        # do not read: the echo comes back only as far as our receive window lets it
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            max_buffered = max(max_buffered, stream.buffered)
            await asyncio.sleep(0.01)
    digest = hashlib.sha256()
    got = 0
    while chunk := await stream.read(CHUNK):
        got += len(chunk)
        digest.update(chunk)
    await sender
    await stream.close()
    ok = got == size and digest.digest() == hashlib.sha256(payload).digest()
    result = {"stream": stream.stream_id, "bytes": size, "ok": ok}
    if pause:
        result["max_buffered_while_paused"] = max_buffered
        result["window_respected"] = max_buffered <= DEFAULT_WINDOW
        result["ok"] = ok and max_buffered <= DEFAULT_WINDOW
    return result


async def reset_mid_stream(muxer: YamuxMuxer) -> dict:
    stream = await muxer.open_stream()
    await stream.write(b"x" * 100_000)
    await stream.read(1000)  # the echo started
    stream.reset()
    return {"reset_sent": True}


async def exercise(muxer: YamuxMuxer, inbound_done: list[int]) -> dict:
    rtt = await muxer.ping()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(round_trip(muxer, SIZE) for _ in range(STREAMS)))
    t_big = time.perf_counter()
    big = await round_trip(muxer, BIG)
    big_seconds = time.perf_counter() - t_big
    paused = await round_trip(muxer, 2 * 1024 * 1024, pause=0.5)
    reset = await reset_mid_stream(muxer)
    after_reset = await round_trip(muxer, 4096)
    # wait for the peer's own streams (we echo them) before going away
    async with asyncio.timeout(30):
        while len(inbound_done) < STREAMS:
            await asyncio.sleep(0.01)
    return {
        "ping_ms": round(rtt * 1000, 3),
        "streams": results,
        "big_stream": {**big, "mb_per_s_echo": round(2 * BIG / big_seconds / 1e6, 1)},
        "paused_reader": paused,
        "reset": reset,
        "after_reset": after_reset,
        "echoed_peer_streams": list(inbound_done),
        "seconds": round(time.perf_counter() - t0, 3),
    }


async def run_python_server(peer: list[str]) -> dict:
    conn_ready: asyncio.Future[TcpStream] = asyncio.get_running_loop().create_future()

    async def on_conn(reader, writer):
        if not conn_ready.done():
            conn_ready.set_result(TcpStream(reader, writer))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *peer, "client", str(port), stdout=asyncio.subprocess.PIPE
    )
    conn = await asyncio.wait_for(conn_ready, 10)
    server.close()
    return await run_muxer(conn, False, proc)


async def run_python_client(peer: list[str]) -> dict:
    proc = await asyncio.create_subprocess_exec(*peer, "server", stdout=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
    assert line.startswith("LISTENING "), line
    reader, writer = await asyncio.open_connection("127.0.0.1", int(line.split()[1]))
    return await run_muxer(TcpStream(reader, writer), True, proc)


async def run_muxer(conn: TcpStream, is_client: bool, proc) -> dict:
    inbound_done: list[int] = []
    muxer = YamuxMuxer(
        conn, is_client, lambda s: asyncio.get_running_loop().create_task(echo(s, inbound_done))
    )
    muxer.start()
    try:
        ours = await asyncio.wait_for(exercise(muxer, inbound_done), 120)
    finally:
        await muxer.close()
    peer_line = await asyncio.wait_for(proc.stdout.readline(), 20)
    await asyncio.wait_for(proc.wait(), 10)
    peer = json.loads(peer_line) if peer_line else {"ok": False, "error": "no report from peer"}
    ok = (
        peer.get("ok")
        and all(r["ok"] for r in ours["streams"])
        and ours["big_stream"]["ok"]
        and ours["paused_reader"]["ok"]
        and ours["after_reset"]["ok"]
        and inbound_done == [SIZE] * STREAMS
    )
    return {"python_role": "client" if is_client else "server", "ok": bool(ok),
            "python": ours, "peer": peer, "close_reason": muxer.close_reason}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True, help="command of the other peer")
    parser.add_argument("-v", action="store_true", help="debug logs of p2prtc on stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.v else logging.INFO, stream=sys.stderr)
    peer = shlex.split(args.peer)
    ok = True
    for run in (run_python_server, run_python_client):
        report = await run(peer)
        print(json.dumps(report))
        ok = ok and report["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
