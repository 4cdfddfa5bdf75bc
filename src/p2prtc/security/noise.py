"""libp2p Noise (specs: noise/README.md): `Noise_XX_25519_ChaChaPoly_SHA256` with the libp2p
handshake payload and 2-byte big-endian length framing.

Two sans-I/O cores and a thin asyncio adapter:
- `NoiseHandshakeState`: the XX handshake as bytes in / bytes out, including the libp2p payload
  (identity key, signature over the Noise static key, extensions) and its verification.
- `NoiseTransport`: the two cipher states after the handshake, with the wire framing:
  `encrypt()` turns plaintext into framed ciphertexts, `decrypt_feed()` takes bytes as they
  arrive and returns the plaintexts of every complete frame.
- `handshake()` / `secure_outbound()` / `secure_inbound()` run the handshake over a
  `ByteStream` and return a `SecureSession`, itself a `ByteStream`.

Noise framework references below are to revision 34 of the Noise spec (noiseprotocol.org).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TypedDict, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import HandshakeError, ProtocolError, StreamClosed, StreamReset
from ..identity import Identity, InvalidKey, PeerId, PublicKey
from ..pb import noise_pb2
from ..streams import ByteStream, IncompleteRead, read_exactly

log = logging.getLogger(__name__)

PROTOCOL_ID = "/noise"
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
# Noise spec section 3: a Noise message is at most 65535 bytes (the libp2p 2-byte length prefix
# could not say more anyway).
MAX_MESSAGE_LEN = 65535
TAG_LEN = 16  # Poly1305 tag
# Largest plaintext per transport frame. js and go chunk writes at this size, rust-libp2p at
# 65535 - 1024; receivers accept any frame up to the maximum.
MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - TAG_LEN
DH_LEN = 32
HASH_LEN = 32
# Noise spec section 5.1: nonce 2^64-1 is reserved; a session must end before using it.
MAX_NONCE = 2**64 - 1
# libp2p noise spec, "The libp2p Handshake Payload": the identity key signs this + static key.
STATIC_KEY_SIGNATURE_PREFIX = b"noise-libp2p-static-key:"
# A peer that stalls mid-handshake holds a connection slot; bound it. The project's choice
# (js-libp2p gives a whole inbound upgrade 30 s: INBOUND_UPGRADE_TIMEOUT, constants.defaults.ts).
HANDSHAKE_TIMEOUT = 10
# How much the session asks of the raw stream per read: a few frames, so one read usually
# yields whole frames without holding much memory.
RAW_READ_SIZE = 4 * (MAX_MESSAGE_LEN + 2)
# A write() larger than this is encrypted and passed down in pieces of this size, so a huge write
# neither doubles its memory nor bypasses the backpressure of the layer below.
WRITE_BATCH_LEN = 4 * MAX_PLAINTEXT_LEN

_EXTENSION_KEYS = frozenset({"webtransport_certhashes", "stream_muxers"})


class NoiseExtensions(TypedDict, total=False):
    """The handshake payload's extensions (libp2p noise spec). What we send may leave either key
    out; what we received has both."""

    webtransport_certhashes: list[bytes]
    stream_muxers: list[str]


_T = TypeVar("_T")


def _known(value: _T | None, what: str) -> _T:
    # The handshake's order (checked by _check_turn) guarantees these are set by now.
    if value is None:
        raise HandshakeError(f"noise handshake state lacks {what}")
    return value
_NONCE_PREFIX = b"\x00\x00\x00\x00"  # Noise spec 12.3: 32 zero bits then the 64-bit LE counter


# -- primitives (Noise spec section 4, with 25519 / ChaChaPoly / SHA256) -------------------------


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    m = hmac.HMAC(key, hashes.SHA256())
    m.update(data)
    return m.finalize()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise spec 4.3 HKDF with two outputs."""
    temp_key = _hmac_sha256(chaining_key, ikm)
    out1 = _hmac_sha256(temp_key, b"\x01")
    out2 = _hmac_sha256(temp_key, out1 + b"\x02")
    return out1, out2


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # cryptography refuses an all-zero shared secret, i.e. a low-order remote point.
        raise HandshakeError("remote sent a low-order X25519 public key") from None


def _nonce(n: int) -> bytes:
    return _NONCE_PREFIX + n.to_bytes(8, "little")


