"""File transfer protocol (/p2prtc/file/1.0.0) and chat over real in-process hosts (TCP)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from p2prtc.errors import P2PError
from p2prtc.protocols.chat import ChatService
from p2prtc.protocols.filetransfer import FILE, FileService, safe_name, unique_path
from p2prtc.streams import read_length_prefixed, write_length_prefixed


@pytest.mark.parametrize("given, expected", [
    ("report.pdf", "report.pdf"), ("../../etc/passwd", "passwd"), ("a\\b\\c.txt", "c.txt"),
    ("..", "file"), ("", "file"), ("x\x00y\n", "x_y"),
])
def test_safe_name(given, expected):
    assert safe_name(given) == expected


def test_unique_path(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "a (1).txt").write_text("x")
    assert unique_path(tmp_path, "a.txt").name == "a (2).txt"
    assert unique_path(tmp_path, "b.txt").name == "b.txt"


async def test_file_round_trip_and_chat(host_factory, tmp_path):
    a = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    b = await host_factory(listen=[])
    got: asyncio.Queue = asyncio.Queue()
    FileService(a, tmp_path / "in", on_received=got.put_nowait)
    files_b = FileService(b, tmp_path / "unused")
    msgs: asyncio.Queue = asyncio.Queue()
    ChatService(a, lambda p, t: msgs.put_nowait(t))
    chat_b = ChatService(b, lambda p, t: None)
    await b.dial(a.listen_addrs[0].with_peer_id(a.peer_id))
    src = tmp_path / "weird name.bin"
    src.write_bytes(os.urandom(3_000_001))
    sent = await files_b.send(a.peer_id, src)
    r = await asyncio.wait_for(got.get(), 10)
    assert r.sha256 == sent.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert r.path.read_bytes() == src.read_bytes() and r.path.name == "weird name.bin"
    assert not list((tmp_path / "in").glob("*.part"))
    await chat_b.send(a.peer_id, "héllo")
    assert await asyncio.wait_for(msgs.get(), 5) == "héllo"


@pytest.mark.parametrize("lie", ["size", "sha256"])
async def test_receiver_rejects_a_lying_sender(host_factory, tmp_path, lie):
    a = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    b = await host_factory(listen=[])
    got: list = []
    FileService(a, tmp_path, on_received=got.append)
    conn = await b.dial(a.listen_addrs[0].with_peer_id(a.peer_id))
    stream = await b.new_stream(conn, [FILE])
    data = b"x" * 1000
    header = {"name": "f", "size": 2000 if lie == "size" else 1000,
              "sha256": "00" * 32 if lie == "sha256" else hashlib.sha256(data).hexdigest()}
    await write_length_prefixed(stream, json.dumps(header).encode())
    await stream.write(data)
    await stream.close_write()
    answer = json.loads(await read_length_prefixed(stream, 4096))
    assert answer["ok"] is False
    assert not got and not list(tmp_path.iterdir())  # nothing saved, no .part left


async def test_sender_sees_the_rejection(host_factory, tmp_path):
    a = await host_factory(listen=["/ip4/127.0.0.1/tcp/0"])
    b = await host_factory(listen=[])
    FileService(a, tmp_path / "in", max_size=10)
    files_b = FileService(b, tmp_path)
    await b.dial(a.listen_addrs[0].with_peer_id(a.peer_id))
    src = tmp_path / "big.bin"
    src.write_bytes(b"y" * 100)
    with pytest.raises(P2PError, match="rejected|over the limit|closed"):
        await files_b.send(a.peer_id, src)
