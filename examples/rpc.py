"""A request/response protocol: one stream per call, a JSON request, a JSON answer.

    python examples/rpc.py serve RELAY_ADDR                    # prints its address; Ctrl-C stops
    python examples/rpc.py call PEER_ADDR METHOD [ARG ...]     # e.g. add 2 3, upper hello

Methods: add (numbers), upper (words), whoami (the caller's peer id, as the server saw it).
The caller ends its half of the stream after the request; the server answers and ends its own.
"""

import asyncio
import json
import sys

from p2prtc import Node, Stream

RPC = "/p2prtc-example/rpc/1.0.0"
MAX_MESSAGE = 64 * 1024


async def read_all(stream: Stream) -> bytes:
    """Everything until the other side ends its half (at most MAX_MESSAGE bytes)."""
    data = b""
    while chunk := await stream.read():
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too long")
    return data


async def serve(relay: str) -> None:
    async def on_call(stream: Stream) -> None:
        req = json.loads(await read_all(stream))
        method, args = req["method"], req.get("args", [])
        if method == "add":
            answer = {"result": sum(float(a) for a in args)}
        elif method == "upper":
            answer = {"result": " ".join(args).upper()}
        elif method == "whoami":
            answer = {"result": stream.remote_peer}
        else:
            answer = {"error": f"no method {method!r}"}
        print(f"{stream.remote_peer[-6:]} called {method}{tuple(args)}", flush=True)
        await stream.write(json.dumps(answer).encode())
        await stream.close()

    async with Node() as node:
        node.handle(RPC, on_call)
        print(f"address: {(await node.listen(relay))[0]}", flush=True)
        await asyncio.Event().wait()  # until Ctrl-C


async def call(peer: str, method: str, args: list[str]) -> int:
    async with Node() as node:
        conn = await node.dial(peer)
        stream = await conn.open_stream(RPC)
        await stream.write(json.dumps({"method": method, "args": args}).encode())
        await stream.close()
        answer = json.loads(await read_all(stream))
        if "error" in answer:
            print(f"error: {answer['error']}", file=sys.stderr)
            return 1
        print(answer["result"], flush=True)
        return 0


if __name__ == "__main__":
    try:
        if len(sys.argv) == 3 and sys.argv[1] == "serve":
            asyncio.run(serve(sys.argv[2]))
        elif len(sys.argv) >= 4 and sys.argv[1] == "call":
            sys.exit(asyncio.run(call(sys.argv[2], sys.argv[3], sys.argv[4:])))
        else:
            sys.exit(__doc__)
    except KeyboardInterrupt:
        pass
