"""relay/turn.py, the sans-I/O TURN server: sequences of client datagrams (garbage, and requests
signed with valid long-term REST credentials and the server's nonce, so the fuzzer's attributes
reach Allocate/Refresh/CreatePermission/ChannelBind), Send indications, ChannelData, datagrams
from peers, time passing and TCP clients leaving.

Input: records `op, len, bytes`. Contract: nothing raises; everything sent to a client parses as
STUN or ChannelData; no datagram goes to or comes from a peer the client did not permit (no
open relay), and no route the core hands the batched data path does either; the allocation
gauge matches the allocations held. Requests are signed with MESSAGE-INTEGRITY or -SHA256.
"""

import struct

from p2prtc.relay import turn
from p2prtc.transports.webrtc_direct import stun as codec

SECRET = "fuzz-secret"
NOW = 1_800_000_000.0
CLIENTS = [turn.FiveTuple("udp", ("198.51.100.9", 40000), ("198.51.100.7", 3478)),
           turn.FiveTuple("tcp", ("198.51.100.10", 40001), ("198.51.100.7", 3478))]
PEERS = [("203.0.113.5", 7000), ("203.0.113.6", 7001), ("198.51.100.9", 40000),
         ("2001:db8::5", 7002)]
RELAYED = ("198.51.100.7", 50000)
RELAYED6 = ("2001:db8::7", 50002)
METHODS = [codec.METHOD_ALLOCATE, codec.METHOD_REFRESH, codec.METHOD_CREATE_PERMISSION,
           codec.METHOD_CHANNEL_BIND]
USER = turn.rest_username("12D3KooWPeer", int(NOW) + 3600)
PASSWORD = turn.rest_password(SECRET, USER)


def _attrs(raw: bytes) -> list[tuple[int, bytes]]:
    """The fuzzer's attributes: (type: 2 bytes, length: 1 byte, value)."""
    out, pos = [], 0
    while pos + 3 <= len(raw) and len(out) < 12:
        t, n = struct.unpack_from(">HB", raw, pos)
        out.append((t, raw[pos + 3:pos + 3 + n]))
        pos += 3 + n
    return out


class Session:
    def __init__(self) -> None:
        # both families (RFC 6156): REQUESTED-ADDRESS-FAMILY, IPv6 peers and relayed addresses
        self.server = turn.TurnServer(SECRET, families=frozenset({4, 6}))
        self.now = NOW
        self.nonce: dict[turn.FiveTuple, bytes] = {}
        self.sent_to_peers = 0

    def feed(self, actions) -> None:
        for a in actions:
            if isinstance(a, turn.OpenRelay):
                if a.allocation % 5 == 4:
                    self.feed(self.server.relay_failed(a.allocation, self.now))
                else:
                    self.feed(self.server.relay_opened(
                        a.allocation, RELAYED6 if a.family == 6 else RELAYED, self.now))
            elif isinstance(a, turn.ToClient):
                assert a.five in CLIENTS
                if codec.looks_like_channel_data(a.data):
                    codec.parse_channel_data(a.data)
                else:
                    msg = codec.parse(a.data, codec.MAX_TURN_MESSAGE_SIZE)
                    nonce = msg.attrs.get(codec.ATTR_NONCE)
                    if nonce is not None:
                        self.nonce[a.five] = nonce
            elif isinstance(a, turn.ToPeer):
                alloc = self.server.allocations.get(a.allocation)
                assert alloc is not None, "datagram for a peer from no allocation"
                exp = alloc.permissions.get(a.peer[0])
                assert exp is not None and exp > self.now, f"open relay: {a.peer} not permitted"
                self.sent_to_peers += 1

    def request(self, five, method: int, attrs, signed: bool, sha256: bool = False,
                wrong_key: bool = False) -> None:
        if signed and five not in self.nonce:  # get challenged first, as a client does
            self.feed(self.server.client_datagram(codec.build(
                codec.message_type(codec.METHOD_ALLOCATE, codec.CLASS_REQUEST), b"c" * 12, []),
                five, self.now))
        key = None
        if signed and five in self.nonce:
            attrs = attrs + [(codec.ATTR_USERNAME, USER.encode()),
                             (codec.ATTR_REALM, turn.DEFAULT_REALM.encode()),
                             (codec.ATTR_NONCE, self.nonce[five])]
            key = codec.long_term_key(USER, turn.DEFAULT_REALM,
                                      PASSWORD + "x" if wrong_key else PASSWORD)
        txid = bytes([len(attrs)]) * 12
        try:
            data = codec.build(codec.message_type(method, codec.CLASS_REQUEST), txid, attrs,
                               integrity_key=None if sha256 else key,
                               integrity_sha256_key=key if sha256 else None)
        except struct.error:
            return  # an attribute too long for our own builder (> 64 KiB): not a wire message
        self.feed(self.server.client_datagram(data, five, self.now))


