"""File transfer, `/p2prtc/file/1.0.0`: the sender opens a stream and writes a uvarint-length-
prefixed JSON header `{"name", "size", "sha256"}`, then exactly `size` bytes, then closes its
write side. The receiver checks size and SHA-256 and answers with one length-prefixed JSON
`{"ok": true, "sha256": ...}` or `{"ok": false, "error": ...}`. The browser app speaks it too."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import P2PError, ProtocolError
from ..identity import PeerId
from ..streams import ByteStream, Stream, read_length_prefixed, write_length_prefixed

if TYPE_CHECKING:
    from ..network import Network

log = logging.getLogger(__name__)

FILE = "/p2prtc/file/1.0.0"
MAX_HEADER = 4096
CHUNK = 256 * 1024
# Refuse files larger than this unless the receiver raises it.
DEFAULT_MAX_FILE = 4 << 30

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class FileResult:
    peer: PeerId
    name: str
    size: int
    sha256: str
    path: Path | None
    seconds: float


def safe_name(name: str) -> str:
    """A file name that cannot escape the download directory."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    base = re.sub(r"[\x00-\x1f]", "_", base)
    return base if base not in ("", ".", "..") else "file"


def unique_path(directory: Path, name: str) -> Path:
    path = directory / name
    stem, suffix = path.stem, path.suffix
    n = 1
    while path.exists():
        path = directory / f"{stem} ({n}){suffix}"
        n += 1
    return path


class FileService:
    def __init__(self, host: Network, save_dir: Path, *,
                 on_start: Callable[[PeerId, str, int], Progress | None] | None = None,
                 on_received: Callable[[FileResult], None] | None = None,
                 max_size: int = DEFAULT_MAX_FILE) -> None:
        self.host = host
        self.save_dir = Path(save_dir)
        self.on_start = on_start
        self.on_received = on_received
        self.max_size = max_size
        host.handle(FILE, self._handle, allow_limited=True)

    async def _handle(self, stream: Stream) -> None:
        if stream.connection is None:  # (set for every inbound stream)
            stream.reset()
            return
        result = await receive_file(stream, stream.connection.remote_peer, self.save_dir,
                                    max_size=self.max_size, on_start=self.on_start)
        if result is not None and self.on_received:
            self.on_received(result)

    async def send(self, peer: PeerId, path: Path, progress: Progress | None = None) -> FileResult:
        path = Path(path)
        sha = file_sha256(path)
        t0 = time.perf_counter()
        stream = await self.host.new_stream(peer, [FILE], allow_limited=True)
        return await send_file(stream, peer, path, sha256=sha, started=t0, progress=progress)


async def receive_file(stream: ByteStream, peer: PeerId, save_dir: Path, *,
                       max_size: int = DEFAULT_MAX_FILE,
                       on_start: Callable[[PeerId, str, int], Progress | None] | None = None
                       ) -> FileResult | None:
    """The receiving side of FILE on an accepted `stream` from `peer`: the file goes to
    `save_dir` (a `.part` file until its size and SHA-256 check out). None when refused (over
    `max_size`); ProtocolError for a bad header, size or checksum (the sender is told first)."""
    raw = await read_length_prefixed(stream, MAX_HEADER)
    try:
        header = json.loads(raw)
        name = safe_name(str(header["name"]))
        size = int(header["size"])
        expected = str(header.get("sha256", "")).lower()
    except (ValueError, KeyError, TypeError) as e:
        await _answer(stream, ok=False, error=f"bad header: {e}")
        raise ProtocolError(f"bad file header from {peer.short()}: {e}") from None
    if size < 0 or size > max_size:
        await _answer(stream, ok=False, error=f"file of {size} bytes is over the limit")
        return None
    save_dir.mkdir(parents=True, exist_ok=True)
    path = unique_path(save_dir, name)
    part = path.with_name(path.name + ".part")
    progress = on_start(peer, name, size) if on_start else None
    digest = hashlib.sha256()
    got = 0
    t0 = time.perf_counter()
    try:
        with open(part, "wb") as f:
            while got < size:
                data = await stream.read(min(CHUNK, size - got))
                if not data:
                    break
                digest.update(data)
                f.write(data)
                got += len(data)
                if progress:
                    progress(got, size)
        extra = await stream.read(1) if got == size else b""
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if got != size or extra:
        part.unlink(missing_ok=True)
        await _answer(stream, ok=False, error=f"expected {size} bytes, got {got}{'+' if extra else ''}")
        raise ProtocolError(f"file {name!r} from {peer.short()} had the wrong size")
    if expected and expected != actual:
        part.unlink(missing_ok=True)
        await _answer(stream, ok=False, error="sha256 mismatch")
        raise ProtocolError(f"file {name!r} from {peer.short()} failed its sha256 check")
    part.rename(path)
    await _answer(stream, ok=True, sha256=actual)
    await stream.close()
    return FileResult(peer, name, size, actual, path, time.perf_counter() - t0)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path`, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def send_file(stream: ByteStream, peer: PeerId, path: Path, *, sha256: str,
                    started: float, progress: Progress | None = None) -> FileResult:
    """The sending side of FILE on a `stream` opened to `peer` and negotiated to FILE: the
    header, the file's bytes, our end of the stream, then the receiver's answer. The stream is
    reset on any failure; P2PError when the receiver refused the file or its checksum differs.
    `started` (time.perf_counter()) is when the transfer began, for the result's seconds."""
    size = path.stat().st_size
    sha = sha256
    try:
        await write_length_prefixed(
            stream, json.dumps({"name": path.name, "size": size, "sha256": sha}).encode())
        sent = 0
        with open(path, "rb") as f:
            while True:
                block = f.read(CHUNK)  # page-cache reads of 256 KiB: no thread needed
                if not block:
                    break
                await stream.write(block)
                sent += len(block)
                if progress:
                    progress(sent, size)
        await stream.close_write()
        raw = await read_length_prefixed(stream, MAX_HEADER, allow_eof=True)
    except BaseException:
        stream.reset()
        raise
    await stream.close()
    if raw is None:
        raise P2PError("the receiver closed the stream without confirming the file")
    answer = json.loads(raw)
    if not answer.get("ok"):
        raise P2PError(f"the receiver rejected the file: {answer.get('error')}")
    if answer.get("sha256") != sha:
        raise P2PError("the receiver's sha256 does not match ours")
    return FileResult(peer, path.name, size, sha, path, time.perf_counter() - started)


async def _answer(stream: ByteStream, **fields: object) -> None:
    try:
        await write_length_prefixed(stream, json.dumps(fields).encode())
    except P2PError:
        pass
