"""NAT behaviour discovery: the classifier fed with probe results, the direct-path rule against
the lab's theory (lab/nat.py `predict`, README's results table), and the probe against our own
STUN server on loopback (no NAT there: what it can tell is "public" and the filtering the server
lets it measure)."""

from __future__ import annotations

import itertools
import time

import pytest

from p2prtc import nat
from p2prtc.lab.nat import NAT_TYPES, predict
from p2prtc.nat import (AD, APD, EI, NONE, PORT_INDEPENDENT, UNKNOWN, NatBehaviour, ProbeResults,
                        classify, direct_path_ruled_out)
from p2prtc.protocols import stun

SERVER = ("203.0.113.10", 3478)
OTHER = ("203.0.113.11", 3479)
LOCAL = ("198.51.100.2", 40000)
PUB = ("203.0.113.1", 40000)


def results(**kw) -> ProbeResults:
    base = dict(server=SERVER, local=LOCAL, mapped=PUB, origin=SERVER, other=OTHER,
                second_dest=(OTHER[0], SERVER[1]))
    base.update(kw)
    return ProbeResults(**base)


@pytest.mark.parametrize("kw, mapping, filtering, lab_type", [
    # no NAT, open
    (dict(mapped=LOCAL, mapped_second=LOCAL, filter_change_ip_port=True, filter_change_port=True),
     NONE, EI, "public"),
    (dict(mapped_second=PUB, filter_change_ip_port=True, filter_change_port=True),
     EI, EI, "full-cone"),
    (dict(mapped_second=PUB, filter_change_ip_port=False, filter_change_port=True),
     EI, AD, "restricted"),
    (dict(mapped_second=PUB, filter_change_ip_port=False, filter_change_port=False),
     EI, APD, "port-restricted"),
    # a new port per destination, and a new one again for the other port of that address
    (dict(mapped_second=("203.0.113.1", 50001), mapped_third=("203.0.113.1", 50002),
          filter_change_ip_port=False, filter_change_port=False), APD, APD, "symmetric"),
    (dict(mapped_second=("203.0.113.1", 50001), mapped_third=("203.0.113.1", 50001),
          filter_change_ip_port=False, filter_change_port=False), AD, APD, "symmetric"),
    # no NAT but a firewall that filters per port: behaves like a port-restricted NAT
    (dict(mapped=LOCAL, mapped_second=LOCAL, filter_change_ip_port=False,
          filter_change_port=False), NONE, APD, "port-restricted"),
])
def test_classify_lab_types(kw, mapping, filtering, lab_type):
    b = classify(results(**kw))
    assert (b.mapping, b.filtering, b.lab_type) == (mapping, filtering, lab_type)
    assert b.public == kw.get("mapped", PUB)
    assert b.server == "203.0.113.10:3478"


def test_classify_port_only_server():
    other = (SERVER[0], 3479)
    r = results(other=other, second_dest=other, mapped_second=PUB,
                filter_change_ip_port=None, filter_change_port=True)
    b = classify(r)
    assert (b.mapping, b.filtering) == (EI, PORT_INDEPENDENT)
    assert b.lab_type == UNKNOWN  # full cone or restricted: the server cannot tell
    assert "no second IP" in b.describe() and b.describe().startswith("full-cone or restricted")
    # A new port towards the other port is enough to call the mapping port-dependent.
    r = results(other=other, second_dest=other, mapped_second=("203.0.113.1", 50001),
                filter_change_ip_port=None, filter_change_port=False)
    b = classify(r)
    assert (b.mapping, b.filtering, b.lab_type) == (APD, APD, "symmetric")


def test_classify_without_rfc5780():
    b = classify(results(other=None, second_dest=None))
    assert (b.mapping, b.filtering, b.lab_type) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert b.public == PUB and "OTHER-ADDRESS" in b.error
    assert "203.0.113.1:40000" in b.describe()


def test_classify_no_answer_names_the_server():
    b = classify(ProbeResults(server=SERVER))
    assert (b.mapping, b.filtering, b.public) == (UNKNOWN, UNKNOWN, None)
    assert "203.0.113.10:3478" in b.error and "no answer" in b.describe()


def test_classify_unanswered_second_probe():
    b = classify(results(mapped_second=None, filter_change_ip_port=False,
                         filter_change_port=False))
    assert b.mapping == UNKNOWN and b.filtering == APD
    assert "203.0.113.11:3478" in b.error


