"""RFC 5780 in the relay's STUN server: OTHER-ADDRESS, RESPONSE-ORIGIN and CHANGE-REQUEST, on the
sans-I/O responder and over real UDP sockets on loopback (127.0.0.1 and 127.0.0.2), checked with
aioice's STUN parser (an independent implementation) where it knows the attribute."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from aioice import stun as aioice_stun

from p2prtc.protocols import stun
from p2prtc.protocols.stun import NotStun, StunResponder

TIMEOUT = 5.0
P1, P2 = 3478, 3479
FOUR = {(0, 0): ("203.0.113.10", P1), (0, 1): ("203.0.113.10", P2),
        (1, 0): ("203.0.113.11", P1), (1, 1): ("203.0.113.11", P2)}
CLIENT = ("198.51.100.7", 40000)


def request(change_ip: bool = False, change_port: bool = False, txid: bytes | None = None) -> bytes:
    """A binding request built by aioice, with CHANGE-REQUEST written by hand (RFC 5780 7.2)."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST,
                              transaction_id=txid or os.urandom(12))
    raw = bytes(msg)
    if change_ip or change_port:
        flags = (4 if change_ip else 0) | (2 if change_port else 0)
        attr = struct.pack(">HHI", 0x0003, 4, flags)
        raw = raw[:2] + struct.pack(">H", len(raw) - 20 + 8) + raw[4:] + attr
    return raw


def attrs(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 20
    while pos < len(data):
        t, n = struct.unpack_from(">HH", data, pos)
        out[t] = data[pos + 4:pos + 4 + n]
        pos += 4 + n + (-n % 4)
    return out


def plain_addr(value: bytes) -> tuple[str, int]:
    """MAPPED-ADDRESS format, decoded here independently of the codec."""
    assert value[1] == 1 and len(value) == 8
    return ".".join(str(b) for b in value[4:]), struct.unpack(">H", value[2:4])[0]


# -- the sans-I/O responder -----------------------------------------------------------------------


@pytest.mark.parametrize("arrived, change, answers", [
    ((0, 0), (False, False), (0, 0)),
    ((0, 0), (False, True), (0, 1)),
    ((0, 0), (True, False), (1, 0)),
    ((0, 0), (True, True), (1, 1)),
    ((1, 1), (True, True), (0, 0)),
    ((0, 1), (False, True), (0, 0)),
    ((1, 0), (True, False), (0, 0)),
])
def test_change_request_picks_the_socket(arrived, change, answers):
    r = StunResponder(FOUR)
    reply = r.handle(request(*change), arrived, CLIENT)
    assert reply.role == answers
    a = attrs(reply.data)
    assert struct.unpack(">H", reply.data[:2])[0] == 0x0101
    assert plain_addr(a[0x802B]) == FOUR[answers]  # RESPONSE-ORIGIN: where it leaves from
    # OTHER-ADDRESS: the alternate IP and port of the answering socket.
    assert plain_addr(a[0x802C]) == FOUR[(1 - answers[0], 1 - answers[1])]
    # The client's address, as aioice reads it.
    parsed = aioice_stun.parse_message(reply.data)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == CLIENT


def test_port_only_server_serves_port_changes_and_refuses_ip_changes():
    r = StunResponder({(0, 0): FOUR[(0, 0)], (0, 1): FOUR[(0, 1)]})
    reply = r.handle(request(change_port=True), (0, 0), CLIENT)
    assert reply.role == (0, 1)
    # With no second IP, OTHER-ADDRESS names the other port of the same IP.
    assert plain_addr(attrs(reply.data)[0x802C]) == FOUR[(0, 0)]
    for change in ((True, False), (True, True)):
        txid = os.urandom(12)
        reply = r.handle(request(*change, txid=txid), (0, 0), CLIENT)
        assert reply.role == (0, 0)  # the error goes back the way the request came
        parsed = aioice_stun.parse_message(reply.data)
        assert parsed.message_class == aioice_stun.Class.ERROR
        assert parsed.transaction_id == txid
        assert parsed.attributes["ERROR-CODE"][0] == 420
        assert "IP" in parsed.attributes["ERROR-CODE"][1]


def test_single_socket_server_has_no_other_address():
    r = StunResponder({(0, 0): FOUR[(0, 0)]})
    reply = r.handle(request(), (0, 0), CLIENT)
    a = attrs(reply.data)
    assert 0x802C not in a and plain_addr(a[0x802B]) == FOUR[(0, 0)]
    err = r.handle(request(change_port=True), (0, 0), CLIENT)
    assert aioice_stun.parse_message(err.data).attributes["ERROR-CODE"][0] == 420


def test_wildcard_socket_reports_the_local_ip_it_is_given():
    r = StunResponder({(0, 0): ("0.0.0.0", P1), (0, 1): ("0.0.0.0", P2)})
    a = attrs(r.handle(request(), (0, 0), CLIENT, local_ip="192.0.2.5").data)
    assert plain_addr(a[0x802B]) == ("192.0.2.5", P1)
    assert plain_addr(a[0x802C]) == ("192.0.2.5", P2)
    # Unknown local IP: no address attributes rather than a wrong one.
    a = attrs(r.handle(request(), (0, 0), CLIENT).data)
    assert 0x802B not in a and 0x802C not in a and 0x0020 in a


@pytest.mark.parametrize("data", [
    b"hello", bytes(20), request()[:-1],
    # a success response, not a request
    bytes(aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE)),
])
def test_responder_ignores_non_requests(data):
    with pytest.raises(NotStun):
        StunResponder(FOUR).handle(data, (0, 0), CLIENT)


