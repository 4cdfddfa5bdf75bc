"""Drop a file to another program, directly over WebRTC, with progress and a checksum.

    python examples/filedrop.py receive RELAY_ADDR [DIR]   # prints its address, saves one file
    python examples/filedrop.py send PEER_ADDR FILE

The sender writes a header line (JSON: name, size), the bytes, then ends its half of the stream;
the receiver answers with the SHA-256 it computed, which the sender checks.
"""

import asyncio
import hashlib
import json
import sys
from pathlib import Path

from p2prtc import Node, Stream

DROP = "/p2prtc-example/filedrop/1.0.0"
CHUNK = 64 * 1024
MAX_HEADER = 4096


def progress(what: str, done: int, total: int, shown: list[int]) -> None:
    """Prints every 10 percent."""
    pct = 100 * done // total if total else 100
    if pct // 10 > shown[0] // 10 or (pct == 100 and shown[0] < 100):
        shown[0] = pct
        print(f"{what} {pct}% ({done}/{total} bytes)", flush=True)


async def receive(relay: str, folder: Path) -> None:
    done = asyncio.Event()

    async def on_drop(stream: Stream) -> None:
        header = b""
        while not header.endswith(b"\n"):
            header += await stream.read_exactly(1)
            if len(header) > MAX_HEADER:
                raise ValueError("header too long")
        meta = json.loads(header)
        name, size = Path(meta["name"]).name, int(meta["size"])  # no paths from the network
        digest, got, shown = hashlib.sha256(), 0, [-1]
        with open(folder / name, "wb") as f:
            while data := await stream.read(CHUNK):
                f.write(data)
                digest.update(data)
                got += len(data)
                progress("received", got, size, shown)
        await stream.write(digest.hexdigest().encode())
        await stream.close()
        print(f"saved {folder / name} ({got} bytes, sha256 {digest.hexdigest()})", flush=True)
        done.set()

    async with Node() as node:
        node.handle(DROP, on_drop)
        print(f"address: {(await node.listen(relay))[0]}", flush=True)
        await done.wait()


async def send(peer: str, path: Path) -> None:
    size = path.stat().st_size
    async with Node() as node:
        conn = await node.dial(peer)
        print(f"connected ({conn.path})", flush=True)
        stream = await conn.open_stream(DROP)
        await stream.write(json.dumps({"name": path.name, "size": size}).encode() + b"\n")
        digest, sent, shown = hashlib.sha256(), 0, [-1]
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                await stream.write(data)
                digest.update(data)
                sent += len(data)
                progress("sent", sent, size, shown)
        await stream.close()
        answer = (await stream.read_exactly(64)).decode()
        if answer != digest.hexdigest():
            sys.exit(f"checksum mismatch: receiver has {answer}")
        print(f"delivered {path.name}: {size} bytes, sha256 {answer} verified", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "receive":
        asyncio.run(receive(sys.argv[2], Path(sys.argv[3] if len(sys.argv) > 3 else ".")))
    elif len(sys.argv) == 4 and sys.argv[1] == "send":
        asyncio.run(send(sys.argv[2], Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
