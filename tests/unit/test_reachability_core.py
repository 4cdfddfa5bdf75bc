"""The AutoNAT v2 confidence rules (protocols/reachability_core.py, go-libp2p's
addrs_reachability_tracker.go): answers in, verdicts out, no I/O."""

from __future__ import annotations

import random

from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols import reachability_core as rc
from p2prtc.protocols.autonat_core import CheckResult, Reachability

A = Multiaddr("/ip4/203.0.113.5/tcp/4001")
B = Multiaddr("/ip4/203.0.113.5/udp/4002/webrtc-direct")


def ok(addr: Multiaddr) -> CheckResult:
    return CheckResult("ok", addr, 0, "ok", 0, Reachability.PUBLIC)


def failed(addr: Multiaddr) -> CheckResult:
    return CheckResult("ok", addr, 0, "dial-error", 0, Reachability.PRIVATE)


def answer(t: rc.ReachabilityTracker, result: CheckResult | None, now: float) -> list[Multiaddr]:
    probe = t.next_probe(now)
    assert probe, "a probe was due"
    t.start_probe(probe)
    t.complete_probe(probe, result, now)
    return probe


def test_one_answer_is_not_a_verdict_two_are():
    t = rc.ReachabilityTracker()
    t.update_addrs([A])
    answer(t, ok(A), 0.0)
    assert t.confirmed(0.0).reachability is Reachability.UNKNOWN
    answer(t, ok(A), 1.0)
    c = t.confirmed(1.0)
    assert c.reachability is Reachability.PUBLIC and c.reachable == (A,)
    answer(t, ok(A), 2.0)  # up to the target confidence
    assert t.next_probe(3.0) == []
    # re-checked once the last word is older than an hour
    assert t.next_probe(3.0 + rc.HIGH_CONFIDENCE_PROBE_INTERVAL) == [A]


def test_private_needs_two_failures_and_a_flip_needs_four():
    t = rc.ReachabilityTracker()
    t.update_addrs([A])
    for i in range(2):
        answer(t, failed(A), float(i))
    assert t.confirmed(2.0).reachability is Reachability.PRIVATE
    t2 = rc.ReachabilityTracker()
    t2.update_addrs([A])
    status = t2.statuses[A]
    for i in range(5):
        status.add_outcome(float(i), Reachability.PUBLIC)
    for i in range(3):
        status.add_outcome(10.0 + i, Reachability.PRIVATE)
        assert status.reachability() is not Reachability.PRIVATE
    status.add_outcome(20.0, Reachability.PRIVATE)
    assert status.reachability() is Reachability.PRIVATE  # window [S F F F F]


def test_odd_answer_is_asked_again():
    t = rc.ReachabilityTracker()
    t.update_addrs([A])
    for i in range(3):
        answer(t, ok(A), float(i))
    assert t.next_probe(5.0) == []
    t.statuses[A].add_outcome(6.0, Reachability.PRIVATE)
    assert t.confirmed(6.0).reachability is Reachability.PUBLIC  # 3 - 1
    assert t.next_probe(7.0) == [A]  # confidence 2 < 3


def test_refusals_and_errors():
    t = rc.ReachabilityTracker()
    t.update_addrs([A, B])
    # a failed request says nothing about the addresses
    answer(t, None, 0.0)
    assert t.consecutive_errors == 1 and t.confirmed(0.0).reachability is Reachability.UNKNOWN
    # refusals of the first address: after 5 it rests for 10 min, the next one goes first
    for i in range(rc.MAX_CONSECUTIVE_REFUSALS):
        probe = answer(t, CheckResult("refused"), float(i))
        assert probe[0] == A
    assert t.next_probe(10.0)[0] == B
    assert t.next_probe(10.0 + rc.RECENT_PROBE_INTERVAL)[0] == A
    # a server that dialled the second address: the first counts a refusal, the second an outcome
    t.update_addrs([A, B])
    probe = t.next_probe(1000.0)
    t.start_probe(probe)
    t.complete_probe(probe, ok(B), 1000.0)
    assert t.statuses[B].confidence == 1 and t.consecutive_errors == 0
    for _ in range(rc.MAX_CONSECUTIVE_ERRORS + 1):
        t.start_probe(probe)
        t.complete_probe(probe, CheckResult("rejected"), 1001.0)
    assert t.failing


def test_dial_back_error_counts_a_dial_not_an_outcome_and_dials_are_capped():
    t = rc.ReachabilityTracker()
    t.update_addrs([A])
    for i in range(rc.MAX_RECENT_DIALS_PER_ADDR):
        answer(t, CheckResult("ok", A, 0, "dial-back-error", 0, Reachability.UNKNOWN), float(i))
    assert t.statuses[A].outcomes == [] and t.next_probe(20.0) == []
    assert t.next_probe(20.0 + rc.RECENT_PROBE_INTERVAL) == [A]


def test_in_progress_probes_are_not_handed_out_twice():
    t = rc.ReachabilityTracker()
    t.update_addrs([A])
    for _ in range(rc.TARGET_CONFIDENCE):
        t.start_probe(t.next_probe(0.0))
    assert t.next_probe(0.0) == []


def test_update_keeps_what_was_learnt_and_results_expire():
    t = rc.ReachabilityTracker()
    assert t.update_addrs([A.with_peer_id(_peer())])
    assert not t.update_addrs([A])
    answer(t, ok(A), 0.0)
    answer(t, ok(A), 1.0)
    assert t.update_addrs([A, B])
    assert t.confirmed(2.0).reachable == (A,) and t.confirmed(2.0).unknown == (B,)
    assert t.confirmed(2.0 + rc.MAX_PROBE_RESULT_TTL).reachable == ()
    assert not rc.ReachabilityTracker().confirmed(0.0).unreachable


def test_server_picker_throttles_each_server():
    p: rc.ServerPicker[str] = rc.ServerPicker(rng=random.Random(1))
    first = p.pick(["s1", "s2"], 0.0)
    second = p.pick(["s1", "s2"], 1.0)
    assert {first, second} == {"s1", "s2"}
    assert p.pick(["s1", "s2"], 2.0) is None
    assert p.free_at(["s1", "s2"]) == rc.SERVER_THROTTLE
    assert p.pick(["s1", "s2"], rc.SERVER_THROTTLE) == first
    assert p.free_at([]) is None


def test_backoff_doubles_to_its_maximum():
    b = rc.Backoff()
    got = [b.next() for _ in range(8)]
    assert got[:3] == [5.0, 10.0, 20.0] and got[-1] == rc.MAX_BACKOFF
    b.reset()
    assert b.next() == rc.BACKOFF_START


def _peer() -> object:
    from p2prtc.identity import Identity

    return Identity.from_seed(7).peer_id