LAB = {  # what each lab type looks like to the classifier (lab/nat.py EXPECTED)
    "public": NatBehaviour(NONE, EI), "full-cone": NatBehaviour(EI, EI),
    "restricted": NatBehaviour(EI, AD), "port-restricted": NatBehaviour(EI, APD),
    "symmetric": NatBehaviour(APD, APD), "double": NatBehaviour(EI, APD),
}


@pytest.mark.parametrize("a, b", list(itertools.product(NAT_TYPES, NAT_TYPES)))
def test_direct_path_rule_matches_the_lab_theory(a, b):
    reason = direct_path_ruled_out(LAB[a], LAB[b])
    assert (reason is None) == predict(a, b).direct, (a, b, reason)
    if reason is not None:
        # Both behaviours are named, ours first.
        here, there = reason.index(LAB[a].short()), reason.rindex(LAB[b].short())
        assert "here" in reason and "there" in reason and here <= there


def test_direct_path_rule_needs_both_behaviours():
    sym = LAB["symmetric"]
    assert direct_path_ruled_out(sym, None) is None
    assert direct_path_ruled_out(None, sym) is None
    assert direct_path_ruled_out(sym, NatBehaviour(UNKNOWN, UNKNOWN)) is None
    assert "port-restricted NAT" in direct_path_ruled_out(LAB["port-restricted"], sym)


def test_behaviour_round_trips_and_rejects_nonsense():
    b = NatBehaviour(EI, AD, ("203.0.113.1", 4000), "203.0.113.10:3478")
    assert NatBehaviour.from_dict(b.to_dict()) == b
    assert b.to_dict()["type"] == "restricted" and b.to_dict()["public"] == "203.0.113.1:4000"
    odd = NatBehaviour.from_dict({"mapping": "sideways", "filtering": 7, "public": "x:y",
                                  "server": ["no"]})
    assert odd == NatBehaviour(UNKNOWN, UNKNOWN)
    with pytest.raises(ValueError):
        NatBehaviour.from_dict(["not", "a", "dict"])


@pytest.mark.parametrize("target, want", [
    ("stun:203.0.113.10:3478", ("203.0.113.10", 3478)),
    ("stun:relay.example.org", ("relay.example.org", 3478)),
    ("stun:[2001:db8::1]:5000", ("2001:db8::1", 5000)),
    ("/ip4/203.0.113.10/tcp/4884/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
     ("203.0.113.10", 3478)),
    ("/dns4/relay.example.org/tcp/443/wss", ("relay.example.org", 3478)),
])
def test_stun_server_for(target, want):
    assert nat.stun_server_for(target) == want


@pytest.mark.parametrize("target", ["stun:host:notaport", "stun:host:0", "/tcp/4884", "a:b:c"])
def test_stun_server_for_rejects(target):
    with pytest.raises(ValueError):
        nat.stun_server_for(target)


# -- the probe against our server on loopback ------------------------------------------------------


async def test_detect_with_four_sockets_is_public_and_open():
    server = await stun.start_stun_server("127.0.0.1", 0, alt_port=0, alt_ip="127.0.0.2")
    try:
        b = await nat.detect("127.0.0.1", server.addresses[(0, 0)][1])
    finally:
        server.close()
    assert (b.mapping, b.filtering, b.lab_type) == (NONE, EI, "public")
    assert b.public[0] == "127.0.0.1" and b.error is None


async def test_detect_with_port_only_server():
    server = await stun.start_stun_server("127.0.0.1", 0, alt_port=0)
    try:
        b = await nat.detect("127.0.0.1", server.addresses[(0, 0)][1])
    finally:
        server.close()
    assert (b.mapping, b.filtering) == (NONE, PORT_INDEPENDENT)


async def test_detect_with_plain_server_knows_only_the_address():
    server = await stun.start_stun_server("127.0.0.1", 0)
    try:
        b = await nat.detect("127.0.0.1", server.addresses[(0, 0)][1])
    finally:
        server.close()
    assert b.mapping == NONE and b.filtering == UNKNOWN and b.public is not None


async def test_detect_without_answer_is_bounded_and_says_so():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        b = await nat.detect("127.0.0.1", port)
        took = time.monotonic() - t0
    assert took < 1.5
    assert (b.mapping, b.filtering, b.public) == (UNKNOWN, UNKNOWN, None)
    assert f"127.0.0.1:{port}" in b.describe()
