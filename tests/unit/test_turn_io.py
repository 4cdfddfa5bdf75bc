"""The TURN adapter (relay/turn_io.py) in-process on 127.0.0.1: its own UDP socket and TCP
listener, relayed ports from a range, garbage on TCP, idle and surplus TCP connections; and the
credentials protocol's message codec."""

from __future__ import annotations

import asyncio
import time

import pytest
from aioice import stun as astun
from aioice.turn import create_turn_endpoint

from p2prtc.errors import ProtocolError
from p2prtc.pb import turn_credentials_pb2 as pb
from p2prtc.protocols import turn_credentials as tc
from p2prtc.relay import turn_io, udp_batch
from p2prtc.relay.turn import TurnLimits, TurnStats
from p2prtc.relay.turn_io import TurnConfig, TurnService
from p2prtc.transports.webrtc_direct import stun as codec

SECRET = "unit-secret"


class Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.q: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.q.put_nowait((data, addr))


@pytest.fixture
async def service():
    s = TurnService(TurnConfig(SECRET, "unit", TurnLimits(), relay_ip="127.0.0.1",
                               min_port=43000, max_port=43000), TurnStats())
    udp = await s.listen_udp("127.0.0.1", 0)
    tcp = await s.listen_tcp("127.0.0.1", 0)
    s.test_udp, s.test_tcp = udp, tcp
    try:
        yield s
    finally:
        s.close()


def creds(peer="12D3KooWUnit"):
    c = tc.credentials_for(SECRET, peer, ["turn:127.0.0.1:1?transport=udp"])
    return c.username, c.password


async def test_udp_and_tcp_relay_and_port_range_exhaustion(service):
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Queue, local_addr=("127.0.0.1", 0))
    try:
        turn, client = await asyncio.wait_for(create_turn_endpoint(
            Queue, service.test_udp, *creds(), transport="udp"), 5)
        assert turn.get_extra_info("sockname") == ("127.0.0.1", 43000)
        turn.sendto(b"over udp", peer_t.get_extra_info("sockname"))
        data, addr = await asyncio.wait_for(peer.q.get(), 5)
        assert data == b"over udp" and addr == ("127.0.0.1", 43000)
        # the range holds one port: a second allocation (over TCP) gets 508
        with pytest.raises(astun.TransactionFailed) as e:
            await asyncio.wait_for(create_turn_endpoint(
                Queue, service.test_tcp, *creds(), transport="tcp"), 5)
        assert e.value.response.attributes["ERROR-CODE"][0] == 508
        assert service.core.stats.refusals["no-relay-port"] == 1
        turn.close()
        await asyncio.wait_for(_until(lambda: not service.relayed), 5)
        # the port is free again, now over TCP
        turn, client = await asyncio.wait_for(create_turn_endpoint(
            Queue, service.test_tcp, *creds(), transport="tcp"), 5)
        peer_t.sendto(b"not permitted yet", ("127.0.0.1", 43000))
        turn.sendto(b"over tcp", peer_t.get_extra_info("sockname"))
        data, _ = await asyncio.wait_for(peer.q.get(), 5)
        assert data == b"over tcp"
        peer_t.sendto(b"back", ("127.0.0.1", 43000))
        data, _ = await asyncio.wait_for(client.q.get(), 5)
        assert data == b"back"
        assert service.core.stats.refusals["peer-without-permission"] == 1
        turn.close()
        await asyncio.wait_for(_until(lambda: not service.core.allocations), 5)
    finally:
        peer_t.close()


async def test_tcp_connection_end_frees_its_allocation(service):
    turn, _ = await asyncio.wait_for(create_turn_endpoint(
        Queue, service.test_tcp, *creds(), transport="tcp"), 5)
    assert len(service.core.allocations) == 1
    # drop the TCP connection without deleting the allocation (a client that vanishes)
    inner = next(iter(service.tcp_clients.values()))
    inner.transport.abort()
    await asyncio.wait_for(_until(lambda: not service.core.allocations and not service.relayed), 5)


async def test_tcp_connection_closed_after_its_allocation_ends(service, monkeypatch):
    monkeypatch.setattr(turn_io, "TCP_ALLOCATE_TIMEOUT", 0.2)
    turn, client = await asyncio.wait_for(create_turn_endpoint(
        Queue, service.test_tcp, *creds(), transport="tcp"), 5)
    conn = next(iter(service.tcp_clients.values()))
    # the allocation expires (as if its lifetime ran out): the connection follows shortly
    service.dispatch(service.core.expire(time.time() + 3600))
    assert not service.core.allocations and not service.relayed
    await asyncio.wait_for(_until(lambda: conn.transport.is_closing()), 5)
    turn.close()


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b"\xff\xff\xff\xff", b"\x00\x01\x00\x00\x00\x00\x00\x00"])
async def test_tcp_garbage_closes_the_connection(service, garbage):
    reader, writer = await asyncio.open_connection(*service.test_tcp)
    writer.write(garbage)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    assert service.core.stats.refusals["garbage"] == 1
    writer.close()


