"""The relay keeper's decisions (p2prtc.relaykeeper): no sockets, a made-up clock."""

from __future__ import annotations

import pytest

from p2prtc.relaykeeper import (LOST_GRACE, FindRelays, Lost, RelayKeeper, Release, Reserve,
                                peer_of)
from p2prtc.transports.circuit import FAST_RETRY_WINDOW

A, B, C, D = (f"/ip4/203.0.113.{i}/tcp/4884/p2p/R{i}" for i in (10, 12, 14, 16))
GRACE = 5.0


def keeper(relays: list[str], *, given: bool = False, discovery: bool = True,
           goal: int | None = None) -> RelayKeeper:
    k = RelayKeeper(relays, given=given, discovery=discovery, grace=GRACE, now=0.0, goal=goal)
    for r in relays:
        assert k.reserved(peer_of(r), 0.0) == []
    return k


def test_the_grace_is_the_circuit_clients_fast_retry_window():
    assert LOST_GRACE == FAST_RETRY_WINDOW == 30.0


def test_peer_of_needs_a_relay_id():
    assert peer_of(A) == "R10"
    with pytest.raises(ValueError):
        peer_of("/ip4/203.0.113.10/tcp/4884")


def test_a_relay_down_within_the_grace_is_waited_for():
    k = keeper([A, B])
    assert k.down("R10", 1.0) == []
    assert k.next_deadline(1.0) == 1.0 + GRACE
    assert k.tick(1.0 + GRACE - 0.1) == []
    assert k.reserved("R10", 3.0) == []  # back in time (a restart): nothing to do
    assert k.next_deadline(3.0) is None and k.tick(100.0) == []


def test_a_relay_lost_past_the_grace_is_replaced_from_the_dht():
    k = keeper([A, B])
    k.down("R10", 1.0)
    out = k.tick(1.0 + GRACE)
    assert out == [Lost("R10", A, GRACE), FindRelays(1 + 2)]
    assert k.tick(7.0) == []  # one lookup at a time
    # the DHT returns relays we use too: only the new one is taken
    assert k.found([A, B, C, D], 7.0) == [
        Reserve(C, "found in the DHT to replace a lost relay")]
    assert set(k.relays()) == {A, B, C}  # the lost one is kept (the client retries it)
    assert k.reserved("R14", 8.0) == []
    assert sorted(k.held()) == ["R12", "R14"]
    assert k.next_deadline(8.0) is None


def test_a_lost_relay_that_comes_back_makes_one_too_many():
    k = keeper([A, B])
    k.down("R10", 0.0)
    k.tick(GRACE)
    k.found([C], GRACE)
    k.reserved("R14", GRACE + 1)
    # A returns: three held, two wanted: the newest relay found in the DHT goes
    out = k.reserved("R10", 60.0)
    assert out == [Release("R14", C, "a lost relay came back: more than the 2 wanted")]
    assert sorted(k.held()) == ["R10", "R12"]


def test_given_relays_are_never_released_for_a_surplus():
    k = keeper([A, B], given=True)
    k.down("R10", 0.0)
    assert FindRelays(3) in k.tick(GRACE)
    k.found([C], GRACE)
    k.reserved("R14", GRACE)
    out = k.reserved("R10", 50.0)
    assert out == [Release("R14", C, "a lost relay came back: more than the 2 wanted")]


def test_without_a_dht_a_lost_relay_is_reported_and_kept():
    k = keeper([A, B], given=True, discovery=False)
    k.down("R10", 0.0)
    assert k.tick(GRACE) == [Lost("R10", A, GRACE)]
    assert k.tick(GRACE * 10) == [] and k.next_deadline(GRACE * 10) is None
    assert k.relays() == [A, B]


def test_a_found_relay_that_never_reserves_is_released_and_not_taken_again():
    k = keeper([A, B])
    k.down("R10", 0.0)
    k.tick(GRACE)
    assert k.found([C], GRACE) == [Reserve(C, "found in the DHT to replace a lost relay")]
    k.down("R14", GRACE + 0.5)  # it refuses
    out = k.tick(2 * GRACE + 0.5)
    assert out[0] == Release("R14", C, f"no reservation within {GRACE:.0f} s")
    assert isinstance(out[1], FindRelays)
    assert k.found([C, D], 2 * GRACE + 1) == [
        Reserve(D, "found in the DHT to replace a lost relay")]


def test_a_failed_or_empty_lookup_is_asked_again_one_grace_later():
    k = keeper([A, B])
    k.down("R10", 0.0)
    k.tick(GRACE)
    assert k.find_failed(GRACE) == []
    assert k.tick(GRACE + 1) == []  # not at once again
    assert k.next_deadline(GRACE + 1) == 2 * GRACE
    assert k.tick(2 * GRACE) == [FindRelays(3)]
    assert k.found([A, B], 2 * GRACE) == [] and k.short(2 * GRACE)  # nothing new
    assert k.tick(3 * GRACE) == [FindRelays(3)]


def test_a_relay_that_failed_at_listen_counts_down_from_then():
    k = RelayKeeper([A, B], given=True, discovery=True, grace=GRACE, now=0.0)
    k.reserved("R10", 0.0)
    assert k.down("R12", 0.0) == []
    assert k.tick(GRACE) == [Lost("R12", B, GRACE), FindRelays(3)]


def test_from_the_dht_the_goal_is_kept_even_when_fewer_were_found():
    k = RelayKeeper([A], given=False, discovery=True, grace=GRACE, now=0.0, goal=2)
    assert k.reserved("R10", 0.0) == [FindRelays(2)]
    assert k.found([A, C], 1.0) == [Reserve(C, "found in the DHT")]


def test_publicly_reachable_releases_everything_and_private_again_reserves():
    k = keeper([A, B], given=True)
    out = k.set_wanted(False, 10.0)
    assert out == [Release("R10", A, "publicly reachable"),
                   Release("R12", B, "publicly reachable")]
    assert k.relays() == [] and k.tick(100.0) == [] and k.next_deadline(100.0) is None
    assert k.set_wanted(False, 11.0) == []  # no change, nothing to do
    out = k.set_wanted(True, 200.0)
    assert out == [Reserve(A, "no longer publicly reachable"),
                   Reserve(B, "no longer publicly reachable")]
    assert k.reserved("R10", 201.0) == [] and sorted(k.relays()) == [A, B]


def test_private_again_with_relays_from_the_dht_looks_them_up():
    k = keeper([A, B])
    k.set_wanted(False, 1.0)
    assert k.found([C], 1.5) == []  # a late answer while public is ignored
    assert k.set_wanted(True, 2.0) == [FindRelays(2)]
    assert k.found([C, D], 2.5) == [Reserve(C, "found in the DHT"), Reserve(D, "found in the DHT")]


def test_track_grows_the_goal_by_new_relays():
    k = keeper([A], given=True)
    k.track([A, B], given=True, now=1.0)
    assert k.goal == 2 and k.relays() == [A, B]
