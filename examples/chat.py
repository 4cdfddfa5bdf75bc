"""Chat between two programs through a relay, then directly over WebRTC.

    python examples/chat.py RELAY_ADDR              # waits for a peer, prints its address
    python examples/chat.py RELAY_ADDR PEER_ADDR    # dials that address

Lines typed on stdin go to the other side; end stdin (Ctrl-D) to leave. RELAY_ADDR is a relay's
multiaddr ending in /p2p/<id>, e.g. what `p2prtc relay` prints.
"""

import asyncio
import sys

from p2prtc import Node, Stream

CHAT = "/p2prtc-example/chat/1.0.0"


async def chat(stream: Stream) -> None:
    """stdin -> stream, stream -> stdout, until the other side ends its half."""
    print(f"connected to {stream.remote_peer} ({stream.connection.path})", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def send() -> None:
        while line := await stdin.readline():
            await stream.write(line)
        await stream.close()  # FIN: we are done talking, still listening

    sender = asyncio.create_task(send())
    buf = b""
    while data := await stream.read():
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            print(f"<{stream.remote_peer[-6:]}> {line.decode()}", flush=True)
    print("the peer left", flush=True)
    sender.cancel()


async def main(relay: str, peer: str | None) -> None:
    async with Node() as node:
        if peer is None:
            done = asyncio.Event()

            async def on_chat(stream: Stream) -> None:
                await chat(stream)
                done.set()

            node.handle(CHAT, on_chat)
            addrs = await node.listen(relay)
            print(f"address: {addrs[0]}", flush=True)
            await done.wait()
        else:
            conn = await node.dial(peer)
            await chat(await conn.open_stream(CHAT))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
