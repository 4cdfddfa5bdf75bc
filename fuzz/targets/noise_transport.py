"""security/noise.py transport phase: NoiseTransport.decrypt_feed fed valid frames (from our own
encrypt) mixed with garbage, in arbitrary splits, after a real handshake.

Input: a split seed, then records `op, len_hi, len_lo, bytes`: op odd = encrypt these bytes
as a frame, op even = raw bytes on the wire. Contract: ProtocolError only; every plaintext that
comes out is, in order, one that was encrypted before the first garbage; no frame is lost
when there is no garbage.
"""

from p2prtc.errors import ProtocolError
from p2prtc.security.noise import CipherState, NoiseTransport

from . import _noise_common as common
from ..harness import split_points

_A, _B = common.transport_pair()


def _fresh(template: NoiseTransport) -> NoiseTransport:
    send, recv = CipherState(), CipherState()
    send.aead, recv.aead = template.send_cipher.aead, template.recv_cipher.aead
    return NoiseTransport(send, recv)


def test_one(data: bytes) -> None:
    if not data:
        return
    sender, receiver = _fresh(_A), _fresh(_B)
    seed, pos = data[0], 1
    wire = bytearray()
    expected: list[bytes] = []
    garbage = False
    while pos + 3 <= len(data):
        op, n = data[pos], int.from_bytes(data[pos + 1:pos + 3], "big")
        chunk = data[pos + 3:pos + 3 + n]
        pos += 3 + n
        if op & 1:
            wire += sender.encrypt(chunk)
            if not garbage:
                expected += split_plaintext(chunk)
        elif chunk:
            wire += chunk
            garbage = True
    got: list[bytes] = []
    try:
        for piece in split_points(bytes(wire), seed):
            got += receiver.decrypt_feed(piece)
        failed = False
    except ProtocolError:
        failed = True
    assert got == expected[:len(got)], "decrypted frames differ from what was encrypted"
    if not garbage:
        assert not failed and got == expected and receiver.buffered == 0
    if failed:
        try:
            receiver.decrypt_feed(b"\x00\x10" + b"\x00" * 16)
        except ProtocolError:
            pass
        else:
            raise AssertionError("a failed transport decrypted again")


def split_plaintext(chunk: bytes) -> list[bytes]:
    from p2prtc.security.noise import MAX_PLAINTEXT_LEN
    if not chunk:
        return [b""]
    return [chunk[i:i + MAX_PLAINTEXT_LEN] for i in range(0, len(chunk), MAX_PLAINTEXT_LEN)]


def seeds() -> list[bytes]:
    def rec(op, b):
        return bytes([op]) + len(b).to_bytes(2, "big") + b
    return [
        b"\x00" + rec(1, b"hello") + rec(1, b"") + rec(1, b"x" * 300),
        b"\x05" + rec(1, b"a" * 40) + rec(1, b"b"),
        b"\x01" + rec(1, b"ok") + rec(0, b"\x00\x11" + b"\x00" * 17),
        b"\x00" + rec(0, b"\x00\x05abcde"),
        b"\x03" + rec(1, b"y") + rec(0, b"\xff"),
    ]
