"""transports/webrtc/stream.py: DataChannelStream's state machine driven without aiortc.

A stand-in channel records what the stream sends; the fuzzer's input is a sequence of data
channel messages (records `len_hi, len_lo, bytes`) plus local actions between them. Contract:
bad frames end the stream with a reset (never an exception out of the message callback);
reads return exactly the payloads received before FIN/RESET, in order; whatever the stream
sends is valid framing.
"""

from p2prtc.errors import StreamClosed, StreamReset
from p2prtc.transports.webrtc import framing
from p2prtc.transports.webrtc.stream import DataChannelStream

from ..harness import run_sync


class FakeChannel:
    """The DataChannel interface DataChannelStream uses (engine.DataChannel)."""

    def __init__(self) -> None:
        self.id = 3
        self.label = ""
        self.ready_state = "open"
        self.buffered_amount = 0
        self.on_message = None
        self.on_close = None
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        if self.ready_state != "open":
            raise RuntimeError("send on a closed channel")  # aiortc: InvalidStateError
        self.sent.append(bytes(data))

    def close(self) -> None:
        if self.ready_state == "open":
            self.ready_state = "closed"
            if self.on_close is not None:
                self.on_close()

    async def drain(self) -> None:
        return None

    async def wait_open(self) -> bool:
        return self.ready_state == "open"


def test_one(data: bytes) -> None:
    if not data:
        return
    policy = data[0]
    ch = FakeChannel()
    finished = []
    stream = DataChannelStream(ch, on_finished=finished.append)
    pos = 1
    delivered = bytearray()
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos:pos + 2], "big") & 0x3FFF
        msg = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        if ch.ready_state == "open":
            ch.on_message(msg)  # must not raise, whatever msg is
        if policy & 1:
            delivered += _drain(stream)
        if policy & 2 and pos & 3 == 0:
            try:
                run_sync(stream.write(b"w" * (pos % 50)))
            except (StreamClosed, StreamReset):
                pass
    delivered += _drain(stream)
    if policy & 4:
        stream.reset()
    assert len(finished) <= 1
    # What we sent must decode as framing.
    for out in ch.sent:
        framing.FrameDecoder().feed(out)
    # Reference: the payloads a correct stream delivers.
    expected = bytearray()
    decoder = framing.FrameDecoder()
    pos = 1
    ended = False
    while pos + 2 <= len(data) and not ended:
        n = int.from_bytes(data[pos:pos + 2], "big") & 0x3FFF
        msg = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        try:
            frames = decoder.feed(msg)
        except Exception:
            break
        for flag, payload in frames:
            if payload:
                expected += payload
            if flag in (framing.FIN, framing.RESET_STREAM):
                ended = True
                break
    assert bytes(delivered) == bytes(expected)[:len(delivered)], "stream delivered other bytes"


def _drain(stream: DataChannelStream) -> bytes:
    out = bytearray()
    while stream.buffered:
        try:
            out += run_sync(stream.read(1000))
        except StreamReset:
            break
    return bytes(out)


def seeds() -> list[bytes]:
    def rec(b):
        return len(b).to_bytes(2, "big") + b
    e, f = framing.encode_data, framing.encode_flag
    return [
        b"\x01" + rec(e(b"hello")) + rec(e(b"world") + f(framing.FIN)) + rec(e(b"late")),
        b"\x00" + rec(e(b"a")) + rec(f(framing.STOP_SENDING)) + rec(f(framing.RESET_STREAM)),
        b"\x03" + rec(e(b"x" * 100)) + rec(f(framing.FIN_ACK)) + rec(b"\x05\x12\x03abc"),
        b"\x05" + rec(b"\xff\xff\xff"),
    ]
