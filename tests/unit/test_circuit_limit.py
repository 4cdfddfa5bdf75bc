"""The relayed connection's limit accounting (transports/circuit_limit.py): which writes may still
go out under a relay's data/time limit, and why a relayed connection ended, in words."""

from __future__ import annotations

import pytest

from p2prtc.transports.circuit_limit import (
    CONTROL_RESERVE,
    DATA_END_SLACK,
    TIME_MARGIN,
    CircuitMeter,
    data_words,
    duration_words,
    limit_seconds,
)

KIB = 1024


def end(meter: CircuitMeter, now: float, *, relay_gone=False, peer_left=False,
        low="connection closed by remote") -> str:
    return meter.end_reason(low, now, relay_gone=relay_gone, peer_left=peer_left)


@pytest.mark.parametrize("n, words", [(128 * KIB, "128 KiB"), (64 * KIB, "64 KiB"),
                                      (1 << 20, "1 MiB"), (100_000, "100000-byte")])
def test_data_words(n, words):
    assert data_words(n) == words


@pytest.mark.parametrize("s, words", [(120, "2-minute"), (3600, "1-hour"), (5, "5-second"),
                                      (90, "90-second")])
def test_duration_words(s, words):
    assert duration_words(s) == words


def test_counts_both_directions_against_the_data_limit():
    m = CircuitMeter(0, 64 * KIB, started=0.0)
    m.on_sent(30 * KIB)
    m.on_received(30 * KIB)
    assert m.used == 60 * KIB
    assert m.refuse(1000, 1.0) is None
    # 60 KiB + 4000 + overhead passes 64 KiB minus the control reserve
    assert m.refuse(4000, 1.0) == ("the relay's 64 KiB data limit for this relayed connection "
                                   "is used up")
    assert not m.data_used_up()


def test_a_write_that_would_pass_the_limit_is_refused_and_nothing_counted():
    m = CircuitMeter(0, 64 * KIB, started=0.0)
    sent = 0
    while m.refuse(100, 0.0) is None:  # what a well-behaved sender does
        m.on_sent(m.cost(100))
        sent += 1
    assert m.used <= 64 * KIB - CONTROL_RESERVE
    assert m.data_used_up()
    assert sent > 300
    # both ends see about the same total once the sender stops: both call it the data limit
    receiver = CircuitMeter(0, 64 * KIB, started=0.0)
    receiver.on_received(m.used)
    assert end(receiver, 1.0, peer_left=True) == "the relay's 64 KiB data limit was reached"
    assert end(m, 1.0, low="closed locally") == "the relay's 64 KiB data limit was reached"


def test_room_is_what_a_write_may_still_use():
    m = CircuitMeter(0, 64 * KIB, started=0.0)
    assert CircuitMeter(120, 0, started=0.0).room() is None
    m.on_received(20 * KIB)
    room = m.room()
    assert m.refuse(room, 0.0) is None and m.refuse(room + 1, 0.0) is not None
    m.on_sent(room + 10 * KIB)
    assert m.room() == 0


def test_time_limit_stops_writes_before_the_relay_cuts():
    m = CircuitMeter(120, 0, started=100.0)
    assert m.refuse(10, 100.0 + 120 - TIME_MARGIN - 0.1) is None
    assert m.refuse(10, 100.0 + 120 - TIME_MARGIN) == (
        "the relay's 2-minute time limit for this relayed connection is reached")
    assert not m.data_used_up()  # a time limit never makes us end it ourselves


def test_end_reasons_in_words():
    m = CircuitMeter(120, 128 * KIB, started=0.0)
    m.on_sent(10 * KIB)
    assert end(m, 119.0) == "the relay's 2-minute time limit was reached"
    assert end(m, 30.0, relay_gone=True) == "the relay went away"
    assert end(m, 30.0, peer_left=True) == "the peer left"
    assert end(m, 30.0, low="connection lost: stream 8 reset by remote") == \
        "connection lost: stream 8 reset by remote"
    m.on_received(128 * KIB - DATA_END_SLACK)  # rust stops at a chunk boundary
    assert end(m, 30.0) == "the relay's 128 KiB data limit was reached"
    # the relay going away at the same time as a limit: the limit explains it
    assert end(m, 30.0, relay_gone=True) == "the relay's 128 KiB data limit was reached"


def test_unlimited_circuit_refuses_nothing_and_still_explains_its_end():
    m = CircuitMeter(0, 0, started=0.0)
    m.on_sent(10 << 20)
    assert not m.limited
    assert m.refuse(60 * KIB, 1e6) is None
    assert not m.data_used_up()
    assert end(m, 1e6, relay_gone=True) == "the relay went away"
    assert end(m, 1e6, peer_left=True) == "the peer left"
    assert end(m, 1e6, low="closed locally") == "closed locally"


def test_bytes_queued_in_the_muxer_count_before_they_reach_the_circuit():
    """A burst of writes sits in the muxer's queue before its writer task runs: those bytes
    cross the relay too, so they count against the limit at once."""
    m = CircuitMeter(0, 64 * KIB, started=0.0)
    queue = [0]
    m.queued = lambda: queue[0]
    while m.refuse(100, 0.0) is None:
        queue[0] += m.cost(100)  # written, nothing reached the circuit yet
    assert m.used == 0 and queue[0] <= 64 * KIB - CONTROL_RESERVE
    assert m.data_used_up()


def test_a_js_relays_duration_in_milliseconds_reads_as_seconds():
    """js-libp2p's relay server writes its 2-minute default as 120000: that is 2 minutes."""
    m = CircuitMeter(120_000, 128 * KIB, started=0.0)
    assert m.duration == 120
    assert end(m, 119.0) == "the relay's 2-minute time limit was reached"
    assert CircuitMeter(3600, 0, started=0.0).duration == 3600
    assert CircuitMeter(86_401, 0, started=0.0).duration == 86_401  # not thousands: as given


def test_a_js_relays_duration_limit_is_read_in_milliseconds():
    assert limit_seconds(120000, "js-libp2p/3.3.11 UserAgent=v22.12.0") == 120
    assert limit_seconds(120, "rust-libp2p/0.57.1") == 120
    assert limit_seconds(120, "p2prtc/0.1.0") == 120
    assert limit_seconds(120, None) == 120
    assert limit_seconds(0, "js-libp2p/3.3.11") == 0  # no limit stays no limit
    # an unknown relay: more than a day in whole thousands can only be milliseconds
    assert limit_seconds(120000) == 120 and limit_seconds(3600) == 3600
