"""ping (`/ipfs/ping/1.0.0`): 32 random bytes echoed back, repeatable on one stream."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..streams import Stream, read_exactly

if TYPE_CHECKING:
    from ..connection import Connection
    from ..identity import PeerId
    from ..multiaddr import Multiaddr
    from ..network import Network

PING = "/ipfs/ping/1.0.0"
PING_SIZE = 32


class PingService:
    def __init__(self, host: Network) -> None:
        self.host = host
        host.handle(PING, self._handle, allow_limited=True)

    async def _handle(self, stream: Stream) -> None:
        while True:
            data = await stream.read(PING_SIZE)
            if not data:
                break
            if len(data) < PING_SIZE:
                data += await read_exactly(stream, PING_SIZE - len(data))
            await stream.write(data)
        await stream.close()

    async def ping(self, target: PeerId | Connection | Multiaddr | str, count: int = 1, *,
                   allow_limited: bool = True) -> list[float]:
        """Round-trip times in seconds for `count` pings on one stream."""
        stream = await self.host.new_stream(target, [PING], allow_limited=allow_limited)
        rtts: list[float] = []
        try:
            for _ in range(count):
                payload = os.urandom(PING_SIZE)
                start = time.perf_counter()
                await stream.write(payload)
                echo = await read_exactly(stream, PING_SIZE)
                rtts.append(time.perf_counter() - start)
                if echo != payload:
                    raise ProtocolError("ping reply does not match what we sent")
        except BaseException:
            stream.reset()
            raise
        # The answer is in; closing (FIN, and on WebRTC its FIN_ACK) need not delay it.
        self.host.spawn(stream.close())
        return rtts