def test_responder_needs_a_primary():
    with pytest.raises(ValueError):
        StunResponder({(0, 1): FOUR[(0, 1)]})


# -- over UDP on loopback -------------------------------------------------------------------------


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait((data, addr))


async def test_four_sockets_answer_from_where_they_say():
    server = await stun.start_stun_server("127.0.0.1", 0, alt_port=0, alt_ip="127.0.0.2")
    loop = asyncio.get_running_loop()
    ct, client = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
    try:
        addrs = server.addresses
        assert set(addrs) == {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert addrs[(1, 0)][1] == addrs[(0, 0)][1] and addrs[(1, 1)][1] == addrs[(0, 1)][1]
        assert addrs[(0, 0)][1] != addrs[(0, 1)][1]
        ours = ct.get_extra_info("sockname")
        for change, role in (((False, False), (0, 0)), ((False, True), (0, 1)),
                             ((True, False), (1, 0)), ((True, True), (1, 1))):
            txid = os.urandom(12)
            ct.sendto(request(*change, txid=txid), addrs[(0, 0)])
            data, src = await asyncio.wait_for(client.queue.get(), TIMEOUT)
            assert src == addrs[role], change
            msg = aioice_stun.parse_message(data)
            assert msg.transaction_id == txid
            assert msg.attributes["XOR-MAPPED-ADDRESS"] == ours
            a = attrs(data)
            assert plain_addr(a[0x802B]) == addrs[role]
            assert plain_addr(a[0x802C]) == addrs[(1 - role[0], 1 - role[1])]
        assert server.answered == 4
    finally:
        ct.close()
        server.close()


async def test_wildcard_server_fills_in_the_address_the_client_reached():
    server = await stun.start_stun_server("0.0.0.0", 0, alt_port=0)
    loop = asyncio.get_running_loop()
    ct, client = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
    try:
        port, alt = server.addresses[(0, 0)][1], server.addresses[(0, 1)][1]
        ct.sendto(request(change_port=True), ("127.0.0.1", port))
        data, src = await asyncio.wait_for(client.queue.get(), TIMEOUT)
        assert src == ("127.0.0.1", alt)
        a = attrs(data)
        assert plain_addr(a[0x802B]) == ("127.0.0.1", alt)
        assert plain_addr(a[0x802C]) == ("127.0.0.1", port)
    finally:
        ct.close()
        server.close()


async def test_second_ip_needs_a_specific_primary():
    with pytest.raises(ValueError, match="listen-ip"):
        await stun.start_stun_server("0.0.0.0", 0, alt_ip="127.0.0.2")
