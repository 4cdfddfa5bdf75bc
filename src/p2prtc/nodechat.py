"""Chat and file transfer on the public API, for `p2prtc listen/dial/demo`: the protocols of
`protocols/chat.py` (`/libp2p/examples/chat/1.0.0`) and `protocols/filetransfer.py`
(`/p2prtc/file/1.0.0`) on a `Node`'s streams (`Node.handle`, `Connection.open_stream`).

Both run on relayed connections too (Python peers keep chatting over the relay when no direct
path exists; js only chats on direct ones), within the relay's limits: a message that would pass
them is refused (`NotSent`), not sent to be cut off on the way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .errors import StreamClosed
from .identity import PeerId
from .node import Connection, Node, Stream
from .protocols.chat import CHAT, DRAIN_TIMEOUT, ChatStreams, NotSent, check_size
from .protocols.filetransfer import (DEFAULT_MAX_FILE, FILE, FileResult, Progress, file_sha256,
                                     receive_file, send_file)
from .streams import ByteStream

log = logging.getLogger(__name__)


def best_connection(node: Node, peer: str) -> Connection | None:
    """The connection to `peer` to use: the newest one the relay does not limit (direct), else
    the newest relayed one; None when there is none."""
    conns = [c for c in node.connections() if c.remote_peer == peer and not c.closed]
    unlimited = [c for c in conns if not c.limited]
    if unlimited:
        return unlimited[-1]
    return conns[-1] if conns else None


def _connection_to(node: Node, peer: str) -> Connection:
    conn = best_connection(node, peer)
    if conn is None:
        raise StreamClosed(f"not connected to {peer}")
    return conn


class _Tasks:
    """Background tasks that end with their owner."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("background task ended: %s", task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class NodeChat:
    """Chat on a Node (`p2prtc listen/dial/demo`): one chat stream per peer (the dialer opens
    it when it first sends; the other side answers on it); every message received goes to
    `on_message(peer, text)`."""

    def __init__(self, node: Node, on_message: Callable[[str, str], None]) -> None:
        self.node = node
        self._tasks = _Tasks()
        self._chats: ChatStreams[str, Stream] = ChatStreams(on_message, self._tasks.spawn)
        node.handle(CHAT, self._handle, allow_relayed=True)

    async def _handle(self, stream: Stream) -> None:
        await self._chats.adopt(stream.remote_peer, stream)

    def reading_ended(self, peer: str) -> bool:
        """Whether a chat stream of an ended connection to `peer` is still being read (it may
        hold messages that arrived before the end)."""
        return any(s.remote_peer == peer and s.connection.closed
                   for s in self._chats.being_read())

    async def drained(self, peer: str, timeout: float = DRAIN_TIMEOUT) -> None:
        """Return once the chat streams of `peer`'s ended connections have been read out (every
        message that arrived on them reported), or after `timeout`."""
        await self._chats.drained(lambda s: s.remote_peer == peer and s.connection.closed,
                                  timeout)

    async def send(self, peer: str, text: str) -> None:
        """Write `text` into the chat stream to `peer` (opened on first use). Raises `NotSent`
        when the relayed connection it would go over has no room left under the relay's limits
        (a data limit used up also ends that connection, freeing the relay's slot), `ValueError`
        for a message over MAX_MESSAGE bytes, `P2PError` when it cannot be written."""
        data = check_size(text)
        stream = await self._chats.stream_for(
            peer, lambda: _connection_to(self.node, peer).open_stream(CHAT))
        conn = stream.connection
        why = conn.limit_refuses(len(data))
        if why is not None:
            if conn.limit_used_up:
                self._tasks.spawn(conn.close())
            raise NotSent(why)
        await stream.write(data)

    async def close(self) -> None:
        await self._tasks.close()


class _ByteStreamOf(ByteStream):
    """A public `Stream` as the internal ByteStream the file protocol's functions take."""

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    async def read(self, n: int = 65536) -> bytes:
        return await self._s.read(n)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._s.write(data)

    async def close_write(self) -> None:
        await self._s.close()

    async def close(self) -> None:
        await self._s.close()

    def reset(self) -> None:
        self._s.reset()


class NodeFiles:
    """Files from other peers are saved in `save_dir` (`on_start(peer, name, size)` may return
    a progress callback; `on_received(result)` once checked); `send` sends one."""

    def __init__(self, node: Node, save_dir: Path, *,
                 on_start: Callable[[PeerId, str, int], Progress | None] | None = None,
                 on_received: Callable[[FileResult], None] | None = None,
                 max_size: int = DEFAULT_MAX_FILE) -> None:
        self.node = node
        self.save_dir = Path(save_dir)
        self.on_start = on_start
        self.on_received = on_received
        self.max_size = max_size
        node.handle(FILE, self._handle, allow_relayed=True)

    async def _handle(self, stream: Stream) -> None:
        result = await receive_file(_ByteStreamOf(stream), PeerId.from_string(stream.remote_peer),
                                    self.save_dir, max_size=self.max_size, on_start=self.on_start)
        if result is not None and self.on_received is not None:
            self.on_received(result)

    async def send(self, peer: str, path: Path, progress: Progress | None = None) -> FileResult:
        """Send the file at `path` to `peer`; returns once the receiver confirmed its SHA-256.
        Raises `P2PError` (refused, checksum mismatch, stream ended) or `OSError`."""
        sha = file_sha256(path)
        started = time.perf_counter()
        stream = await _connection_to(self.node, peer).open_stream(FILE)
        return await send_file(_ByteStreamOf(stream), PeerId.from_string(peer), path,
                               sha256=sha, started=started, progress=progress)
