"""`/p2prtc/nat/1.0.0` between real Hosts over a relayed (limited) connection on loopback: the
dialer learns the listener's NAT behaviour and vice versa, a pair theory rules out is reported
at once naming both, and a peer that does not speak it or sends garbage costs nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from p2prtc.errors import ProtocolError
from p2prtc.events import NatPeerLearned
from p2prtc.host import Host
from p2prtc.nat import AD, APD, EI, UNKNOWN, NatBehaviour, NatDetector
from p2prtc.protocols import natinfo
from p2prtc.protocols.natinfo import NATINFO_PROTOCOL, NatInfoService
from p2prtc.relay.limits import RelayLimits
from p2prtc.relay.server import RelayService
from p2prtc.streams import read_length_prefixed, write_length_prefixed

T = 5.0
PORT_RESTRICTED = NatBehaviour(EI, APD, ("203.0.113.1", 4000), "203.0.113.10:3478")
SYMMETRIC = NatBehaviour(APD, APD, ("203.0.113.2", 5000), "203.0.113.10:3478")
RESTRICTED = NatBehaviour(EI, AD, ("203.0.113.2", 6000), "203.0.113.10:3478")


class Net:
    def __init__(self) -> None:
        self.hosts: list[Host] = []

    async def relay(self):
        h = Host()
        self.hosts.append(h)
        RelayService(h, RelayLimits())
        addrs = await h.listen("/ip4/127.0.0.1/tcp/0")
        return addrs[0].with_peer_id(h.peer_id)

    async def pair(self, a_nat: NatBehaviour | None, b_nat: NatBehaviour | None, *,
                   b_speaks: bool = True):
        """A listens via the relay, B dials it: (A's service, B's service, B's relayed conn)."""
        raddr = await self.relay()
        a, b = Host(), Host()
        self.hosts += [a, b]
        sa = NatInfoService(a)
        if a_nat is not None:
            sa.start(NatDetector.known(a_nat))
        sb = None
        if b_speaks:
            sb = NatInfoService(b)
            if b_nat is not None:
                sb.start(NatDetector.known(b_nat))
        await a.listen_via_relay(raddr, T)
        conn = await b.dial(raddr.encapsulate(f"/p2p-circuit/p2p/{a.peer_id}"))
        assert conn.limited
        return a, sa, b, sb, conn

    async def close(self) -> None:
        for h in reversed(self.hosts):
            await h.close()


@pytest.fixture
async def net():
    n = Net()
    yield n
    await n.close()


def test_encode_decode():
    assert natinfo.decode(natinfo.encode(RESTRICTED)) == RESTRICTED
    assert natinfo.decode(natinfo.encode(None)) is None
    assert natinfo.decode(natinfo.encode(NatBehaviour(UNKNOWN, UNKNOWN))) is None
    assert natinfo.decode(b'{"mapping": "bogus"}') is None
    for bad in (b"\xff", b"[1, 2]", b"not json", b'"str"'):
        with pytest.raises(ProtocolError):
            natinfo.decode(bad)


async def test_ruled_out_pair_is_reported_on_both_sides(net):
    a, sa, b, sb, conn = await net.pair(PORT_RESTRICTED, SYMMETRIC)
    learned = asyncio.ensure_future(a.events.wait_for(NatPeerLearned, timeout=T))
    t0 = time.monotonic()
    reason = await sb.check(conn)
    assert time.monotonic() - t0 < 1.0
    assert reason is not None and "no direct path possible" in reason
    assert SYMMETRIC.short() in reason and PORT_RESTRICTED.short() in reason
    assert reason.index(SYMMETRIC.short()) < reason.index(PORT_RESTRICTED.short())  # ours first
    assert sb.peers[a.peer_id] == PORT_RESTRICTED
    e = await learned
    peer, theirs, a_reason = e.peer, e.behaviour, e.ruled_out
    assert peer == b.peer_id and theirs == SYMMETRIC
    assert a_reason is not None and a_reason.index(PORT_RESTRICTED.short()) < a_reason.index(
        SYMMETRIC.short())
    assert sa.ruled_out(b.peer_id) == a_reason and sb.ruled_out(a.peer_id) == reason


async def test_compatible_pair_goes_ahead(net):
    a, sa, b, sb, conn = await net.pair(RESTRICTED, SYMMETRIC)
    assert await sb.check(conn) is None
    assert sb.peers[a.peer_id] == RESTRICTED
    await a.events.wait_for(NatPeerLearned, timeout=T)
    assert sa.peers[b.peer_id] == SYMMETRIC


async def test_unknown_side_never_rules_out(net):
    a, sa, b, sb, conn = await net.pair(PORT_RESTRICTED, NatBehaviour(UNKNOWN, UNKNOWN))
    assert await sb.check(conn) is None
    assert sb.peers[a.peer_id] == PORT_RESTRICTED  # we still learn theirs


async def test_peer_without_the_protocol_answers_fast(net):
    # B speaks it, A (like a js peer) does not: here A is the dialer.
    raddr = await net.relay()
    a, b = Host(), Host()
    net.hosts += [a, b]
    sb = NatInfoService(b)
    sb.start(NatDetector.known(SYMMETRIC))
    await b.listen_via_relay(raddr, T)
    conn = await a.dial(raddr.encapsulate(f"/p2p-circuit/p2p/{b.peer_id}"))
    t0 = time.monotonic()
    assert await natinfo.exchange(conn, PORT_RESTRICTED) == SYMMETRIC
    # ... and the other way round: B asks A, who has no handler.
    inbound = next(c for c in b.connections(a.peer_id) if not c.is_closed)
    assert await natinfo.exchange(inbound, SYMMETRIC) is None
    assert time.monotonic() - t0 < 1.0


async def test_garbage_from_the_peer_ends_only_that_stream(net, caplog):
    a, sa, b, sb, conn = await net.pair(PORT_RESTRICTED, SYMMETRIC)
    for payload in (b"\x00" * 10, b"{not json", b"x" * 3000):
        stream = await conn.new_stream([NATINFO_PROTOCOL])
        if len(payload) > natinfo.MAX_MESSAGE_SIZE:
            from p2prtc.wire.varint import encode_uvarint

            await stream.write(encode_uvarint(len(payload)) + payload[:100])
        else:
            await write_length_prefixed(stream, payload)
        # A answers with its own behaviour (written first), then drops the stream.
        got = await asyncio.wait_for(read_length_prefixed(stream, 4096), T)
        assert natinfo.decode(got) == PORT_RESTRICTED
        stream.reset()
    assert b.peer_id not in sa.peers
    # The connection and the protocol still work.
    assert await sb.check(conn) is not None


def test_could_be_ruled_out():
    from p2prtc.nat import could_be_ruled_out

    mapping_only_ei = NatBehaviour(EI, UNKNOWN)
    mapping_only_sym = NatBehaviour(APD, UNKNOWN)
    # Against a port-restricted peer only our mapping matters: known, so no need to wait.
    assert not could_be_ruled_out(mapping_only_ei, PORT_RESTRICTED)
    # Against a symmetric peer our filtering decides: wait for it.
    assert could_be_ruled_out(mapping_only_ei, SYMMETRIC)
    # Nothing known yet: anything with a dependent mapping or per-port filtering could say no.
    assert could_be_ruled_out(NatBehaviour(UNKNOWN, UNKNOWN), PORT_RESTRICTED)
    assert not could_be_ruled_out(NatBehaviour(UNKNOWN, UNKNOWN), NatBehaviour(EI, EI))
    assert not could_be_ruled_out(mapping_only_sym, RESTRICTED)


class SlowProbe:
    """A detection whose mapping part is known at once and whose filtering part ends only when
    the test says so (as a real one ends after its filtering probes' silence)."""

    def __init__(self, full: NatBehaviour) -> None:
        self.full = full
        self.release = asyncio.Event()

    async def __call__(self, host, port, *, on_mapping):
        on_mapping(NatBehaviour(self.full.mapping, UNKNOWN, self.full.public))
        await self.release.wait()
        return self.full


async def test_dialer_decides_on_its_mapping_before_its_filtering_is_known(net):
    # Listener port-restricted: the dialer's symmetric mapping alone rules the path out.
    probe = SlowProbe(SYMMETRIC)
    a, sa, b, sb, conn = await net.pair(PORT_RESTRICTED, None)
    sb.start(NatDetector(("stun.invalid", 3478), probe))
    learned = asyncio.ensure_future(a.events.wait_for(NatPeerLearned, timeout=T))
    reason = await asyncio.wait_for(sb.check(conn), T)
    assert reason is not None and "symmetric NAT" in reason
    assert not learned.done()  # the listener hears ours once our detection has ended
    probe.release.set()
    e = await learned
    theirs, a_reason = e.behaviour, e.ruled_out
    assert theirs == SYMMETRIC and a_reason is not None


async def test_dialer_waits_for_its_filtering_against_a_symmetric_peer(net):
    probe = SlowProbe(PORT_RESTRICTED)
    a, sa, b, sb, conn = await net.pair(SYMMETRIC, None)
    sb.start(NatDetector(("stun.invalid", 3478), probe))
    check = asyncio.ensure_future(sb.check(conn))
    done, _ = await asyncio.wait({check}, timeout=0.3)
    assert not done  # our mapping (endpoint-independent) does not settle it: filtering does
    probe.release.set()
    reason = await asyncio.wait_for(check, T)
    assert reason is not None and "port-restricted NAT" in reason and "symmetric NAT" in reason
