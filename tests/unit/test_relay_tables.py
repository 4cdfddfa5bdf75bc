"""Relay bookkeeping without sockets: rate limiters, reservation and circuit tables, metrics text,
signed envelopes, vouchers and hop/stop message parsing."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.envelope import Envelope
from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.pb import circuit_pb2
from p2prtc.protocols import relay_hop as hop
from p2prtc.relay.limits import RateLimit, RateLimiter, RelayLimits
from p2prtc.relay.metrics import RelayMetrics
from p2prtc.relay.server import CircuitTable, ReservationTable

ALICE, BOB, CAROL = (Identity.from_seed(i) for i in (1, 2, 3))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


_conn_ids = itertools.count(1)


class FakeConn:
    """What the tables read from a Connection: id, remote_peer, is_closed."""

    def __init__(self, peer) -> None:
        self.id = next(_conn_ids)
        self.remote_peer = peer
        self.is_closed = False


# -- RateLimiter ---------------------------------------------------------------------------------


def test_rate_limiter_burst_then_refused():
    clock = FakeClock()
    rl = RateLimiter(RateLimit(3, 3.0), clock)
    assert [rl.try_acquire("a") for _ in range(4)] == [True, True, True, False]
    assert rl.try_acquire("b")  # other keys have their own bucket


def test_rate_limiter_refills_evenly():
    clock = FakeClock()
    rl = RateLimiter(RateLimit(3, 3.0), clock)  # one token per second
    for _ in range(3):
        assert rl.try_acquire("a")
    assert not rl.try_acquire("a")
    clock.t += 0.5
    assert not rl.try_acquire("a")  # half a token
    clock.t += 0.5
    assert rl.try_acquire("a")  # one whole token
    assert not rl.try_acquire("a")
    clock.t += 100  # never more than the burst
    assert [rl.try_acquire("a") for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_refused_attempts_do_not_cost_tokens():
    clock = FakeClock()
    rl = RateLimiter(RateLimit(1, 10.0), clock)
    assert rl.try_acquire("a")
    for _ in range(50):
        clock.t += 0.1
        assert not rl.try_acquire("a")
    clock.t += 5.0  # 10 s since the first: a full token has accrued despite the retries
    assert rl.try_acquire("a")


def test_rate_limiter_forgets_full_buckets():
    clock = FakeClock()
    rl = RateLimiter(RateLimit(2, 1.0), clock)
    for i in range(100):
        rl.try_acquire(f"k{i}")
    clock.t += 1.0  # every bucket is full again
    rl.try_acquire("fresh")
    assert len(rl) == 1


def test_rate_limiter_key_count_is_bounded():
    clock = FakeClock()
    rl = RateLimiter(RateLimit(5, 3600.0), clock)
    rl.MAX_KEYS = 50
    for i in range(1000):  # all at the same instant: nothing refills, so only the cap prunes
        assert rl.try_acquire(("ip", i))
        assert len(rl) <= 50
    # The most recent key is still tracked.
    for _ in range(4):
        assert rl.try_acquire(("ip", 999))
    assert not rl.try_acquire(("ip", 999))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 2.0)), max_size=200))
def test_rate_limiter_never_exceeds_rate(events):
    # In any window, acquisitions for one key <= burst + window * rate.
    clock = FakeClock(0.0)
    limit = RateLimit(3, 2.0)
    rl = RateLimiter(limit, clock)
    granted: dict[int, list[float]] = {}
    for key, dt in events:
        clock.t += dt
        if rl.try_acquire(key):
            granted.setdefault(key, []).append(clock.t)
    for times in granted.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                window = times[j] - start
                assert j - i + 1 <= limit.limit + window * limit.limit / limit.period + 1e-9


# -- ReservationTable ----------------------------------------------------------------------------


def test_reservation_per_peer_cap():
    t = ReservationTable(RelayLimits(max_reservations_per_peer=2))
    conns = [FakeConn(ALICE.peer_id) for _ in range(3)]
    assert t.admit(ALICE.peer_id, conns[0], 100) is None
    assert t.admit(ALICE.peer_id, conns[1], 100) is None
    assert t.admit(ALICE.peer_id, conns[2], 100) == "too many reservations for this peer"
    assert len(t) == 2
    assert t.admit(BOB.peer_id, FakeConn(BOB.peer_id), 100) is None  # others unaffected


def test_reservation_global_cap():
    t = ReservationTable(RelayLimits(max_reservations=2))
    a, b, c = FakeConn(ALICE.peer_id), FakeConn(BOB.peer_id), FakeConn(CAROL.peer_id)
    assert t.admit(ALICE.peer_id, a, 100) is None
    assert t.admit(BOB.peer_id, b, 100) is None
    assert t.admit(CAROL.peer_id, c, 100) == "too many reservations"
    # A renewal on an existing connection is not a new reservation: allowed at the cap.
    assert t.admit(ALICE.peer_id, a, 200) is None
    assert len(t) == 2
    # Once one goes away there is room again.
    assert t.remove_connection(b)
    assert t.admit(CAROL.peer_id, c, 100) is None


def test_reservation_renewal_on_same_connection_extends_it():
    t = ReservationTable(RelayLimits(max_reservations_per_peer=1))
    conn = FakeConn(ALICE.peer_id)
    assert t.admit(ALICE.peer_id, conn, 100) is None
    assert t.admit(ALICE.peer_id, conn, 300) is None
    assert len(t) == 1
    assert t.connection_for(ALICE.peer_id, 200) is conn  # would have expired at 100
    assert t.connection_for(ALICE.peer_id, 300) is None


def test_reservation_expiry():
    t = ReservationTable(RelayLimits())
    a, b = FakeConn(ALICE.peer_id), FakeConn(BOB.peer_id)
    t.admit(ALICE.peer_id, a, 100)
    t.admit(BOB.peer_id, b, 200)
    assert t.connection_for(ALICE.peer_id, 99.9) is a
    assert t.connection_for(ALICE.peer_id, 100) is None  # expired at its expiry time
    assert t.expire(150) == 1
    assert len(t) == 1
    assert t.connection_for(BOB.peer_id, 150) is b
    assert t.expire(250) == 1
    assert len(t) == 0
    assert t.peers_tracked == 0  # nothing left behind per peer


def test_reservation_removal_on_close():
    t = ReservationTable(RelayLimits())
    a1, a2 = FakeConn(ALICE.peer_id), FakeConn(ALICE.peer_id)
    t.admit(ALICE.peer_id, a1, 100)
    t.admit(ALICE.peer_id, a2, 100)
    assert t.connection_for(ALICE.peer_id, 0) is a2  # the newest
    a2.is_closed = True
    assert t.connection_for(ALICE.peer_id, 0) is a1  # a closed one is never used
    assert t.remove_connection(a2)
    assert not t.remove_connection(a2)
    assert not t.remove_connection(FakeConn(BOB.peer_id))
    a1.is_closed = True
    assert t.connection_for(ALICE.peer_id, 0) is None
    assert t.remove_connection(a1)  # the service calls this on every disconnection
    assert len(t) == 0
    assert t.expire(10**6) == 0  # their heap entries are stale and skipped


def test_reservation_is_keyed_by_the_given_peer_only():
    t = ReservationTable(RelayLimits())
    conn = FakeConn(ALICE.peer_id)
    t.admit(ALICE.peer_id, conn, 100)
    assert t.connection_for(BOB.peer_id, 0) is None


# -- CircuitTable --------------------------------------------------------------------------------


def test_circuit_global_cap():
    t = CircuitTable(RelayLimits(max_circuits=2, max_circuits_per_peer=10))
    c1 = t.admit(ALICE.peer_id, BOB.peer_id)
    c2 = t.admit(ALICE.peer_id, BOB.peer_id)
    assert c1 is not None and c2 is not None and c1 is not c2
    assert t.admit(CAROL.peer_id, BOB.peer_id) is None
    t.remove(c1)
    assert len(t) == 1
    assert t.admit(CAROL.peer_id, BOB.peer_id) is not None


def test_circuit_per_peer_cap_counts_both_ends():
    t = CircuitTable(RelayLimits(max_circuits=100, max_circuits_per_peer=2))
    c1 = t.admit(ALICE.peer_id, BOB.peer_id)
    c2 = t.admit(CAROL.peer_id, BOB.peer_id)
    assert c1 and c2
    assert t.admit(ALICE.peer_id, BOB.peer_id) is None  # BOB is at 2 as a destination
    assert t.admit(BOB.peer_id, ALICE.peer_id) is None  # and as a source
    assert t.admit(ALICE.peer_id, CAROL.peer_id) is not None  # ALICE 2, CAROL 2
    assert t.admit(ALICE.peer_id, CAROL.peer_id) is None
    t.remove(c2)
    t.remove(c2)  # twice is harmless
    assert t.admit(CAROL.peer_id, BOB.peer_id) is not None


def test_circuit_table_forgets_peers():
    t = CircuitTable(RelayLimits())
    cs = [t.admit(ALICE.peer_id, BOB.peer_id) for _ in range(3)]
    for c in cs:
        t.remove(c)
    assert len(t) == 0 and t.peers_tracked == 0


# -- metrics -------------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r' (?P<value>-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$'
)


def parse_prometheus(text: str) -> dict[str, dict]:
    """A strict reader of the text exposition format 0.0.4 for what we emit."""
    assert text.endswith("\n")
    metrics: dict[str, dict] = {}
    current = None
    for line in text[:-1].split("\n"):
        assert line, "empty line in exposition"
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in metrics, f"{name} described twice"
            metrics[name] = {"help": line.split(" ", 3)[3], "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current, "TYPE must follow its HELP"
            assert kind in ("counter", "gauge")
            metrics[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            name = m["name"]
            assert name == current, f"sample {name} outside its group"
            labels = m["labels"] or ""
            assert labels not in metrics[name]["samples"], f"duplicate sample {line!r}"
            metrics[name]["samples"][labels] = float(m["value"])
    for name, m in metrics.items():
        assert m["type"] is not None
        if m["type"] == "counter":
            assert name.endswith("_total")
        assert m["samples"]
    return metrics


def test_metrics_render_empty():
    m = parse_prometheus(RelayMetrics().render())
    assert m["p2prtc_relay_reservations_active"]["samples"] == {"": 0}
    assert m["p2prtc_relay_refusals_total"]["samples"] == {'reason="none"': 0}
    assert m["p2prtc_relay_bytes_relayed_total"]["type"] == "counter"
    assert m["p2prtc_relay_circuits_active"]["type"] == "gauge"


def test_metrics_render_values_and_refusals():
    metrics = RelayMetrics(reservations_active=3, reservations_total=7, circuits_active=1,
                           circuits_total=9, bytes_relayed=123456, connections_active=4)
    metrics.refuse("too many circuits")
    metrics.refuse("too many circuits")
    metrics.refuse("reservation rate limit")
    m = parse_prometheus(metrics.render())
    assert m["p2prtc_relay_reservations_total"]["samples"] == {"": 7}
    assert m["p2prtc_relay_bytes_relayed_total"]["samples"] == {"": 123456}
    assert m["p2prtc_relay_connections_active"]["samples"] == {"": 4}
    assert m["p2prtc_relay_refusals_total"]["samples"] == {
        'reason="reservation rate limit"': 1, 'reason="too many circuits"': 2}


def test_metrics_label_values_are_escaped():
    metrics = RelayMetrics()
    metrics.refuse('odd "reason"\\ with\nnewline')
    parse_prometheus(metrics.render())


# -- signed envelopes and vouchers ---------------------------------------------------------------


def test_envelope_seal_open():
    data = Envelope.seal(ALICE, "test-domain", b"\x03\x02", b"payload bytes")
    env = Envelope.open(data, "test-domain")
    assert env.payload == b"payload bytes"
    assert env.payload_type == b"\x03\x02"  # as go and js write the voucher codec
    assert env.public_key == ALICE.public_key


def test_envelope_wrong_domain():
    data = Envelope.seal(ALICE, "test-domain", b"\x03\x02", b"payload")
    with pytest.raises(ProtocolError, match="signature"):
        Envelope.open(data, "other-domain")


@pytest.mark.parametrize("field", ["payload", "payload_type", "signature", "public_key"])
def test_envelope_tamper_detection(field):
    from p2prtc.pb import envelope_pb2

    msg = envelope_pb2.Envelope()
    msg.ParseFromString(Envelope.seal(ALICE, "d", b"\x03\x02", b"payload"))
    if field == "public_key":
        msg.public_key = BOB.public_key.to_protobuf()  # someone else's key, same signature
    else:
        value = bytearray(getattr(msg, field))
        value[-1] ^= 1
        setattr(msg, field, bytes(value))
    with pytest.raises(ProtocolError):
        Envelope.open(msg.SerializeToString(), "d")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_envelope_garbage_only_raises_protocol_error(data):
    try:
        Envelope.open(data, "libp2p-relay-rsvp")
    except ProtocolError:
        pass


def test_voucher_round_trip():
    data = hop.make_voucher(ALICE, BOB.peer_id, 1_700_000_000)
    v = hop.open_voucher(data)
    assert v.relay == ALICE.peer_id.to_bytes()
    assert v.peer == BOB.peer_id.to_bytes()
    assert v.expiration == 1_700_000_000
    env = Envelope.open(data, hop.VOUCHER_DOMAIN)
    assert env.public_key == ALICE.public_key


def test_voucher_with_another_domain_is_refused():
    payload = circuit_pb2.ReservationVoucher(
        relay=ALICE.peer_id.to_bytes(), peer=BOB.peer_id.to_bytes(), expiration=1
    ).SerializeToString()
    data = Envelope.seal(ALICE, "libp2p-peer-record", hop.VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(ProtocolError):
        hop.open_voucher(data)


def test_voucher_signed_by_another_key_is_refused():
    # BOB signs a voucher that claims ALICE is the relay: the signature is valid, the claim not.
    payload = circuit_pb2.ReservationVoucher(
        relay=ALICE.peer_id.to_bytes(), peer=CAROL.peer_id.to_bytes(), expiration=1
    ).SerializeToString()
    data = Envelope.seal(BOB, hop.VOUCHER_DOMAIN, hop.VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(ProtocolError, match="not signed by the relay"):
        hop.open_voucher(data)


def test_voucher_with_another_payload_type_is_refused():
    payload = circuit_pb2.ReservationVoucher(
        relay=ALICE.peer_id.to_bytes(), peer=BOB.peer_id.to_bytes(), expiration=1
    ).SerializeToString()
    data = Envelope.seal(ALICE, hop.VOUCHER_DOMAIN, b"\x03\x01", payload)  # 0x0301: a peer record
    with pytest.raises(hop.MalformedMessage, match="payload type"):
        hop.open_voucher(data)


def test_voucher_payload_missing_fields():
    payload = circuit_pb2.ReservationVoucher(
        relay=ALICE.peer_id.to_bytes()).SerializePartialToString()
    data = Envelope.seal(ALICE, hop.VOUCHER_DOMAIN, hop.VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(hop.MalformedMessage):
        hop.open_voucher(data)


# -- hop / stop messages -------------------------------------------------------------------------


def test_parse_hop_message_round_trip():
    msg = hop.HopMessage(type=hop.HopMessage.CONNECT)
    msg.peer.id = BOB.peer_id.to_bytes()
    parsed = hop.parse_message(msg.SerializeToString(), hop.HopMessage)
    assert parsed.type == hop.HopMessage.CONNECT
    assert hop.peer_of(parsed) == BOB.peer_id


@pytest.mark.parametrize("cls", [hop.HopMessage, hop.StopMessage])
def test_parse_message_missing_type(cls):
    with pytest.raises(hop.MalformedMessage, match="required"):
        hop.parse_message(b"", cls)
    with pytest.raises(hop.MalformedMessage, match="required"):
        hop.parse_message(cls(status=hop.OK).SerializePartialToString(), cls)


def test_parse_message_missing_nested_required_fields():
    msg = hop.HopMessage(type=hop.HopMessage.STATUS, status=hop.OK)
    msg.reservation.addrs.append(b"x")  # Reservation without its required `expire`
    with pytest.raises(hop.MalformedMessage):
        hop.parse_message(msg.SerializePartialToString(), hop.HopMessage)
    msg = hop.HopMessage(type=hop.HopMessage.CONNECT)
    msg.peer.addrs.append(b"x")  # Peer without its required `id`
    with pytest.raises(hop.MalformedMessage):
        hop.parse_message(msg.SerializePartialToString(), hop.HopMessage)


def test_parse_message_not_protobuf():
    with pytest.raises(hop.MalformedMessage):
        hop.parse_message(b"\xff\xff\xff\xff", hop.HopMessage)


def test_peer_of_requires_a_valid_peer():
    msg = hop.HopMessage(type=hop.HopMessage.CONNECT)
    with pytest.raises(hop.MalformedMessage, match="no peer"):
        hop.peer_of(msg)
    msg.peer.id = b"not a multihash"
    with pytest.raises(hop.MalformedMessage, match="bad peer id"):
        hop.peer_of(msg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.sampled_from([hop.HopMessage, hop.StopMessage]))
def test_parse_message_garbage_only_raises_malformed(data, cls):
    try:
        msg = hop.parse_message(data, cls)
    except hop.MalformedMessage:
        return
    try:
        hop.peer_of(msg)
    except hop.MalformedMessage:
        pass


def test_status_names():
    assert hop.status_name(hop.NO_RESERVATION) == "NO_RESERVATION"
    assert hop.status_name(999) == "status 999"
