"""The relay's STUN binding server: the codec against RFC 5769 vectors and aioice (aiortc's ICE,
an independent implementation), and a real UDP round trip on loopback."""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import os
import socket
import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.protocols import stun
from p2prtc.protocols.stun import NotStun, build_binding_success, parse_binding_request

TIMEOUT = 5.0


def hexbytes(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# RFC 5769 section 2.1, "Sample Request" (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
# MESSAGE-INTEGRITY, FINGERPRINT).
RFC5769_REQUEST = hexbytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")
RFC5769_TXID = hexbytes("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
# RFC 5769 sections 2.2 and 2.3: the XOR-MAPPED-ADDRESS values (family, port, address) of the
# sample responses, for 192.0.2.1:32853 and [2001:db8:1234:5678:11:2233:4455:6677]:32853.
RFC5769_XOR_V4 = hexbytes("00 01 a1 47 e1 12 a6 43")
RFC5769_XOR_V6 = hexbytes("00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9")


def attributes(msg: bytes) -> dict[int, bytes]:
    """Attribute type -> value of a STUN message, decoded here independently of stun.py."""
    out = {}
    pos = 20
    while pos < len(msg):
        t, n = struct.unpack_from(">HH", msg, pos)
        out[t] = msg[pos + 4 : pos + 4 + n]
        pos += 4 + n + (-n % 4)
    assert pos == len(msg)
    return out


def decode_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    family = value[1]
    port = struct.unpack(">H", value[2:4])[0] ^ 0x2112
    key = bytes.fromhex("2112a442") + txid
    raw = bytes(a ^ b for a, b in zip(value[4:], key, strict=False))  # key: 16, IPv4: 4
    assert (family, len(raw)) in ((1, 4), (2, 16))
    return str(ipaddress.ip_address(raw)), port


def binding_request(txid: bytes | None = None, *, fingerprint: bool = True,
                    software: bytes | None = None) -> bytes:
    txid = txid or os.urandom(12)
    attrs = b""
    if software is not None:
        attrs += struct.pack(">HH", 0x8022, len(software)) + software + b"\0" * (-len(software) % 4)
    length = len(attrs) + (8 if fingerprint else 0)
    msg = struct.pack(">HHI12s", 0x0001, length, 0x2112A442, txid) + attrs
    if fingerprint:
        crc = (binascii.crc32(msg) ^ 0x5354554E) & 0xFFFFFFFF
        msg += struct.pack(">HHI", 0x8028, 4, crc)
    return msg


# -- parsing requests ----------------------------------------------------------------------------


def test_parse_rfc5769_sample_request():
    assert parse_binding_request(RFC5769_REQUEST).txid == RFC5769_TXID


def test_parse_rfc5769_request_with_broken_fingerprint():
    bad = bytearray(RFC5769_REQUEST)
    bad[-1] ^= 0x01
    with pytest.raises(NotStun, match="FINGERPRINT"):
        parse_binding_request(bytes(bad))


def test_parse_rfc5769_request_with_flipped_body_byte():
    # Any change covered by the CRC is detected (here: one byte of SOFTWARE).
    bad = bytearray(RFC5769_REQUEST)
    bad[25] ^= 0x20
    with pytest.raises(NotStun, match="FINGERPRINT"):
        parse_binding_request(bytes(bad))


def test_parse_minimal_requests():
    txid = os.urandom(12)
    assert parse_binding_request(binding_request(txid, fingerprint=False)).txid == txid
    assert parse_binding_request(binding_request(txid)).txid == txid
    assert parse_binding_request(binding_request(txid, software=b"odd len")).txid == txid


def test_parse_request_built_by_aioice():
    req = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    req.attributes["SOFTWARE"] = "aioice"
    req.add_fingerprint()
    assert parse_binding_request(bytes(req)).txid == req.transaction_id


@pytest.mark.parametrize("data, match", [
    (b"", "not a STUN message"),
    (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 11, "not a STUN message"),  # 19 bytes
    (b"\x00" * 1501, "not a STUN message"),
    (struct.pack(">HHI12s", 0x0101, 0, 0x2112A442, b"\0" * 12), "type"),  # a response
    (struct.pack(">HHI12s", 0x0011, 0, 0x2112A442, b"\0" * 12), "type"),  # an indication
    (struct.pack(">HHI12s", 0x0001, 0, 0x12345678, b"\0" * 12), "cookie"),  # RFC 3489
    (struct.pack(">HHI12s", 0x0001, 4, 0x2112A442, b"\0" * 12), "length"),  # length > data
    (struct.pack(">HHI12s", 0x0001, 2, 0x2112A442, b"\0" * 12) + b"\0\0", "length"),  # not % 4
    (struct.pack(">HHI12s", 0x0001, 8, 0x2112A442, b"\0" * 12) + struct.pack(">HH", 0x8022, 8)
     + b"abcd", "truncated"),
    # FINGERPRINT with the wrong length, or not last
    (struct.pack(">HHI12s", 0x0001, 12, 0x2112A442, b"\0" * 12)
     + struct.pack(">HH", 0x8028, 8) + b"\0" * 8, "FINGERPRINT"),
    (struct.pack(">HHI12s", 0x0001, 16, 0x2112A442, b"\0" * 12)
     + struct.pack(">HHI", 0x8028, 4, 0) + struct.pack(">HHI", 0x8022, 4, 0), "FINGERPRINT"),
])
def test_parse_rejects(data, match):
    with pytest.raises(NotStun, match=match):
        parse_binding_request(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_not_stun(data):
    try:
        txid = parse_binding_request(data).txid
    except NotStun:
        return
    assert len(txid) == 12 and data[:2] == b"\x00\x01"


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.binary(max_size=120), st.integers(0, 0xFFFF))
def test_garbage_attributes_only_raise_not_stun(txid, body, length_delta):
    # Well-formed header, arbitrary attribute bytes and length field: the interesting paths.
    length = len(body) if length_delta % 3 else length_delta
    data = struct.pack(">HHI12s", 0x0001, length, 0x2112A442, txid) + body
    try:
        assert parse_binding_request(data).txid == txid
    except NotStun:
        pass


# -- building responses --------------------------------------------------------------------------


def test_xor_mapped_address_matches_rfc5769_ipv4():
    msg = build_binding_success(RFC5769_TXID, "192.0.2.1", 32853)
    assert attributes(msg)[0x0020] == RFC5769_XOR_V4


def test_xor_mapped_address_matches_rfc5769_ipv6():
    msg = build_binding_success(RFC5769_TXID, "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert attributes(msg)[0x0020] == RFC5769_XOR_V6


@pytest.mark.parametrize("host, port", [
    ("198.51.100.7", 55432), ("127.0.0.1", 1), ("203.0.113.250", 65535),
    ("::1", 3478), ("2001:db8::1", 40000), ("fe80::1:2:3:4", 9),
])
def test_response_decodes_independently(host, port):
    txid = os.urandom(12)
    msg = build_binding_success(txid, host, port)
    # Header: success response, length matches, cookie, our transaction id.
    msg_type, length, cookie, got_txid = struct.unpack_from(">HHI12s", msg)
    assert (msg_type, cookie, got_txid) == (0x0101, 0x2112A442, txid)
    assert length == len(msg) - 20 and length % 4 == 0
    attrs = attributes(msg)
    assert decode_xor_address(attrs[0x0020], txid) == (str(ipaddress.ip_address(host)), port)
    # MAPPED-ADDRESS (plain) for RFC 3489-era clients.
    mapped = attrs[0x0001]
    assert struct.unpack(">H", mapped[2:4])[0] == port
    assert ipaddress.ip_address(mapped[4:]) == ipaddress.ip_address(host)
    # FINGERPRINT: CRC-32 of everything before it, XOR 0x5354554E (RFC 5389 15.5), and last.
    assert msg[-8:-4] == b"\x80\x28\x00\x04"
    fp = struct.unpack(">I", msg[-4:])[0]
    assert fp == (binascii.crc32(msg[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert attrs[0x8022] == stun.SOFTWARE


@pytest.mark.parametrize("host, port", [("192.0.2.1", 32853), ("2001:db8::7", 4242)])
def test_response_parsed_by_aioice(host, port):
    txid = os.urandom(12)
    msg = aioice_stun.parse_message(build_binding_success(txid, host, port))  # checks FINGERPRINT
    assert msg.message_method == aioice_stun.Method.BINDING
    assert msg.message_class == aioice_stun.Class.RESPONSE
    assert msg.transaction_id == txid
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == (host, port)
    assert msg.attributes["MAPPED-ADDRESS"] == (host, port)
    assert msg.attributes["SOFTWARE"] == "p2prtc"


# -- the server over real UDP (loopback only) ----------------------------------------------------


class _AioiceClient(asyncio.DatagramProtocol):
    """aioice's own transaction machinery (retransmissions, matching by transaction id)."""

    def __init__(self) -> None:
        self.transport = None
        self.transactions: dict[bytes, aioice_stun.Transaction] = {}
        self.unparsed = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send_stun(self, message, addr) -> None:
        self.transport.sendto(bytes(message), addr)

    def datagram_received(self, data, addr) -> None:
        try:
            msg = aioice_stun.parse_message(data)
        except ValueError:
            self.unparsed += 1
            return
        t = self.transactions.get(msg.transaction_id)
        if t is not None:
            t.response_received(msg, addr)

    async def request(self, addr) -> tuple[aioice_stun.Message, tuple]:
        req = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
        req.add_fingerprint()
        t = aioice_stun.Transaction(req, addr, self)
        self.transactions[req.transaction_id] = t
        try:
            return await asyncio.wait_for(t.run(), TIMEOUT)
        finally:
            del self.transactions[req.transaction_id]


async def _round_trip(host: str) -> None:
    server = await stun.start_stun_server(host, 0)
    try:
        server_addr = server.addresses[stun.PRIMARY]
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        ctransport, client = await loop.create_datagram_endpoint(
            _AioiceClient, local_addr=(host, 0), family=family)
        try:
            ours = ctransport.get_extra_info("sockname")[:2]
            response, from_addr = await client.request(server_addr)
            assert from_addr[:2] == server_addr
            assert response.attributes["XOR-MAPPED-ADDRESS"] == (ours[0], ours[1])
            assert response.attributes["MAPPED-ADDRESS"] == (ours[0], ours[1])
            assert server.answered >= 1
        finally:
            ctransport.close()
    finally:
        server.close()


async def test_udp_round_trip_ipv4_with_aioice_client():
    await _round_trip("127.0.0.1")


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_udp_round_trip_ipv6_with_aioice_client():
    await _round_trip("::1")


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait((data, addr))


async def test_server_ignores_garbage_and_keeps_answering():
    server = await stun.start_stun_server("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    ctransport, client = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0))
    try:
        server_addr = server.addresses[stun.PRIMARY]
        ours = ctransport.get_extra_info("sockname")
        # (no empty datagram: asyncio's sendto() silently skips those)
        garbage = [b"hello", os.urandom(20), b"\x00\x01" + os.urandom(40),
                   RFC5769_REQUEST[:-1] + b"\x00", os.urandom(1400), b"\x00" * 2000]
        for g in garbage:
            ctransport.sendto(g, server_addr)
        txid = os.urandom(12)
        ctransport.sendto(binding_request(txid, software=b"raw socket"), server_addr)
        # Loopback UDP keeps order: the first reply must answer the valid request, i.e. nothing
        # was sent back for the garbage before it.
        data, addr = await asyncio.wait_for(client.queue.get(), TIMEOUT)
        assert addr == server_addr
        assert data[4:20] == struct.pack(">I", 0x2112A442) + txid
        assert decode_xor_address(attributes(data)[0x0020], txid) == ours
        assert server.ignored == len(garbage) and server.answered == 1
        # The RFC 5769 request (with MESSAGE-INTEGRITY we do not check) is answered too.
        ctransport.sendto(RFC5769_REQUEST, server_addr)
        data, _ = await asyncio.wait_for(client.queue.get(), TIMEOUT)
        assert data[8:20] == RFC5769_TXID
        assert server.answered == 2
    finally:
        ctransport.close()
        server.close()
