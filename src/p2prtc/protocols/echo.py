"""echo (`/echo/1.0.0`): everything read is written back until the remote half-closes. Used by
interop tests; the js and rust test peers serve the same protocol."""

from __future__ import annotations

from ..streams import ByteStream

ECHO = "/echo/1.0.0"


async def handle_echo(stream: ByteStream) -> None:
    while True:
        data = await stream.read(256 * 1024)
        if not data:
            break
        await stream.write(data)
    await stream.close()
