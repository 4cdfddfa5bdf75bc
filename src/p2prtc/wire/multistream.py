"""multistream-select 1.0 (specs: connections/README.md#multistream-select).

Messages are uvarint-length-prefixed UTF-8 lines ending in "\\n". Both sides send the header
`/multistream/1.0.0`; the dialer proposes protocols one at a time; the listener echoes the one it
accepts or answers `na`. The codec below is pure; `select_outbound` / `handle_inbound` run it over
a ByteStream, reading exactly one message at a time so nothing after the negotiation is consumed
(a js "lazy" dialer sends its first data right behind the proposal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import NegotiationFailed, ProtocolError
from ..streams import ByteStream, read_length_prefixed
from .varint import encode_uvarint

PROTOCOL_ID = "/multistream/1.0.0"
NA = "na"
LS = "ls"
# go and js cap a message at 1 KiB; protocol ids are far shorter.
MAX_MESSAGE_SIZE = 1024
# A listener stops after this many rejected proposals on one stream (a dialer looping on `na`).
MAX_PROPOSALS = 32


def encode_message(text: str) -> bytes:
    body = text.encode("utf-8") + b"\n"
    if len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"multistream message longer than {MAX_MESSAGE_SIZE} bytes")
    return encode_uvarint(len(body)) + body


def decode_message(body: bytes) -> str:
    """Decode one message body (the bytes after the length prefix)."""
    if not body.endswith(b"\n"):
        raise ProtocolError("multistream message does not end with a newline")
    try:
        return body[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("multistream message is not UTF-8") from None


async def read_message(stream: ByteStream) -> str:
    body = await read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True)
    if body is None:
        raise ProtocolError("stream ended during protocol negotiation")
    return decode_message(body)


async def select_outbound(stream: ByteStream, protocols: Sequence[str]) -> str:
    """Dialer side: propose each protocol in turn; return the one the listener accepted.

    The header and the first proposal go out in one write (one packet, one Noise frame).
    """
    if not protocols:
        raise ValueError("no protocols to propose")
    await stream.write(encode_message(PROTOCOL_ID) + encode_message(protocols[0]))
    header = await read_message(stream)
    if header != PROTOCOL_ID:
        raise ProtocolError(f"unexpected multistream header {header!r}")
    for i, proto in enumerate(protocols):
        if i:
            await stream.write(encode_message(proto))
        reply = await read_message(stream)
        if reply == proto:
            return proto
        if reply != NA:
            raise ProtocolError(f"listener answered {reply!r} to a proposal of {proto!r}")
    raise NegotiationFailed(f"remote supports none of {', '.join(protocols)}")


async def handle_inbound(stream: ByteStream, supports: Callable[[str], bool]) -> str:
    """Listener side: answer proposals until one is supported; return it."""
    header = await read_message(stream)
    if header != PROTOCOL_ID:
        raise ProtocolError(f"unexpected multistream header {header!r}")
    await stream.write(encode_message(PROTOCOL_ID))
    for _ in range(MAX_PROPOSALS):
        proposal = await read_message(stream)
        if proposal != LS and proposal != NA and supports(proposal):
            await stream.write(encode_message(proposal))
            return proposal
        await stream.write(encode_message(NA))
    raise NegotiationFailed(f"remote made {MAX_PROPOSALS} proposals without agreement")