class CipherState:
    """Noise spec 5.1: a ChaCha20-Poly1305 key (or none yet) and a 64-bit nonce counter."""

    __slots__ = ("aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self.aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    @property
    def has_key(self) -> bool:
        return self.aead is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.aead is None:
            return bytes(plaintext)
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("noise nonce exhausted: the session must be closed")
        ciphertext = self.aead.encrypt(_nonce(n), plaintext, ad)
        self.n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.aead is None:
            return bytes(ciphertext)
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("noise nonce exhausted: the session must be closed")
        try:
            plaintext = self.aead.decrypt(_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise ProtocolError("noise message failed authentication") from None
        self.n = n + 1
        return plaintext


class _SymmetricState:
    """Noise spec 5.2."""

    __slots__ = ("ck", "h", "cipher")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASH_LEN:
            h = protocol_name.ljust(HASH_LEN, b"\x00")
        else:
            h = _sha256(protocol_name)
        self.ck = h
        self.h = h
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = _sha256(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_key = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(temp_key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


# -- handshake --------------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    # The proto2 runtime hands back bytes for a string field that is not valid UTF-8. A muxer name
    # like that matches nothing we support, so it need not fail the handshake.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _extensions_to_dict(ext: noise_pb2.NoiseExtensions) -> NoiseExtensions:
    return {
        "webtransport_certhashes": [bytes(h) for h in ext.webtransport_certhashes],
        "stream_muxers": [_text(m) for m in ext.stream_muxers],
    }


class NoiseHandshakeState:
    """The XX handshake with the libp2p payload, sans I/O.

        -> e
        <- e, ee, s, es      + responder's payload (identity key, signature, extensions)
        -> s, se             + initiator's payload

    Call `write_message()` when `our_turn` is true and hand its result (without the 2-byte
    length) to the peer; pass each message from the peer to `read_message()`. Once `complete`,
    `split()` gives the transport cipher states. Any problem raises HandshakeError, after which
    the state is dead.

    `extensions` is a dict with optional keys `webtransport_certhashes` (list of bytes) and
    `stream_muxers` (list of str); None sends no extensions field at all. `remote_peer`, if given,
    is the peer id the remote must authenticate as. `static_key`/`ephemeral_key` are for reusing a
    static key and for known-answer tests; by default fresh keys are generated.
    """

    def __init__(
        self,
        identity: Identity,
        initiator: bool,
        prologue: bytes = b"",
        extensions: NoiseExtensions | None = None,
        static_key: X25519PrivateKey | None = None,
        *,
        remote_peer: PeerId | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
    ) -> None:
        self.initiator = initiator
        self.local_peer = identity.peer_id
        self._expected_peer = remote_peer
        self._ss = _SymmetricState(PROTOCOL_NAME)
        self._ss.mix_hash(bytes(prologue))
        self._s = static_key if static_key is not None else X25519PrivateKey.generate()
        self._s_pub = _public_bytes(self._s)
        self._e = ephemeral_key
        self._re: bytes | None = None
        self._rs: bytes | None = None
        self._step = 0  # handshake messages written or read so far (3 = complete)
        self._failed = False
        # The NoiseHandshakePayload we send (identity key, signature of our static key,
        # extensions); tests replace it to play a peer that sends a bad one.
        self.payload = self._encode_payload(identity, extensions)
        if DH_LEN + (DH_LEN + TAG_LEN) + len(self.payload) + TAG_LEN > MAX_MESSAGE_LEN:
            raise ValueError("noise handshake payload too large (too many extensions?)")
        self._remote_public_key: PublicKey | None = None
        self._remote_peer_id: PeerId | None = None
        self._remote_extensions: NoiseExtensions | None = None

    def _encode_payload(self, identity: Identity, extensions: NoiseExtensions | None) -> bytes:
        msg = noise_pb2.NoiseHandshakePayload(
            identity_key=identity.public_key.to_protobuf(),
            identity_sig=identity.sign(STATIC_KEY_SIGNATURE_PREFIX + self._s_pub),
        )
        if extensions is not None:
            unknown = set(extensions) - _EXTENSION_KEYS
            if unknown:
                raise ValueError(f"unknown noise extensions: {sorted(unknown)}")
            ext = msg.extensions
            ext.SetInParent()  # send the field even when both lists are empty, as js does
            ext.webtransport_certhashes.extend(extensions.get("webtransport_certhashes", ()))
            ext.stream_muxers.extend(extensions.get("stream_muxers", ()))
        return msg.SerializeToString()

    # -- state --

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def our_turn(self) -> bool:
        """True if the next step is write_message() (messages 1 and 3 are the initiator's)."""
        return self._step < 3 and (self._step % 2 == 0) == self.initiator

    @property
    def local_static_public_key(self) -> bytes:
        return self._s_pub

    @property
    def remote_static_public_key(self) -> bytes | None:
        return self._rs

    @property
    def remote_public_key(self) -> PublicKey | None:
        """The remote's identity key, once its payload has been verified (else None)."""
        return self._remote_public_key

    @property
    def remote_peer_id(self) -> PeerId | None:
        return self._remote_peer_id

    @property
    def remote_extensions(self) -> NoiseExtensions | None:
        """The remote's extensions as a dict with both keys, or None if it sent none."""
        return self._remote_extensions

    @property
    def handshake_hash(self) -> bytes:
        """Noise spec 11.2 channel binding value (meaningful once complete)."""
        return self._ss.h

    # -- messages --

    def write_message(self) -> bytes:
        self._check_turn(writing=True)
        ss = self._ss
        try:
            if self._step == 0:  # -> e
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                e_pub = _public_bytes(self._e)
                ss.mix_hash(e_pub)
                out = e_pub + ss.encrypt_and_hash(b"")
            elif self._step == 1:  # <- e, ee, s, es
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                e_pub = _public_bytes(self._e)
                ss.mix_hash(e_pub)
                re = _known(self._re, "the remote ephemeral key")
                ss.mix_key(_dh(self._e, re))
                enc_s = ss.encrypt_and_hash(self._s_pub)
                ss.mix_key(_dh(self._s, re))
                out = e_pub + enc_s + ss.encrypt_and_hash(self.payload)
            else:  # -> s, se
                enc_s = ss.encrypt_and_hash(self._s_pub)
                ss.mix_key(_dh(self._s, _known(self._re, "the remote ephemeral key")))
                out = enc_s + ss.encrypt_and_hash(self.payload)
        except BaseException:
            self._failed = True
            raise
        self._step += 1
        return out

    def read_message(self, message: bytes | bytearray | memoryview) -> None:
        self._check_turn(writing=False)
        msg = bytes(message)
        step = self._step + 1
        try:
            if len(msg) > MAX_MESSAGE_LEN:
                raise HandshakeError(
                    f"noise handshake message {step} is {len(msg)} bytes (max {MAX_MESSAGE_LEN})"
                )
            if self._step == 0:  # -> e
                if len(msg) < DH_LEN:
                    raise HandshakeError(f"noise handshake message 1 too short ({len(msg)} bytes)")
                self._re = msg[:DH_LEN]
                self._ss.mix_hash(self._re)
                # The initiator must not send a payload here (it would be unencrypted and
                # unauthenticated); whatever is there is only hashed, as Noise requires.
                self._decrypt(msg[DH_LEN:], step)
            elif self._step == 1:  # <- e, ee, s, es
                min_len = DH_LEN + DH_LEN + TAG_LEN + TAG_LEN
                if len(msg) < min_len:
                    raise HandshakeError(f"noise handshake message 2 too short ({len(msg)} bytes)")
                self._re = msg[:DH_LEN]
                self._ss.mix_hash(self._re)
                e = _known(self._e, "our ephemeral key")
                self._ss.mix_key(_dh(e, self._re))
                self._rs = rs = self._decrypt(msg[DH_LEN : 2 * DH_LEN + TAG_LEN], step)
                self._ss.mix_key(_dh(e, rs))
                self._verify_payload(self._decrypt(msg[2 * DH_LEN + TAG_LEN :], step), rs)
            else:  # -> s, se
                min_len = DH_LEN + TAG_LEN + TAG_LEN
                if len(msg) < min_len:
                    raise HandshakeError(f"noise handshake message 3 too short ({len(msg)} bytes)")
                self._rs = rs = self._decrypt(msg[: DH_LEN + TAG_LEN], step)
                self._ss.mix_key(_dh(_known(self._e, "our ephemeral key"), rs))
                self._verify_payload(self._decrypt(msg[DH_LEN + TAG_LEN :], step), rs)
        except BaseException:
            self._failed = True
            raise
        self._step += 1

    def split(self) -> tuple[CipherState, CipherState]:
        """(send_cipher, recv_cipher) for the transport phase."""
        if not self.complete:
            raise HandshakeError("noise handshake is not complete")
        c1, c2 = self._ss.split()
        return (c1, c2) if self.initiator else (c2, c1)

    # -- helpers --

    def _check_turn(self, *, writing: bool) -> None:
        if self._failed:
            raise HandshakeError("noise handshake already failed")
        if self.complete:
            raise HandshakeError("noise handshake already complete")
        if writing != self.our_turn:
            whose = "our" if self.our_turn else "the remote's"
            action = "write" if writing else "read"
            raise HandshakeError(
                f"unexpected noise handshake order: cannot {action} message {self._step + 1}, "
                f"it is {whose} turn to send"
            )

    def _decrypt(self, ciphertext: bytes, step: int) -> bytes:
        try:
            return self._ss.decrypt_and_hash(ciphertext)
        except ProtocolError:
            raise HandshakeError(
                f"noise handshake message {step} failed to decrypt "
                "(corrupted, or the peers use different prologues)"
            ) from None

    def _verify_payload(self, data: bytes, remote_static: bytes) -> None:
        msg = noise_pb2.NoiseHandshakePayload()
        try:
            msg.ParseFromString(data)
            extensions = _extensions_to_dict(msg.extensions) if msg.HasField("extensions") else None
        except Exception as e:  # DecodeError, bad UTF-8 in a string, recursion limit
            raise HandshakeError(f"malformed noise handshake payload: {e}") from None
        if not msg.identity_key:
            raise HandshakeError("noise handshake payload lacks the identity key")
        if not msg.identity_sig:
            raise HandshakeError("noise handshake payload lacks the identity signature")
        try:
            key = PublicKey.from_protobuf(msg.identity_key)
        except InvalidKey as e:
            raise HandshakeError(f"bad identity key in noise handshake payload: {e}") from None
        try:
            valid = key.verify(STATIC_KEY_SIGNATURE_PREFIX + remote_static, msg.identity_sig)
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise HandshakeError("the remote's signature over its noise static key is invalid")
        peer = PeerId.from_public_key(key)
        if self._expected_peer is not None and peer != self._expected_peer:
            raise HandshakeError(
                f"remote authenticated as {peer}, but we expected {self._expected_peer}"
            )
        self._remote_public_key = key
        self._remote_peer_id = peer
        self._remote_extensions = extensions


# -- transport --------------------------------------------------------------------------------


class NoiseTransport:
    """Transport phase, sans I/O: framing plus one cipher state per direction."""

    def __init__(self, send_cipher: CipherState, recv_cipher: CipherState) -> None:
        if send_cipher.aead is None or recv_cipher.aead is None:
            raise ValueError("transport cipher states need keys")
        self._send_aead = send_cipher.aead
        self._recv_aead = recv_cipher.aead
        self.send_cipher = send_cipher
        self.recv_cipher = recv_cipher
        self._buf = bytearray()
        self._failed = False

    @classmethod
    def from_handshake(cls, state: NoiseHandshakeState) -> NoiseTransport:
        return cls(*state.split())

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held by decrypt_feed()."""
        return len(self._buf)

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Framed ciphertext(s) for plaintext: one frame per MAX_PLAINTEXT_LEN bytes (an empty
        plaintext gives one empty frame)."""
        cs = self.send_cipher
        aead = self._send_aead
        n = cs.n
        total = len(plaintext)
        frames = max(1, -(-total // MAX_PLAINTEXT_LEN))
        if n + frames > MAX_NONCE:
            raise ProtocolError("noise nonce exhausted: the session must be closed")
        if frames == 1:
            ct = aead.encrypt(_NONCE_PREFIX + n.to_bytes(8, "little"), plaintext, None)
            cs.n = n + 1
            return len(ct).to_bytes(2, "big") + ct
        parts: list[bytes] = []
        append = parts.append
        with memoryview(plaintext) as mv:
            for off in range(0, total, MAX_PLAINTEXT_LEN):
                ct = aead.encrypt(
                    _NONCE_PREFIX + n.to_bytes(8, "little"), mv[off : off + MAX_PLAINTEXT_LEN], None
                )
                n += 1
                append(len(ct).to_bytes(2, "big"))
                append(ct)
        cs.n = n
        return b"".join(parts)

    def decrypt_feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take received bytes; return the plaintexts of all frames completed so far (an empty
        frame gives b""). Raises ProtocolError on a frame that fails authentication, after which
        the transport is dead."""
        if self._failed:
            raise ProtocolError("noise transport already failed")
        buf = self._buf
        src: bytes | bytearray | memoryview
        if buf:
            buf += data
            src = buf
        else:
            src = data
        total = len(src)
        out: list[bytes] = []
        pos = 0
        cs = self.recv_cipher
        aead = self._recv_aead
        n = cs.n
        with memoryview(src) as mv:
            while total - pos >= 2:
                end = pos + 2 + ((mv[pos] << 8) | mv[pos + 1])
                if end > total:
                    break
                if end - pos - 2 < TAG_LEN:
                    self._failed = True
                    raise ProtocolError(
                        f"noise frame of {end - pos - 2} bytes is shorter than its tag"
                    )
                if n >= MAX_NONCE:
                    self._failed = True
                    raise ProtocolError("noise nonce exhausted: the session must be closed")
                try:
                    plaintext = aead.decrypt(
                        _NONCE_PREFIX + n.to_bytes(8, "little"), mv[pos + 2 : end], None
                    )
                except InvalidTag:
                    self._failed = True
                    raise ProtocolError("noise frame failed authentication") from None
                out.append(plaintext)
                n += 1
                pos = end
            cs.n = n
            if src is buf:
                pass
            elif pos < total:
                buf += mv[pos:]
        if src is buf and pos:
            del buf[:pos]
        return out


# -- asyncio adapter --------------------------------------------------------------------------


class SecureSession(ByteStream):
    """A ByteStream that encrypts with Noise over a raw ByteStream (which it then owns)."""

    def __init__(
        self,
        raw: ByteStream,
        transport: NoiseTransport,
        *,
        local_peer: PeerId,
        remote_peer: PeerId,
        remote_public_key: PublicKey,
        remote_extensions: NoiseExtensions | None,
    ) -> None:
        self._raw = raw
        self._transport = transport
        self.local_peer = local_peer
        self.remote_peer = remote_peer
        self.remote_public_key = remote_public_key
        self.remote_extensions = remote_extensions
        self._pending: deque[bytes] = deque()
        self._offset = 0  # bytes of _pending[0] already returned
        self._eof = False
        self._read_error: BaseException | None = None
        self._write_closed = False
        self._reset = False
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    @property
    def raw(self) -> ByteStream:
        return self._raw

    def _take(self, n: int) -> bytes:
        chunk = self._pending[0]
        off = self._offset
        if len(chunk) - off <= n:
            self._pending.popleft()
            self._offset = 0
            return chunk[off:] if off else chunk
        self._offset = off + n
        return chunk[off : off + n]

    async def read(self, n: int = 65536) -> bytes:
        if n <= 0:
            raise ValueError("read size must be positive")
        if self._reset:
            raise StreamReset("noise session was reset")
        if self._pending:
            return self._take(n)
        async with self._read_lock:
            while not self._pending:
                if self._read_error is not None:
                    raise self._read_error
                if self._eof:
                    return b""
                data = await self._raw.read(RAW_READ_SIZE)
                if not data:
                    self._eof = True
                    if self._transport.buffered:
                        self._read_error = IncompleteRead(
                            f"stream ended inside a noise frame ({self._transport.buffered} bytes "
                            "buffered)"
                        )
                        raise self._read_error
                    return b""
                try:
                    plaintexts = self._transport.decrypt_feed(data)
                except ProtocolError as e:
                    # The session is unusable: its receive nonce no longer matches the peer's.
                    self._read_error = e
                    self.reset()
                    raise
                for p in plaintexts:
                    if p:
                        self._pending.append(p)
            return self._take(n)

    def seal(self, data: bytes) -> bytes:
        """The Noise frame(s) `write(data)` would send next, without sending them (it uses up
        the nonce: tests send them cut or changed)."""
        return self._transport.encrypt(data)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._reset:
            raise StreamReset("noise session was reset")
        if self._write_closed:
            raise StreamClosed("noise session is closed for writing")
        if not data:
            return
        async with self._write_lock:
            if len(data) <= WRITE_BATCH_LEN:
                await self._raw.write(self._transport.encrypt(data))
                return
            with memoryview(data) as mv:
                for off in range(0, len(mv), WRITE_BATCH_LEN):
                    if self._reset:
                        raise StreamReset("noise session was reset")
                    await self._raw.write(self._transport.encrypt(mv[off : off + WRITE_BATCH_LEN]))

    async def close_write(self) -> None:
        if self._write_closed or self._reset:
            return
        self._write_closed = True
        async with self._write_lock:  # let a write in progress finish its frames
            await self._raw.close_write()

    async def close(self) -> None:
        # Unlike close_write, does not wait for a write in progress: that one may be stuck on a
        # peer that stopped reading. Frames go down whole, so the peer sees a clean end either way,
        # and the interrupted writer gets an error from the raw stream.
        if self._reset:
            return
        self._write_closed = True
        await self._raw.close()

    def reset(self) -> None:
        self._reset = True
        self._write_closed = True
        self._pending.clear()
        self._raw.reset()


async def handshake(
    raw: ByteStream,
    identity: Identity,
    initiator: bool,
    remote_peer: PeerId | None = None,
    prologue: bytes = b"",
    extensions: NoiseExtensions | None = None,
    *,
    static_key: X25519PrivateKey | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> SecureSession:
    """Run the Noise XX handshake over raw and return the secured session.

    Reads exactly the handshake messages from raw and nothing after them. Raises HandshakeError
    for anything the remote did wrong, including ending the stream or taking longer than
    `timeout` seconds; on any failure the raw stream is reset (it is unusable mid-handshake).
    """
    state = NoiseHandshakeState(
        identity, initiator, prologue, extensions, static_key, remote_peer=remote_peer
    )
    try:
        async with asyncio.timeout(timeout):
            while not state.complete:
                if state.our_turn:
                    msg = state.write_message()
                    await raw.write(len(msg).to_bytes(2, "big") + msg)
                else:
                    length = int.from_bytes(await read_exactly(raw, 2), "big")
                    state.read_message(await read_exactly(raw, length))
    except BaseException as e:
        raw.reset()
        if isinstance(e, HandshakeError):
            log.debug("noise handshake failed: %s", e)
            raise
        if isinstance(e, TimeoutError):
            err = HandshakeError("noise handshake timed out")
        elif isinstance(e, IncompleteRead):
            err = HandshakeError(f"connection ended during the noise handshake ({e})")
        elif isinstance(e, StreamReset):
            err = HandshakeError("connection reset during the noise handshake")
        elif isinstance(e, (StreamClosed, ProtocolError)):
            err = HandshakeError(f"noise handshake failed: {e}")
        else:
            raise
        log.debug("noise handshake failed: %s", err)
        raise err from None
    remote_key = state.remote_public_key
    remote_peer_id = state.remote_peer_id
    if remote_key is None or remote_peer_id is None:  # complete means the payload was verified
        raw.reset()
        raise HandshakeError("noise handshake completed without the remote's identity")
    return SecureSession(
        raw,
        NoiseTransport.from_handshake(state),
        local_peer=identity.peer_id,
        remote_peer=remote_peer_id,
        remote_public_key=remote_key,
        remote_extensions=state.remote_extensions,
    )


async def secure_outbound(
    raw: ByteStream,
    identity: Identity,
    remote_peer: PeerId | None = None,
    *,
    prologue: bytes = b"",
    extensions: NoiseExtensions | None = None,
) -> SecureSession:
    """Noise as the initiator (the dialing side on TCP and WebSocket)."""
    return await handshake(raw, identity, True, remote_peer, prologue, extensions)


async def secure_inbound(
    raw: ByteStream,
    identity: Identity,
    *,
    remote_peer: PeerId | None = None,
    prologue: bytes = b"",
    extensions: NoiseExtensions | None = None,
) -> SecureSession:
    """Noise as the responder (the listening side on TCP and WebSocket)."""
    return await handshake(raw, identity, False, remote_peer, prologue, extensions)
