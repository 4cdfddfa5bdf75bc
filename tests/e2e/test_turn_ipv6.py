"""TURN over IPv6 (RFC 8656 with RFC 6156): `p2prtc relay --use-ipv6` serves TURN on its IPv6
STUN socket too and relays from IPv6 sockets when a client asks for REQUESTED-ADDRESS-FAMILY IPv6.
Clients: our codec (IPv6 relayed addresses), aioice (an IPv4 relayed address reached over IPv6,
UDP and TCP) and coturn's `turnutils_uclient -x` (an IPv6 relayed address; Send indications,
its channel numbers are RFC 5766's 0x4000-0x7FFF, which RFC 8656 12 narrowed to 0x4FFF; it asks
for EVEN-PORT in about half of its runs).

The IPv6 addresses are documentation ones (2001:db8::/32) added to the veth of the namespace
`scripts/netns-run` makes for the test run, and removed after."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys

import pytest
from aioice.turn import create_turn_endpoint

from p2prtc.protocols.turn_credentials import credentials_for
from p2prtc.transports.webrtc_direct import stun as codec

from ..netns import lab_ip

SECRET = "turn-v6-secret"
REALM = "p2prtc.v6"
V6, PEER6 = "2001:db8::7", "2001:db8::8"  # RFC 3849 documentation addresses
PORTS = (41100, 41199)
VETH = "p2p-v0"  # scripts/netns-run's


@pytest.fixture
def ipv6():
    if VETH not in [name for _, name in socket.if_nameindex()]:
        pytest.fail("IPv6 TURN tests add addresses to the veth of scripts/netns-run's namespace: "
                    "run them through scripts/test", pytrace=False)
    for ip in (V6, PEER6):
        subprocess.run(["ip", "-6", "addr", "add", f"{ip}/64", "dev", VETH, "nodad"], check=True)
    try:
        yield
    finally:
        for ip in (V6, PEER6):
            subprocess.run(["ip", "-6", "addr", "del", f"{ip}/64", "dev", VETH], check=False)


def free_port() -> int:
    """A port free for UDP and for TCP (TURN over TCP takes the STUN port when it can)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((lab_ip(), 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((lab_ip(), port))
                except OSError:
                    continue
                return port


class Relay:
    def __init__(self, udp: int, tcp: int) -> None:
        self.udp, self.tcp = udp, tcp


@pytest.fixture
async def relay(ipv6):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--listen-ip", lab_ip(), "--use-ipv6",
        "--port", "0", "--stun-port", str(port), "--turn-secret", SECRET, "--turn-realm", REALM,
        "--turn-min-port", str(PORTS[0]), "--turn-max-port", str(PORTS[1]), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            if not line:
                raise AssertionError((await proc.stderr.read()).decode())
            event = json.loads(line)
            if event["event"] == "turn":
                break
        assert f"turn:[{V6}]:{port}?transport=udp" in event["urls"]
        # TCP takes the same port unless something took it meanwhile (then a free one)
        tcp = [int(m[1]) for u in event["urls"]
               if (m := re.fullmatch(rf"turn:\[{V6}\]:(\d+)\?transport=tcp", u))]
        assert len(tcp) == 1, event["urls"]
        yield Relay(port, tcp[0])
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.q.put_nowait((data, addr))


async def endpoint(host: str) -> tuple[asyncio.DatagramTransport, Inbox]:
    return await asyncio.get_running_loop().create_datagram_endpoint(  # type: ignore[return-value]
        Inbox, local_addr=(host, 0))


class Client:
    """A TURN client over IPv6 UDP, with our codec (aioice cannot ask for a family)."""

    def __init__(self, t: asyncio.DatagramTransport, inbox: Inbox, server: tuple[str, int]):
        self.t, self.inbox, self.server = t, inbox, server
        c = credentials_for(SECRET, "12D3KooWIPv6", ["turn:x"])
        self.user, self.password = c.username, c.password
        self.realm = self.nonce = self.key = None

    async def request(self, method: int, attrs: list) -> tuple[bytes, codec.StunMessage]:
        for _ in range(2):
            auth = [] if self.key is None else [
                (codec.ATTR_USERNAME, self.user.encode()), (codec.ATTR_REALM, self.realm),
                (codec.ATTR_NONCE, self.nonce)]
            txid = codec.new_transaction_id()
            self.t.sendto(codec.build(codec.message_type(method, codec.CLASS_REQUEST), txid,
                                      [(t, v(txid) if callable(v) else v) for t, v in attrs]
                                      + auth, integrity_key=self.key), self.server)
            data, _ = await asyncio.wait_for(self.inbox.q.get(), 5)
            resp = codec.parse(data, codec.MAX_TURN_MESSAGE_SIZE)
            if resp.error_code() == 401 and self.key is None:
                self.realm, self.nonce = resp.attrs[codec.ATTR_REALM], resp.attrs[codec.ATTR_NONCE]
                self.key = codec.long_term_key(self.user, self.realm.decode(), self.password)
                continue
            return data, resp
        raise AssertionError("401 twice")


def peer_attr(addr: tuple[str, int]):
    return codec.ATTR_XOR_PEER_ADDRESS, lambda txid: codec.xor_address_value(addr, txid)


UDP = (codec.ATTR_REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
FAMILY6 = (codec.ATTR_REQUESTED_ADDRESS_FAMILY, bytes([codec.FAMILY_IPV6, 0, 0, 0]))


async def test_ipv6_relayed_address_channels_and_indications(relay):
    ct, inbox = await endpoint(V6)
    pt, peer = await endpoint(PEER6)
    p4t, peer4 = await endpoint(lab_ip())
    try:
        c = Client(ct, inbox, (V6, relay.udp))
        data, resp = await c.request(codec.METHOD_ALLOCATE, [UDP, FAMILY6])
        assert codec.class_of(resp.msg_type) == codec.CLASS_SUCCESS, resp.error_code()
        assert codec.verify_integrity(data, resp, c.key)
        [relayed] = codec.xor_addresses(resp, codec.ATTR_XOR_RELAYED_ADDRESS)
        assert relayed[0] == V6 and PORTS[0] <= relayed[1] <= PORTS[1]
        assert resp.xor_mapped_address() == ct.get_extra_info("sockname")[:2]
        # an IPv4 peer on this IPv6 allocation: 443 (RFC 8656 9.1)
        _, resp = await c.request(codec.METHOD_CREATE_PERMISSION,
                                  [peer_attr(p4t.get_extra_info("sockname"))])
        assert resp.error_code() == 443
        # a channel to an IPv6 peer: both ways
        peer_addr = pt.get_extra_info("sockname")[:2]
        _, resp = await c.request(codec.METHOD_CHANNEL_BIND, [
            (codec.ATTR_CHANNEL_NUMBER, b"\x40\x00\x00\x00"), peer_attr(peer_addr)])
        assert codec.class_of(resp.msg_type) == codec.CLASS_SUCCESS, resp.error_code()
        for i in range(10):
            ct.sendto(codec.channel_data(0x4000, b"up %d" % i), (V6, relay.udp))
        for i in range(10):
            data, src = await asyncio.wait_for(peer.q.get(), 5)
            assert data == b"up %d" % i and src[:2] == relayed
        for i in range(10):
            pt.sendto(b"down %d" % i, relayed)
        for i in range(10):
            data, _ = await asyncio.wait_for(inbox.q.get(), 5)
            assert data == codec.channel_data(0x4000, b"down %d" % i)
        # another port of the peer's IP, no channel: Send and Data indications
        pt2, peer2 = await endpoint(PEER6)
        try:
            other = pt2.get_extra_info("sockname")[:2]
            txid = codec.new_transaction_id()
            ct.sendto(codec.build(codec.message_type(codec.METHOD_SEND, codec.CLASS_INDICATION),
                                  txid, [(codec.ATTR_XOR_PEER_ADDRESS,
                                          codec.xor_address_value(other, txid)),
                                         (codec.ATTR_DATA, b"send")]), (V6, relay.udp))
            data, src = await asyncio.wait_for(peer2.q.get(), 5)
            assert data == b"send" and src[:2] == relayed
            pt2.sendto(b"data", relayed)
            data, _ = await asyncio.wait_for(inbox.q.get(), 5)
            msg = codec.parse(data, codec.MAX_TURN_MESSAGE_SIZE)
            assert codec.xor_addresses(msg, codec.ATTR_XOR_PEER_ADDRESS) == [other]
            assert msg.attrs[codec.ATTR_DATA] == b"data"
        finally:
            pt2.close()
        _, resp = await c.request(codec.METHOD_REFRESH, [(codec.ATTR_LIFETIME, bytes(4))])
        assert codec.class_of(resp.msg_type) == codec.CLASS_SUCCESS
    finally:
        for t in (ct, pt, p4t):
            t.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_reaches_turn_over_ipv6(relay, transport):
    """aioice asks for no family: an IPv4 relayed address, reached over IPv6."""
    c = credentials_for(SECRET, "12D3KooWAioice", ["turn:x"])
    server = (V6, relay.udp if transport == "udp" else relay.tcp)
    turn, client = await asyncio.wait_for(create_turn_endpoint(
        Inbox, server, c.username, c.password, transport=transport), 10)
    pt, peer = await endpoint(lab_ip())
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == lab_ip()
        peer_addr = pt.get_extra_info("sockname")
        for i in range(5):
            turn.sendto(b"%d" % i, peer_addr)
        got = [(await asyncio.wait_for(peer.q.get(), 5))[0] for _ in range(5)]
        assert got == [b"%d" % i for i in range(5)]
        pt.sendto(b"back", relayed)
        assert (await asyncio.wait_for(client.q.get(), 5))[0] == b"back"
    finally:
        turn.close()
        pt.close()


def udp6_bound(port: int) -> bool:
    with open("/proc/net/udp6") as f:
        return any(line.split()[1].endswith(f":{port:04X}") for line in list(f)[1:])


async def test_coturn_uclient_over_ipv6(relay):
    """coturn's client, an IPv6 relayed address (-x) to coturn's echoing peer on IPv6."""
    if shutil.which("turnutils_uclient") is None:
        pytest.fail("coturn's turnutils_uclient is missing (scripts/setup --test installs coturn)")
    peer_port = 3480
    peer = await asyncio.create_subprocess_exec(
        "turnutils_peer", "-L", PEER6, "-p", str(peer_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(500):  # until the peer's socket is bound
            if udp6_bound(peer_port):
                break
            await asyncio.sleep(0.01)
        user = credentials_for(SECRET, "12D3KooWUclient", ["turn:x"]).username.split(":", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            "turnutils_uclient", "-s", "-x", "-e", PEER6, "-r", str(peer_port), "-W", SECRET,
            "-u", user, "-n", "20", "-l", "200", "-m", "1", "-c", "-p", str(relay.udp), V6,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        assert "tot_send_msgs=20, tot_recv_msgs=20" in out, out
        assert "Total lost packets 0 " in out, out
    finally:
        peer.terminate()
        await peer.wait()