async def test_idle_and_surplus_tcp_connections(service, monkeypatch):
    monkeypatch.setattr(turn_io, "TCP_ALLOCATE_TIMEOUT", 0.2)
    monkeypatch.setattr(turn_io, "MAX_TCP_CONNECTIONS", 1)
    reader, writer = await asyncio.open_connection(*service.test_tcp)
    r2, w2 = await asyncio.open_connection(*service.test_tcp)
    assert await asyncio.wait_for(r2.read(), 5) == b""  # over the cap: closed at once
    assert service.core.stats.refusals["tcp-connections"] == 1
    t0 = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no allocation: closed
    assert time.monotonic() - t0 < 2
    writer.close()
    w2.close()


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)


# -- the credentials message -------------------------------------------------------------------

def test_credentials_roundtrip_and_validation():
    c = tc.credentials_for("s", "12D3KooWX", ["turn:203.0.113.10:3478?transport=udp",
                                              "turn:203.0.113.10:3478?transport=tcp"],
                           ttl=600, now=1_000_000)
    assert c.username == "1000600:12D3KooWX" and c.expires == 1000600
    back = tc.decode(tc.encode(c))
    assert back == c
    for bad in (pb.TurnCredentials(urls=[], username="u", password="p"),
                pb.TurnCredentials(urls=["http://x"], username="u", password="p"),
                pb.TurnCredentials(urls=["turn:x"] * 17, username="u", password="p"),
                pb.TurnCredentials(urls=["turn:x"], password="p")):
        with pytest.raises(ProtocolError):
            tc.decode(bad.SerializeToString())
    with pytest.raises(ProtocolError):
        tc.decode(b"\xff\xff\xff")


async def test_shared_stun_socket_gets_coturns_buffer_size(service):
    """The STUN socket TURN shares (what clients reach TURN on by default) gets SOCKET_BUFFER,
    coturn's 2 MiB, both ways, as far as net.core.{r,w}mem_max allow (the kernel doubles what
    it grants; its default, rmem_default, is much less)."""
    import socket

    from p2prtc.protocols.stun import start_stun_server

    def granted(name: str) -> int:
        with open(f"/proc/sys/net/core/{name}") as f:
            return 2 * min(turn_io.SOCKET_BUFFER, int(f.read()))

    stun = await start_stun_server("127.0.0.1", 0)
    try:
        service.share(stun)
        sock = stun.transports[(0, 0)].get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= granted("rmem_max")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= granted("wmem_max")
    finally:
        stun.close()


# -- the batched fast path (udp_batch.py): what the core enforces holds there too -----------------