def test_one(data: bytes) -> None:
    s = Session()
    pos = 0
    while pos + 2 <= len(data):
        op, n = data[pos], data[pos + 1]
        body = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        five = CLIENTS[(op >> 7) & 1]
        kind = op & 0x0F
        if kind == 0:
            s.feed(s.server.client_datagram(body, five, s.now))
        elif kind <= 4:
            attrs = _attrs(body)
            if kind == 1 and op & 0x40:
                attrs = [(codec.ATTR_REQUESTED_TRANSPORT, b"\x11\x00\x00\x00")] + attrs
            s.request(five, METHODS[kind - 1], attrs, signed=not op & 0x20, sha256=bool(op & 0x10),
                      wrong_key=kind != 1 and bool(op & 0x40))
        elif kind == 5:
            peer = PEERS[op >> 5 & 3]
            txid = b"s" * 12
            attrs = [(codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(peer, txid)),
                     (codec.ATTR_DATA, body)] if op & 0x10 else _attrs(body)
            s.feed(s.server.client_datagram(codec.build(codec.message_type(
                codec.METHOD_SEND, codec.CLASS_INDICATION), txid, attrs), five, s.now))
        elif kind == 6:
            channel = 0x4000 + (body[0] if body else 0)
            s.feed(s.server.client_datagram(codec.channel_data(channel, body[1:],
                                                               pad=five.transport == "tcp"),
                                            five, s.now))
        elif kind == 7:
            for aid in list(s.server.allocations)[:2]:
                s.feed(s.server.peer_datagram(aid, body, PEERS[op >> 5 & 3], s.now))
        elif kind == 8:
            s.now += (body[0] if body else 1) * 10
            s.feed(s.server.expire(s.now))
        elif kind == 9:
            s.feed(s.server.client_closed(CLIENTS[1]))
        _check(s)


def _check(s: Session) -> None:
    server = s.server
    assert server.stats.allocations_active == len(server.allocations)
    assert {a.id for a in server.by_five.values()} <= set(server.allocations)
    for a in server.allocations.values():
        assert len(a.permissions) <= server.limits.max_permissions
        assert len(a.channels) <= server.limits.max_channels
        for peer, ch in a.channel_of.items():
            assert a.channels.get(ch, (None,))[0] == peer
        # the routes the batched data path takes (relay/turn_io.py) never pass a permission
        for ch in a.channels:
            route = server.channel_route(a.five, ch, s.now)
            if route is not None:
                assert a.permissions[route.peer[0]] >= route.until > s.now
                assert route.allocation is a and a.channels[ch][1] >= route.until
        for peer in list(a.channel_of) + PEERS:
            for route in (server.peer_route(a.id, peer, s.now),
                          server.send_route(a.five, peer, s.now)):
                if route is not None:
                    assert a.permissions[peer[0]] >= route.until > s.now


def seeds() -> list[bytes]:
    def rec(op, b=b""):
        return bytes([op, len(b)]) + b

    def attr(t, v):
        return struct.pack(">HB", t, len(v)) + v
    txid = bytes([3]) * 12  # matches the txid Session.request uses for 3 attributes + auth
    peer = attr(codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(PEERS[0], bytes([4]) * 12))
    peer6 = attr(codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(PEERS[3], bytes([4]) * 12))
    return [
        rec(0x41) + rec(0x03, peer) + rec(0x15, b"hello") + rec(0x07, b"from peer")
        + rec(0x04, attr(codec.ATTR_CHANNEL_NUMBER, b"\x40\x01\x00\x00") + peer)
        + rec(0x06, b"\x01data") + rec(0x02, attr(codec.ATTR_LIFETIME, b"\x00\x00\x00\x00")),
        rec(0xC1) + rec(0x83, peer) + rec(0x09) + rec(0x08, b"\x40") + rec(0x00, b"\x00\x01"),
        rec(0x61) + rec(0x41, attr(codec.ATTR_EVEN_PORT, b"\x80")) + rec(0x08, b"\xff"),
        rec(0x41, attr(codec.ATTR_LIFETIME, b"\x00\x00\x0e\x10")) + rec(0x06, b"\x05x"),
        rec(0x00, codec.build(codec.BINDING_REQUEST, txid, [])),
        # signed with MESSAGE-INTEGRITY-SHA256: allocate, permit, then a bad PASSWORD-ALGORITHM
        rec(0x51) + rec(0x13, peer) + rec(0x14, attr(codec.ATTR_CHANNEL_NUMBER,
                                                     b"\x40\x02\x00\x00") + peer)
        + rec(0x12, attr(codec.ATTR_PASSWORD_ALGORITHM, b"\x00\x02\x00\x00")),
        # IPv6 (RFC 6156): an IPv6 allocation, an IPv6 peer permitted, data both ways; an IPv4
        # peer on it (443), a dual-allocation request (ADDITIONAL-ADDRESS-FAMILY)
        rec(0x41, attr(codec.ATTR_REQUESTED_ADDRESS_FAMILY, b"\x02\x00\x00\x00"))
        + rec(0x03, peer6) + rec(0x75, b"v6 data") + rec(0x67, b"v6 back") + rec(0x03, peer)
        + rec(0x04, attr(codec.ATTR_CHANNEL_NUMBER, b"\x40\x03\x00\x00") + attr(
            codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(PEERS[3], bytes([5]) * 12)))
        + rec(0x06, b"\x03via channel"),
        rec(0xC1, attr(codec.ATTR_ADDITIONAL_ADDRESS_FAMILY, b"\x02\x00\x00\x00"))
        + rec(0x83, peer6)
        + rec(0x41, attr(codec.ATTR_REQUESTED_ADDRESS_FAMILY, b"\x03\x00\x00\x00")),
        # an allocation, then requests signed with a wrong password (M-I, then -SHA256): 401
        rec(0x41) + rec(0x43, peer) + rec(0x52),
    ]
