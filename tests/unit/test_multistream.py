"""multistream-select 1.0: the message codec and both negotiation roles over in-memory pipes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2prtc.errors import NegotiationFailed, ProtocolError
from p2prtc.streams import IncompleteRead
from p2prtc.wire import multistream as ms
from p2prtc.wire.varint import encode_uvarint
from tests.helpers import memory_pipe

HEADER = ms.encode_message(ms.PROTOCOL_ID)
TIMEOUT = 5.0


def msg(text: str) -> bytes:
    return ms.encode_message(text)


def raw_msg(body: bytes) -> bytes:
    """A length-prefixed message with any body (no newline or encoding check)."""
    return encode_uvarint(len(body)) + body


async def read_messages(stream, count: int) -> list[str]:
    return [await asyncio.wait_for(ms.read_message(stream), TIMEOUT) for _ in range(count)]


# -- codec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["/multistream/1.0.0", "na", "ls", "/noise", "/ipfs/id/1.0.0",
                                  "", "/ünïcode/1.0", "x" * 1023])
def test_encode_decode_round_trip(text):
    data = ms.encode_message(text)
    length = len(text.encode()) + 1
    assert data == encode_uvarint(length) + text.encode() + b"\n"
    assert ms.decode_message(data[len(encode_uvarint(length)):]) == text


def test_known_bytes():
    # The header as every implementation sends it: 0x13, "/multistream/1.0.0\n".
    assert HEADER == b"\x13/multistream/1.0.0\n"
    assert msg("na") == b"\x03na\n"


def test_encode_refuses_oversized():
    ms.encode_message("x" * (ms.MAX_MESSAGE_SIZE - 1))  # exactly 1024 with the newline: fine
    with pytest.raises(ValueError):
        ms.encode_message("x" * ms.MAX_MESSAGE_SIZE)


def test_decode_requires_newline():
    with pytest.raises(ProtocolError, match="newline"):
        ms.decode_message(b"/noise")
    with pytest.raises(ProtocolError, match="newline"):
        ms.decode_message(b"")


def test_decode_requires_utf8():
    with pytest.raises(ProtocolError, match="UTF-8"):
        ms.decode_message(b"\xff\xfe\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(text):
    data = ms.encode_message(text)

    async def run():
        a, b = memory_pipe()
        await a.write(data)
        return await ms.read_message(b)

    assert asyncio.run(run()) == text


# -- listener (handle_inbound) -------------------------------------------------------------------


def supports_only(*protos):
    return lambda p: p in protos


async def test_handle_inbound_accepts_first_supported():
    dialer, listener = memory_pipe()
    await dialer.write(HEADER + msg("/noise"))
    proto = await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/noise")), TIMEOUT)
    assert proto == "/noise"
    assert await read_messages(dialer, 2) == [ms.PROTOCOL_ID, "/noise"]


async def test_handle_inbound_answers_na_then_accepts():
    dialer, listener = memory_pipe()
    task = asyncio.ensure_future(ms.handle_inbound(listener, supports_only("/b")))
    await dialer.write(HEADER + msg("/a"))
    assert await read_messages(dialer, 2) == [ms.PROTOCOL_ID, "na"]
    await dialer.write(msg("/b"))
    assert await read_messages(dialer, 1) == ["/b"]
    assert await asyncio.wait_for(task, TIMEOUT) == "/b"


async def test_handle_inbound_answers_ls_and_na_proposals_with_na():
    # `ls` is optional; we do not list protocols. Neither `ls` nor `na` may be "accepted", even
    # if the supports() callback would say yes.
    dialer, listener = memory_pipe()
    task = asyncio.ensure_future(ms.handle_inbound(listener, lambda p: True))
    await dialer.write(HEADER + msg("ls") + msg("na") + msg("/x"))
    assert await read_messages(dialer, 4) == [ms.PROTOCOL_ID, "na", "na", "/x"]
    assert await asyncio.wait_for(task, TIMEOUT) == "/x"


async def test_handle_inbound_leaves_lazy_data_unread():
    # A js "lazy" dialer: header, proposal and its first application bytes in one write.
    dialer, listener = memory_pipe()
    payload = b"\x00\x01 application data right behind the proposal" * 3
    await dialer.write(HEADER + msg("/echo/1.0.0") + payload)
    proto = await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/echo/1.0.0")),
                                   TIMEOUT)
    assert proto == "/echo/1.0.0"
    await dialer.close_write()
    got = b""
    while chunk := await asyncio.wait_for(listener.read(), TIMEOUT):
        got += chunk
    assert got == payload


async def test_handle_inbound_too_many_proposals():
    dialer, listener = memory_pipe()
    await dialer.write(HEADER + b"".join(msg(f"/p/{i}") for i in range(ms.MAX_PROPOSALS + 5)))
    with pytest.raises(NegotiationFailed):
        await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/never")), TIMEOUT)
    replies = await read_messages(dialer, ms.MAX_PROPOSALS + 1)
    assert replies == [ms.PROTOCOL_ID] + ["na"] * ms.MAX_PROPOSALS


async def test_handle_inbound_accepts_the_last_allowed_proposal():
    dialer, listener = memory_pipe()
    props = [f"/p/{i}" for i in range(ms.MAX_PROPOSALS)]
    await dialer.write(HEADER + b"".join(msg(p) for p in props))
    proto = await asyncio.wait_for(ms.handle_inbound(listener, supports_only(props[-1])), TIMEOUT)
    assert proto == props[-1]


BAD_INBOUND = {
    "wrong header": (msg("/multistream/2.0.0"), ProtocolError, "header"),
    "oversized header": (encode_uvarint(1025) + b"x" * 1025, ProtocolError, "exceeds"),
    "huge length": (encode_uvarint(2**40), ProtocolError, "exceeds"),
    "header without newline": (raw_msg(b"/multistream/1.0.0"), ProtocolError, "newline"),
    "header not utf8": (raw_msg(b"\xc3\x28\n"), ProtocolError, "UTF-8"),
    "truncated header": (encode_uvarint(19) + b"/multistream", IncompleteRead, "ended"),
    "truncated varint": (b"\x80", IncompleteRead, "varint"),
    "empty stream": (b"", ProtocolError, "ended during protocol negotiation"),
    "oversized proposal": (HEADER + encode_uvarint(1025) + b"/" * 1025, ProtocolError, "exceeds"),
    "proposal without newline": (HEADER + raw_msg(b"/noise"), ProtocolError, "newline"),
    "proposal not utf8": (HEADER + raw_msg(b"/\xff\n"), ProtocolError, "UTF-8"),
    "truncated proposal": (HEADER + encode_uvarint(7) + b"/noi", IncompleteRead, "ended"),
    "eof after header": (HEADER, ProtocolError, "ended during protocol negotiation"),
    "non-minimal varint": (b"\x93\x00" + b"/multistream/1.0.0\n", ProtocolError, "minimal"),
    "overlong varint": (b"\xff" * 10, ProtocolError, "varint"),
}


@pytest.mark.parametrize("name", list(BAD_INBOUND))
async def test_handle_inbound_bad_input(name):
    data, exc, match = BAD_INBOUND[name]
    dialer, listener = memory_pipe()
    await dialer.write(data)
    await dialer.close_write()
    with pytest.raises(exc, match=match):
        await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/noise")), TIMEOUT)


async def test_handle_inbound_exactly_max_size_message_is_read():
    dialer, listener = memory_pipe()
    long_proto = "/" + "p" * (ms.MAX_MESSAGE_SIZE - 2)  # 1024 bytes with the newline
    await dialer.write(HEADER + msg(long_proto))
    proto = await asyncio.wait_for(ms.handle_inbound(listener, supports_only(long_proto)), TIMEOUT)
    assert proto == long_proto


# -- dialer (select_outbound) --------------------------------------------------------------------


async def test_select_outbound_sends_header_and_first_proposal_together():
    dialer, listener = memory_pipe()
    task = asyncio.ensure_future(ms.select_outbound(dialer, ["/noise"]))
    first = await asyncio.wait_for(listener.read(), TIMEOUT)
    assert first == HEADER + msg("/noise")  # one write, one packet
    await listener.write(HEADER + msg("/noise"))
    assert await asyncio.wait_for(task, TIMEOUT) == "/noise"


async def test_select_outbound_falls_back_after_na():
    dialer, listener = memory_pipe()
    task = asyncio.ensure_future(ms.select_outbound(dialer, ["/yamux/2.0.0", "/yamux/1.0.0"]))
    assert await read_messages(listener, 2) == [ms.PROTOCOL_ID, "/yamux/2.0.0"]
    await listener.write(HEADER + msg("na"))
    assert await read_messages(listener, 1) == ["/yamux/1.0.0"]
    await listener.write(msg("/yamux/1.0.0"))
    assert await asyncio.wait_for(task, TIMEOUT) == "/yamux/1.0.0"


async def test_select_outbound_all_refused():
    dialer, listener = memory_pipe()
    await listener.write(HEADER + msg("na") + msg("na"))
    with pytest.raises(NegotiationFailed, match="/a, /b"):
        await asyncio.wait_for(ms.select_outbound(dialer, ["/a", "/b"]), TIMEOUT)


async def test_select_outbound_no_protocols():
    dialer, _ = memory_pipe()
    with pytest.raises(ValueError):
        await ms.select_outbound(dialer, [])


@pytest.mark.parametrize("reply, match", [
    (msg("/multistream/0.9") + msg("/a"), "header"),
    (HEADER + msg("/other"), "answered"),
    (HEADER + raw_msg(b"/a"), "newline"),
    (HEADER, "ended"),
    (HEADER + encode_uvarint(2000), "exceeds"),
])
async def test_select_outbound_bad_replies(reply, match):
    dialer, listener = memory_pipe()
    await listener.write(reply)
    await listener.close_write()
    with pytest.raises(ProtocolError, match=match):
        await asyncio.wait_for(ms.select_outbound(dialer, ["/a"]), TIMEOUT)


async def test_select_outbound_leaves_following_data_unread():
    dialer, listener = memory_pipe()
    await listener.write(HEADER + msg("/a") + b"first bytes of the protocol")
    assert await asyncio.wait_for(ms.select_outbound(dialer, ["/a"]), TIMEOUT) == "/a"
    assert await asyncio.wait_for(dialer.read(), TIMEOUT) == b"first bytes of the protocol"


@pytest.mark.parametrize("max_read", [None, 1, 3])
async def test_both_sides_together(max_read):
    a, b = memory_pipe(max_read=max_read)
    chosen, accepted = await asyncio.wait_for(asyncio.gather(
        ms.select_outbound(a, ["/x/2", "/x/1", "/y"]),
        ms.handle_inbound(b, supports_only("/x/1", "/y")),
    ), TIMEOUT)
    assert chosen == accepted == "/x/1"
    await a.write(b"after")
    await a.close_write()
    got = b""
    while chunk := await asyncio.wait_for(b.read(), TIMEOUT):
        got += chunk
    assert got == b"after"  # nothing of it was consumed by the negotiation


# -- fuzz ----------------------------------------------------------------------------------------

ALLOWED = (ProtocolError, NegotiationFailed)  # IncompleteRead is a ProtocolError


async def feed_listener(garbage: bytes, max_read: int | None) -> None:
    dialer, listener = memory_pipe(max_read=max_read)
    await dialer.write(garbage)
    await dialer.close_write()  # the writer closes after the garbage: a hang is a bug
    try:
        await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/noise")), TIMEOUT)
    except ALLOWED:
        pass


def _message_like():
    texts = (st.sampled_from(["/multistream/1.0.0", "na", "ls", "/noise", "/x"])
             | st.text(max_size=20))
    bodies = st.one_of(
        texts.map(lambda t: t.encode() + b"\n"),
        st.binary(max_size=30),
    )
    return bodies.map(raw_msg)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([None, 1, 7]))
def test_random_bytes_only_raise_protocol_errors(garbage, max_read):
    asyncio.run(feed_listener(garbage, max_read))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message_like(), max_size=40), st.binary(max_size=20), st.booleans())
def test_message_like_garbage_after_header(messages, tail, with_header):
    data = (HEADER if with_header else b"") + b"".join(messages) + tail
    asyncio.run(feed_listener(data, None))


def test_fuzz_result_is_one_of_the_allowed_outcomes():
    # A sanity check of the harness: a good negotiation returns, bad ones raise allowed errors.
    async def run(data):
        dialer, listener = memory_pipe()
        await dialer.write(data)
        await dialer.close_write()
        return await asyncio.wait_for(ms.handle_inbound(listener, supports_only("/noise")), TIMEOUT)

    assert asyncio.run(run(HEADER + msg("/noise"))) == "/noise"
    with pytest.raises(IncompleteRead):
        asyncio.run(run(HEADER + b"\x05/n"))
