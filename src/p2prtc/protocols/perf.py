"""perf (`/perf/1.0.0`, specs: perf/perf.md): the client sends an 8-byte big-endian count of
bytes it wants back, then uploads until it closes its write side; the server drains the upload
and sends the requested bytes. Used by the benchmarks, interoperable with js and rust."""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from ..streams import ByteStream, Stream, read_exactly

if TYPE_CHECKING:
    from ..connection import Connection
    from ..identity import PeerId
    from ..multiaddr import Multiaddr
    from ..network import Network

PERF = "/perf/1.0.0"
BLOCK = bytes(64 * 1024)


class PerfService:
    def __init__(self, host: Network) -> None:
        self.host = host
        host.handle(PERF, self._handle)

    async def _handle(self, stream: Stream) -> None:
        (to_send,) = struct.unpack(">Q", await read_exactly(stream, 8))
        while await stream.read(256 * 1024):
            pass
        await _send_zeros(stream, to_send)
        await stream.close()

    async def run(self, target: PeerId | Connection | Multiaddr | str, upload: int,
                  download: int) -> dict[str, float]:
        """Returns seconds for the upload and for the download."""
        stream = await self.host.new_stream(target, [PERF])
        t0 = time.perf_counter()
        await stream.write(struct.pack(">Q", download))
        await _send_zeros(stream, upload)
        await stream.close_write()
        t1 = time.perf_counter()
        got = 0
        while True:
            chunk = await stream.read(256 * 1024)
            if not chunk:
                break
            got += len(chunk)
        t2 = time.perf_counter()
        await stream.close()
        return {"upload_s": t1 - t0, "download_s": t2 - t1, "downloaded": got}


async def _send_zeros(stream: ByteStream, n: int) -> None:
    view = memoryview(BLOCK)
    while n > 0:
        k = min(n, len(BLOCK))
        await stream.write(view[:k])
        n -= k