class RawClient:
    """A TURN client over a UDP socket of its own (aioice's codec for the requests)."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: Queue, server) -> None:
        self.t, self.inbox, self.server = transport, inbox, server
        self.user, self.password = creds()
        self.key = self.realm = self.nonce = None

    async def request(self, method, attrs: dict) -> astun.Message:
        for _ in range(2):
            m = astun.Message(message_method=method, message_class=astun.Class.REQUEST)
            m.attributes.update(attrs)
            if self.key is not None:
                m.attributes.update(USERNAME=self.user, REALM=self.realm, NONCE=self.nonce)
                m.add_message_integrity(self.key)
            self.t.sendto(bytes(m), self.server)
            data, _ = await asyncio.wait_for(self.inbox.q.get(), 5)
            resp = astun.parse_message(data)
            if resp.message_class == astun.Class.ERROR and self.key is None:
                self.realm, self.nonce = resp.attributes["REALM"], resp.attributes["NONCE"]
                self.key = codec.long_term_key(self.user, self.realm, self.password)
                continue
            return resp
        raise AssertionError("no answer")


@pytest.mark.parametrize("batched", [True, False], ids=["mmsg", "per-datagram"])
async def test_fast_path_enforces_channels_permissions_and_byte_limit(batched):
    if batched and not udp_batch.mmsg_available():
        pytest.fail("recvmmsg/sendmmsg not reachable through ctypes on this Linux")
    limit = 10_000
    s = TurnService(TurnConfig(SECRET, "unit", TurnLimits(max_bytes=limit), relay_ip="127.0.0.1",
                               batched=batched), TurnStats())
    loop = asyncio.get_running_loop()
    transports = []
    try:
        server = await s.listen_udp("127.0.0.1", 0)
        ct, cq = await loop.create_datagram_endpoint(Queue, local_addr=("127.0.0.1", 0))
        pt, pq = await loop.create_datagram_endpoint(Queue, local_addr=("127.0.0.1", 0))
        p2t, p2q = await loop.create_datagram_endpoint(Queue, local_addr=("127.0.0.1", 0))
        transports += [ct, pt, p2t]
        client = RawClient(ct, cq, server)
        resp = await client.request(astun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": 0x11000000})
        relayed = resp.attributes["XOR-RELAYED-ADDRESS"]
        peer = pt.get_extra_info("sockname")
        resp = await client.request(astun.Method.CHANNEL_BIND, {
            "CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": peer})
        assert resp.message_class == astun.Class.RESPONSE
        stats = s.core.stats
        # client -> peer over the channel, in order
        for i in range(5):
            ct.sendto(codec.channel_data(0x4000, bytes([i]) * 1000), server)
        got = [await asyncio.wait_for(pq.q.get(), 5) for _ in range(5)]
        assert [d for d, _ in got] == [bytes([i]) * 1000 for i in range(5)]
        assert all(a == tuple(relayed) for _, a in got)
        # peer -> client: ChannelData on the bound channel
        for i in range(3):
            pt.sendto(bytes([i]) * 1000, tuple(relayed))
        back = [(await asyncio.wait_for(cq.q.get(), 5))[0] for _ in range(3)]
        assert back == [codec.channel_data(0x4000, bytes([i]) * 1000) for i in range(3)]
        # the same IP, another port: permitted (permissions are per IP), no channel: Data
        p2t.sendto(b"from another port", tuple(relayed))
        data, _ = await asyncio.wait_for(cq.q.get(), 5)
        assert astun.parse_message(data).attributes["DATA"] == b"from another port"
        # an address the client never named (127.0.0.2: loopback, another IP): nothing passes
        # either way, on the batched path too
        st, sq = await loop.create_datagram_endpoint(Queue, local_addr=("127.0.0.2", 0))
        transports.append(st)
        st.sendto(b"unasked", tuple(relayed))
        await asyncio.wait_for(_until(lambda: stats.refusals["peer-without-permission"] == 1), 5)
        m = astun.Message(message_method=astun.Method.SEND, message_class=astun.Class.INDICATION)
        m.attributes.update({"XOR-PEER-ADDRESS": st.get_extra_info("sockname"), "DATA": b"x"})
        ct.sendto(bytes(m), server)
        await asyncio.wait_for(_until(lambda: stats.refusals["send-without-permission"] == 1), 5)
        assert sq.q.empty() and cq.q.empty()
        # a channel that is not bound: refused, counted
        ct.sendto(codec.channel_data(0x4001, b"nobody"), server)
        await asyncio.wait_for(_until(lambda: stats.refusals["unknown-channel"] == 1), 5)
        # Send indications, with a FINGERPRINT and without; a bad one is garbage
        send = codec.message_type(codec.METHOD_SEND, codec.CLASS_INDICATION)

        def indication(data: bytes, fingerprint: bool = True) -> bytes:
            txid = codec.new_transaction_id()
            return codec.build(send, txid, [
                (codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(peer, txid)),
                (codec.ATTR_DATA, data)], fingerprint=fingerprint)
        for fp in (True, False):
            ct.sendto(indication(b"send %d" % fp, fp), server)
            data, _ = await asyncio.wait_for(pq.q.get(), 5)
            assert data == b"send %d" % fp
        bad = bytearray(indication(b"bad"))
        bad[-1] ^= 1
        ct.sendto(bytes(bad), server)
        await asyncio.wait_for(_until(lambda: stats.refusals["garbage"] == 1), 5)
        # 8,029 bytes relayed: of ten more 1,000-byte datagrams, the first fits the limit
        assert s.core.allocations[1].bytes == 8000 + len(b"from another port") + 12
        for _ in range(10):
            ct.sendto(codec.channel_data(0x4000, b"L" * 1000), server)
        await asyncio.wait_for(_until(lambda: stats.refusals["byte-limit"] == 9), 5)
        data, _ = await asyncio.wait_for(pq.q.get(), 5)
        assert data == b"L" * 1000 and pq.q.empty()
        assert s.core.allocations[1].bytes <= limit
        # the allocation deleted: its channel is gone from the fast path at once
        resp = await client.request(astun.Method.REFRESH, {"LIFETIME": 0})
        assert resp.message_class == astun.Class.RESPONSE and not s.relayed
        ct.sendto(codec.channel_data(0x4000, b"late"), server)
        await asyncio.wait_for(_until(lambda: stats.refusals["no-allocation"] == 1), 5)
        assert pq.q.empty()
    finally:
        for t in transports:
            t.close()
        s.close()
