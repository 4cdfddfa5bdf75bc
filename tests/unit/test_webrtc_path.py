"""Which path a WebRTC connection takes, from its selected candidate pair (transport.note_path)."""

from __future__ import annotations

from types import SimpleNamespace

from p2prtc.connection import ConnectionDetails
from p2prtc.transports.webrtc.engine import CandidatePair
from p2prtc.transports.webrtc.transport import note_path


def conn():
    return SimpleNamespace(details=ConnectionDetails())


def test_turn_then_direct_is_a_change_and_the_relay_is_named():
    c = conn()
    assert note_path(c, CandidatePair("relay", "203.0.113.10:40001", "srflx", "203.0.113.2:5000"))
    assert c.details.path == "turn" and c.details.turn_relay == "203.0.113.10"
    # the peer's relay candidate: its TURN server is named
    c2 = conn()
    note_path(c2, CandidatePair("host", "10.0.0.2:1", "relay", "203.0.113.10:40002"))
    assert c2.details.path == "turn" and c2.details.turn_relay == "203.0.113.10"
    # ICE moves to a direct pair: reported as a change, the relay forgotten
    assert note_path(c, CandidatePair("host", "10.0.0.2:1", "srflx", "203.0.113.2:5000"))
    assert c.details.path == "direct" and c.details.turn_relay is None
    assert not note_path(c, CandidatePair("host", "10.0.0.2:1", "srflx", "203.0.113.2:5000"))


def test_an_unknown_pair_keeps_what_was_known():
    c = conn()
    assert not note_path(c, None)
    assert c.details.path == "direct" and c.details.candidate_pair is None
    note_path(c, CandidatePair("relay", "203.0.113.10:40001", "host", "10.0.0.3:2"))
    assert not note_path(c, None)
    assert c.details.path == "turn"
