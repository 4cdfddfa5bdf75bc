"""Bad bytes from the network, layer by layer, against a listening Host over real TCP (loopback).

House rule under test: bad input ends that stream or connection with a logged reason; the process
and every other peer keep going. Each case drives a raw client through the good layers (using the
library's own pieces on a raw TCP stream), sends something bad at one layer, and then checks that
(1) the connection ends, (2) the host logged why, and (3) a well-behaved peer can still dial,
ping and echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct

import aiohttp
import pytest

from p2prtc.errors import P2PError, StreamReset
from p2prtc.host import Host
from p2prtc.identity import Identity
from p2prtc.muxer import yamux
from p2prtc.pb import identify_pb2
from p2prtc.protocols import identify
from p2prtc.protocols.echo import ECHO, handle_echo
from p2prtc.security import noise
from p2prtc.streams import read_exactly, write_length_prefixed
from p2prtc.transports.tcp import READ_BUFFER_LIMIT, TcpStream
from p2prtc.upgrader import NOISE_PROTOCOL, YAMUX_PROTOCOL
from p2prtc.wire import multistream as ms
from p2prtc.wire.varint import encode_uvarint

T = 5.0
MS_HEADER = ms.encode_message(ms.PROTOCOL_ID)


@contextlib.asynccontextmanager
async def echo_server(caplog, listen: str):
    caplog.set_level(logging.INFO)
    h = Host()
    h.handle(ECHO, handle_echo)
    addrs = await h.listen(listen)
    h.test_addr = addrs[0].with_peer_id(h.peer_id)
    h.test_port = int(addrs[0].value_for("tcp"))
    try:
        yield h
    finally:
        await asyncio.wait_for(h.close(), 15)
        # Nothing the remote did may surface as an unhandled error.
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def server(caplog):
    async with echo_server(caplog, "/ip4/127.0.0.1/tcp/0") as h:
        yield h


async def raw_connect(port: int) -> TcpStream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=READ_BUFFER_LIMIT)
    return TcpStream(reader, writer)


async def assert_ends(stream) -> None:
    """The remote ends the connection: EOF or reset, whatever else it sends first."""
    async def drain():
        try:
            while await stream.read(65536):
                pass
        except (P2PError, OSError):
            pass

    await asyncio.wait_for(drain(), T)


async def assert_good_peer_works(server: Host) -> None:
    good = Host()
    try:
        conn = await asyncio.wait_for(good.dial(server.test_addr), T)
        rtts = await asyncio.wait_for(good.ping_service.ping(conn, count=2), T)
        assert len(rtts) == 2
        s = await good.new_stream(conn, [ECHO])
        data = os.urandom(50_000)
        await s.write(data)
        await s.close_write()
        got = b""
        while chunk := await asyncio.wait_for(s.read(), T):
            got += chunk
        assert got == data
    finally:
        await good.close()


def logged(caplog, *fragments: str) -> bool:
    text = caplog.text
    return all(f in text for f in fragments)


async def secure_client(server: Host, identity: Identity | None = None):
    """Raw TCP + multistream /noise + Noise as initiator: a SecureSession to the server."""
    raw = await raw_connect(server.test_port)
    await asyncio.wait_for(ms.select_outbound(raw, [NOISE_PROTOCOL]), T)
    return await noise.secure_outbound(raw, identity or Identity.generate(), server.peer_id)


async def yamux_client(server: Host):
    secure = await secure_client(server)
    await asyncio.wait_for(ms.select_outbound(secure, [YAMUX_PROTOCOL]), T)
    return secure


def yamux_frame(version=0, type_=0, flags=0, stream_id=1, length=0) -> bytes:
    return struct.pack(">BBHII", version, type_, flags, stream_id, length)


# -- multistream (before security) ---------------------------------------------------------------


@pytest.mark.parametrize("garbage, reason", [
    (b"\xff" * 12, "varint longer"),
    (encode_uvarint(5000) + b"x" * 100, "exceeds the limit"),
    (b"\x07/noise!", "newline"),
    (b"\x04\xff\xfe\xfd\n", "UTF-8"),
    (ms.encode_message("/multistream/0.0.1"), "unexpected multistream header"),
    (MS_HEADER + b"".join(ms.encode_message(f"/nope/{i}") for i in range(ms.MAX_PROPOSALS)),
     "proposals without agreement"),
])
async def test_garbage_instead_of_multistream(server, caplog, garbage, reason):
    raw = await raw_connect(server.test_port)
    await raw.write(garbage)
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", reason)
    await assert_good_peer_works(server)


async def test_http_request_then_half_close(server, caplog):
    # 'G' reads as a 71-byte message: the host waits for it, then sees the stream end.
    raw = await raw_connect(server.test_port)
    await raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await raw.close_write()
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", "stream ended")
    await assert_good_peer_works(server)


@pytest.mark.parametrize("prefix", [MS_HEADER[:7], MS_HEADER + b"\x07/noi", b"\x93"])
async def test_truncated_multistream(server, caplog, prefix):
    raw = await raw_connect(server.test_port)
    await raw.write(prefix)
    await raw.close_write()
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", "stream ended")
    await assert_good_peer_works(server)


# -- Noise handshake -----------------------------------------------------------------------------


async def noise_negotiated(server: Host) -> TcpStream:
    raw = await raw_connect(server.test_port)
    await asyncio.wait_for(ms.select_outbound(raw, [NOISE_PROTOCOL]), T)
    return raw


def frame(msg: bytes) -> bytes:
    return len(msg).to_bytes(2, "big") + msg


async def read_frame(raw) -> bytes:
    n = int.from_bytes(await asyncio.wait_for(read_exactly(raw, 2), T), "big")
    return await asyncio.wait_for(read_exactly(raw, n), T)


@pytest.mark.parametrize("garbage, reason", [
    (frame(b"hello"), "message 1 too short"),
    (frame(b"\x00" * 32), "low-order"),
])
async def test_garbage_instead_of_noise_message_1(server, caplog, garbage, reason):
    raw = await noise_negotiated(server)
    await raw.write(garbage)
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", reason)
    await assert_good_peer_works(server)


async def test_garbage_noise_message_3(server, caplog):
    raw = await noise_negotiated(server)
    state = noise.NoiseHandshakeState(Identity.generate(), True)
    await raw.write(frame(state.write_message()))
    state.read_message(await read_frame(raw))  # the server's message 2 is fine
    await raw.write(frame(os.urandom(200)))  # message 3: random bytes
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", "message 3 failed to decrypt")
    await assert_good_peer_works(server)


async def test_noise_handshake_with_bad_signature(server, caplog):
    raw = await noise_negotiated(server)
    ident = Identity.generate()
    state = noise.NoiseHandshakeState(ident, True)
    # A payload that signed another static key: the signature does not cover the key the server
    # will see.
    state.payload = noise.NoiseHandshakeState(ident, True).payload
    await raw.write(frame(state.write_message()))
    state.read_message(await read_frame(raw))
    await raw.write(frame(state.write_message()))
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", "signature over its noise static key is invalid")
    await assert_good_peer_works(server)


async def test_noise_stalls_then_ends_mid_message(server, caplog):
    raw = await noise_negotiated(server)
    await raw.write(b"\x00\x20" + b"\x01" * 10)  # 32 announced, 10 sent
    await raw.close_write()
    await assert_ends(raw)
    assert logged(caplog, "failed to upgrade", "connection ended during the noise handshake")
    await assert_good_peer_works(server)


# -- after Noise: multistream for the muxer ------------------------------------------------------


async def test_encrypted_garbage_instead_of_muxer_negotiation(server, caplog):
    secure = await secure_client(server)
    await secure.write(b"\xff" * 16)
    await assert_ends(secure)
    assert logged(caplog, "failed to upgrade", "varint longer")
    await assert_good_peer_works(server)


async def test_unencrypted_garbage_after_noise(server, caplog):
    secure = await secure_client(server)
    await secure.raw.write(frame(os.urandom(40)))  # a frame that fails authentication
    await assert_ends(secure)
    assert logged(caplog, "failed to upgrade", "noise frame failed authentication")
    await assert_good_peer_works(server)


async def test_unsupported_muxer(server, caplog):
    secure = await secure_client(server)
    with pytest.raises(P2PError):  # NegotiationFailed: the server only speaks yamux
        await asyncio.wait_for(ms.select_outbound(secure, ["/mplex/6.7.0"]), T)
    await secure.close_write()
    await assert_ends(secure)
    assert logged(caplog, "failed to upgrade")
    await assert_good_peer_works(server)


async def test_truncated_noise_frame_during_muxer_negotiation(server, caplog):
    secure = await secure_client(server)
    whole = secure.seal(MS_HEADER)
    await secure.raw.write(whole[:-5])
    await secure.raw.close_write()
    await assert_ends(secure)
    assert logged(caplog, "failed to upgrade", "stream ended inside a noise frame")
    await assert_good_peer_works(server)


# -- after yamux ---------------------------------------------------------------------------------


@pytest.mark.parametrize("garbage, reason", [
    (yamux_frame(version=1), "unsupported yamux version 1"),
    (yamux_frame(type_=9, stream_id=0), "unknown yamux frame type 9"),
    (yamux_frame(type_=yamux.TYPE_DATA, stream_id=0, length=4) + b"abcd",
     "DATA/WINDOW_UPDATE frame for stream 0"),
    (yamux_frame(type_=yamux.TYPE_WINDOW_UPDATE, flags=yamux.FLAG_SYN, stream_id=4000),
     "with our parity"),
    (yamux_frame(type_=yamux.TYPE_DATA, flags=yamux.FLAG_SYN, stream_id=1, length=300_000),
     "of window left"),
    (yamux_frame(type_=yamux.TYPE_PING, flags=0, stream_id=0), "PING without SYN or ACK"),
    (yamux_frame(type_=yamux.TYPE_DATA, stream_id=1, length=yamux.MAX_WINDOW + 1),
     "exceeds the limit"),
    (bytes([2 + os.urandom(1)[0] % 250]) + os.urandom(11), "unsupported yamux version"),
])
async def test_garbage_yamux_frames(server, caplog, garbage, reason):
    secure = await yamux_client(server)
    await secure.write(garbage)
    await assert_ends(secure)
    assert logged(caplog, "yamux:", reason, "GoAway")
    await assert_good_peer_works(server)


async def test_yamux_truncated_mid_frame(server, caplog):
    secure = await yamux_client(server)
    await secure.write(yamux_frame(type_=yamux.TYPE_DATA, flags=yamux.FLAG_SYN, stream_id=1,
                                   length=100) + b"only part of the body")
    await secure.close_write()
    await assert_ends(secure)
    assert logged(caplog, "yamux: connection closed by remote")
    await assert_good_peer_works(server)


async def test_noise_frame_truncated_after_yamux(server, caplog):
    secure = await yamux_client(server)
    whole = secure.seal(yamux_frame(type_=yamux.TYPE_PING, flags=yamux.FLAG_SYN,
                                    stream_id=0, length=7))
    await secure.raw.write(whole[: len(whole) // 2])
    await secure.raw.close_write()
    await assert_ends(secure)
    assert logged(caplog, "yamux: connection lost", "stream ended inside a noise frame")
    await assert_good_peer_works(server)


# -- application protocols on a valid connection: identify push ----------------------------------


async def _pushing_client(server: Host):
    bad = Host(identify=False)  # a peer that pushes whatever it likes
    conn = await asyncio.wait_for(bad.dial(server.test_addr), T)
    return bad, conn


async def test_oversized_identify_push(server, caplog):
    bad, conn = await _pushing_client(server)
    try:
        s = await bad.new_stream(conn, [identify.IDENTIFY_PUSH])
        size = identify.MAX_MESSAGE_SIZE + 1
        await s.write(encode_uvarint(size))
        # The server refuses on the length prefix alone and resets the stream.
        with pytest.raises(StreamReset):
            await asyncio.wait_for(s.read(), T)
        assert logged(caplog, identify.IDENTIFY_PUSH, f"message of {size} bytes exceeds")
        # That stream ended, not the connection: it still carries ping and a new push.
        await asyncio.wait_for(bad.ping_service.ping(conn), T)
        assert not conn.is_closed
    finally:
        await bad.close()
    await assert_good_peer_works(server)


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xff\xff\xff", "malformed identify message"),
    (identify_pb2.Identify(publicKey=b"\x08\x01\x12\x03abc").SerializeToString(),
     "identify carries a bad public key"),
    (identify_pb2.Identify(
        publicKey=Identity.generate().public_key.to_protobuf()).SerializeToString(),
     "does not match the connection's peer"),
])
async def test_malformed_identify_push(server, caplog, payload, reason):
    bad, conn = await _pushing_client(server)
    try:
        s = await bad.new_stream(conn, [identify.IDENTIFY_PUSH])
        with expect_log("p2prtc.host", reason) as seen:
            await write_length_prefixed(s, payload)
            await s.close_write()
            await asyncio.wait_for(seen.wait(), T)
        assert logged(caplog, identify.IDENTIFY_PUSH, reason)
        assert server.peerstore.get(bad.peer_id).public_key in (None, bad.identity.public_key)
        await asyncio.wait_for(bad.ping_service.ping(conn), T)
    finally:
        await bad.close()
    await assert_good_peer_works(server)


class expect_log:
    """`with expect_log(logger, fragment) as seen: ...; await seen.wait()`: an event set when a
    record containing `fragment` is logged (watching starts at once, so nothing is missed)."""

    def __init__(self, logger_name: str, fragment: str) -> None:
        self.logger = logging.getLogger(logger_name)
        self.fragment = fragment
        self.seen = asyncio.Event()
        outer = self

        class Watch(logging.Handler):
            def emit(self, record):
                if outer.fragment in record.getMessage():
                    outer.seen.set()

        self.handler = Watch(logging.DEBUG)

    def __enter__(self) -> asyncio.Event:
        self.logger.addHandler(self.handler)
        return self.seen

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)


async def test_identify_answer_truncated(server, caplog):
    # A peer that answers our identify request with half a message and then ends the stream.
    bad = Host(identify=False)

    async def half_answer(stream):
        await stream.write(encode_uvarint(500) + b"x" * 10)
        await stream.close()

    bad.handle(identify.IDENTIFY, half_answer, allow_limited=True)
    try:
        with expect_log("p2prtc.protocols.identify", "identify with") as seen:
            conn = await asyncio.wait_for(bad.dial(server.test_addr), T)
            await asyncio.wait_for(seen.wait(), T)
        assert logged(caplog, "identify with", "failed", "stream ended after 10 of 500 bytes")
        await asyncio.wait_for(bad.ping_service.ping(conn), T)
    finally:
        await bad.close()
    await assert_good_peer_works(server)


# -- many bad peers at once ----------------------------------------------------------------------


async def test_many_bad_connections_at_once(server, caplog):
    async def one(i: int):
        raw = await raw_connect(server.test_port)
        await raw.write(os.urandom(1 + i % 40) + b"\xff" * 10)
        await raw.close_write()
        await assert_ends(raw)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(30))), T)
    await assert_good_peer_works(server)


# -- the same over WebSocket ---------------------------------------------------------------------


@pytest.fixture
async def ws_server(caplog):
    async with echo_server(caplog, "/ip4/127.0.0.1/tcp/0/ws") as h:
        yield h


@pytest.mark.parametrize("kind", ["binary", "text", "binary-then-close"])
async def test_garbage_over_websocket(ws_server, caplog, kind):
    with expect_log("p2prtc.upgrader", "failed to upgrade") as seen:
        async with aiohttp.ClientSession() as session:
            ws = await asyncio.wait_for(
                session.ws_connect(f"ws://127.0.0.1:{ws_server.test_port}/"), T)
            if kind == "text":
                # "\u00ff" is c3 bf in UTF-8: every byte has its high bit set, an endless varint.
                await ws.send_str("\u00ff" * 20)
            else:
                await ws.send_bytes(b"\xff" * 16)
            if kind == "binary-then-close":
                await ws.close()
            else:
                msg = await asyncio.wait_for(ws.receive(), T)  # the host ends the connection
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR)
            await ws.close()
        await asyncio.wait_for(seen.wait(), T)
    assert logged(caplog, "inbound ws connection", "failed to upgrade")
    await assert_good_peer_works(ws_server)


async def test_plain_http_to_websocket_listener(ws_server):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{ws_server.test_port}/") as resp:
            assert resp.status == 426
    await assert_good_peer_works(ws_server)
