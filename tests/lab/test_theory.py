"""The lab's pure parts: NAT theory, probe classification, nftables rulesets, the matrix table.
No root needed."""

from __future__ import annotations

import itertools

import pytest

from p2prtc.lab.nat import EXPECTED, NAT_TYPES, predict, router_kinds, ruleset
from p2prtc.lab.probe import classify
from p2prtc.lab.scenario import RunResult, matrix_pairs, matrix_table

PER_PORT_FILTERING = {"port-restricted", "double", "symmetric"}


@pytest.mark.parametrize("a,b", list(itertools.product(NAT_TYPES, NAT_TYPES)))
def test_prediction(a, b):
    p = predict(a, b)
    assert p == predict(b, a)
    fails = ("symmetric" in (a, b)) and ({a, b} - {"symmetric"} <= PER_PORT_FILTERING)
    assert p.direct is not fails, (a, b, p)
    assert p.why


def test_prediction_named_cases():
    assert not predict("symmetric", "symmetric").direct
    assert "symmetric NAT on both sides" in predict("symmetric", "symmetric").why
    assert predict("full-cone", "symmetric").direct
    assert predict("restricted", "symmetric").direct
    assert not predict("double", "symmetric").direct
    assert predict("port-restricted", "port-restricted").direct
    with pytest.raises(ValueError):
        predict("cone", "public")


@pytest.mark.parametrize("nat", NAT_TYPES)
def test_probe_classification_of_expected_behaviour(nat):
    mapping, filtering, hops = EXPECTED[nat]
    assert classify(mapping, filtering, hops) == nat


def test_probe_classification_of_odd_behaviour():
    assert classify("address-dependent", "address-dependent", 1).startswith("unusual")


def test_router_kinds():
    assert router_kinds("public") == []
    assert router_kinds("double") == ["port-restricted", "port-restricted"]
    with pytest.raises(ValueError):
        router_kinds("carrier-grade")


@pytest.mark.parametrize("kind", ["full-cone", "restricted", "port-restricted", "symmetric"])
def test_rulesets(kind):
    text = ruleset(kind, "203.0.113.1", "198.51.100.2")
    # The pitfall from TESTING.md: unsolicited inbound to the router itself is dropped.
    assert 'iifname "wan" ct state new drop' in text
    assert ("masquerade fully-random" in text) == (kind == "symmetric")
    assert ("dnat to 198.51.100.2" in text) == (kind in ("full-cone", "restricted"))
    assert ("@contacted" in text) == (kind == "restricted")
    with pytest.raises(ValueError):
        ruleset("double", "203.0.113.1", "198.51.100.2")


def test_matrix_pairs_and_table():
    pairs = matrix_pairs()
    assert len(pairs) == len(NAT_TYPES) * (len(NAT_TYPES) + 1) // 2
    assert ("full-cone", "symmetric") in pairs and ("symmetric", "full-cone") not in pairs
    ok = RunResult("public", "symmetric", "python", 0, 0, True, "why", direct=True,
                   time_to_direct_ms=123.4, candidate_pair={"local": "host", "remote": "srflx"},
                   rtt_ms={"relay": 1.5, "direct": 0.5}, throughput={"MBps": 7.25},
                   chat={"ok": True, "via": "webrtc"})
    bad = RunResult("symmetric", "symmetric", "python", 0, 0, True, "why", direct=False,
                    failure_reported_ms=10050, chat={"ok": True, "via": "relay"})
    table = matrix_table([ok, bad]).splitlines()
    assert len(table) == 4
    assert table[1].count("---") == table[0].count("|") - 1
    assert "| public | symmetric | direct | direct | direct | - / - | 123 | host/srflx |" in table[2]
    assert "**MISMATCH**" in table[3] and "**MISMATCH**" not in table[2]


def test_expected_path_and_the_table_with_turn():
    """Theory: direct where it allows, else TURN when on, else the relay."""
    def result(a, b, turn, **kw):
        pred = predict(a, b)
        return RunResult(a, b, "python", 0, 0, pred.direct, pred.why, turn=turn, **kw)

    assert result("public", "symmetric", "builtin").expected_path == "direct"
    assert result("symmetric", "symmetric", "builtin").expected_path == "turn"
    assert result("symmetric", "symmetric", "coturn").expected_path == "turn"
    assert result("symmetric", "symmetric", "none").expected_path == "relay"
    turned = result("symmetric", "port-restricted", "builtin", direct=True, path="turn",
                    turn_relay="203.0.113.10", time_to_direct_ms=350,
                    file={"ok": True, "bytes": 10, "sha256": "ab" * 32, "MBps": 1.0})
    assert turned.matches_theory
    # a relay-only result where TURN was on does not match; nor a direct one where none is possible
    assert not result("symmetric", "symmetric", "builtin").matches_theory
    assert result("symmetric", "symmetric", "none").matches_theory
    assert not result("public", "public", "builtin", direct=True, path="turn").matches_theory
    row = matrix_table([turned]).splitlines()[2]
    assert "| symmetric | port-restricted | TURN | TURN | turn (203.0.113.10) |" in row
    assert "| sha256 ok |" in row and "MISMATCH" not in row
