"""webrtc-direct building blocks without sockets: STUN codec, ICE-lite table, ICE checks,
certificate derivation, certhash and the Noise prologue (the spec's test vector)."""

from __future__ import annotations

import hashlib
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.multiaddr import Multiaddr
from p2prtc.transports.webrtc_direct import certificate as cert_mod
from p2prtc.transports.webrtc_direct import stun
from p2prtc.transports.webrtc_direct.ice import (
    UFRAG_PREFIX,
    IceChecker,
    IceLiteAgent,
    is_valid_ufrag,
    random_ufrag,
)
from p2prtc.transports.webrtc_direct.transport import WebRTCDirectTransport

CLIENT = ("198.51.100.20", 50000)


def check(ufrag: str, *, use_candidate: bool = True, key: bytes | None = None,
          username: str | None = None) -> bytes:
    return stun.binding_request(stun.new_transaction_id(), username or f"{ufrag}:{ufrag}",
                                key if key is not None else ufrag.encode(), priority=1,
                                controlling=True, tie_breaker=7, use_candidate=use_candidate)


# -- spec test vector, certhash, certificate --------------------------------------------------

def test_noise_prologue_matches_spec_test_vector():
    client = bytes.fromhex("3e79af40d6059617a0d83b83a52ce73b0c1f37a72c6043ad2969e2351bdca870")
    server = bytes.fromhex("30fc9f469c207419dfdd0aab5f27a86c973c94e40548db9375cca2e915973b99")
    expected = ("6c69627032702d7765627274632d6e6f6973653a12203e79af40d6059617a0d83b83a52ce73b0c1f37a72c"
                "6043ad2969e2351bdca870122030fc9f469c207419dfdd0aab5f27a86c973c94e40548db9375cca2e915"
                "973b99")
    assert cert_mod.noise_prologue(client, server).hex() == expected


def test_certhash_round_trip_and_refusals():
    digest = hashlib.sha256(b"x").digest()
    text = cert_mod.certhash(digest)
    assert text.startswith("uEi")  # base64url multibase of 0x12 0x20 ...
    assert cert_mod.digest_from_certhash(text) == digest
    # any multibase the multiaddr may carry (base32 here) decodes to the same digest
    from p2prtc.multibase import encode

    assert cert_mod.digest_from_certhash(encode(cert_mod.sha256_multihash(digest), "base32")) == digest
    with pytest.raises(ProtocolError):
        cert_mod.digest_from_certhash("u" + "A" * 10)  # not a sha2-256 multihash
    with pytest.raises(ProtocolError):
        cert_mod.digest_from_certhash("!nope")
    assert cert_mod.sdp_fingerprint(bytes([0xAB, 0x01])) == "AB:01"


def test_certificate_is_derived_from_the_identity():
    a = cert_mod.certificate_for(Identity.from_seed(0), cached=False)
    again = cert_mod.certificate_for(Identity.from_seed(0), cached=False)
    other = cert_mod.certificate_for(Identity.from_seed(1))
    assert a.der == again.der and a.certhash == again.certhash  # same key -> same address
    assert a.certhash != other.certhash
    assert isinstance(a.key.curve, ec.SECP256R1)  # what browsers accept
    assert a.cert.not_valid_after_utc.year == 9999
    assert a.cert.signature_hash_algorithm.name == "sha256"
    # the key never equals anything derivable without the identity's private key
    assert a.key.private_numbers().private_value != int.from_bytes(Identity.from_seed(0).private_bytes(), "big")


def test_certificate_survives_a_key_file_round_trip(tmp_path):
    path = tmp_path / "id.key"
    first = Identity.load_or_create(path)
    h1 = cert_mod.certificate_for(first, cached=False).certhash
    h2 = cert_mod.certificate_for(Identity.load_or_create(path), cached=False).certhash
    assert h1 == h2


def test_ephemeral_certificates_differ():
    assert cert_mod.ephemeral_certificate().digest != cert_mod.ephemeral_certificate().digest


# -- STUN codec ---------------------------------------------------------------------------

def test_binding_request_round_trip_with_integrity_and_fingerprint():
    ufrag = random_ufrag()
    data = check(ufrag)
    msg = stun.parse(data)
    assert msg.msg_type == stun.BINDING_REQUEST
    assert msg.username == f"{ufrag}:{ufrag}" and msg.use_candidate and msg.priority == 1
    assert stun.ATTR_ICE_CONTROLLING in msg.attrs and stun.ATTR_FINGERPRINT in msg.attrs
    assert stun.verify_integrity(data, msg, ufrag.encode())
    assert not stun.verify_integrity(data, msg, b"wrong")


def test_success_response_carries_the_mapped_address():
    txid = stun.new_transaction_id()
    for addr in [("198.51.100.9", 4242), ("2001:db8::1", 9)]:
        data = stun.binding_success(txid, addr, b"k")
        msg = stun.parse(data)
        assert msg.msg_type == stun.BINDING_SUCCESS and msg.txid == txid
        assert msg.xor_mapped_address() == addr
        assert stun.verify_integrity(data, msg, b"k")


def test_matches_an_independent_encoder():
    """aioice's STUN encoder (a dependency of aiortc) accepts what we build and vice versa."""
    from aioice import stun as aioice_stun

    ufrag = random_ufrag()
    ours = check(ufrag)
    theirs = aioice_stun.parse_message(ours)
    assert theirs.attributes["USERNAME"] == f"{ufrag}:{ufrag}"
    assert theirs.check_message_integrity(ufrag.encode())
    assert "USE-CANDIDATE" in theirs.attributes
    req = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    req.attributes["USERNAME"] = f"{ufrag}:{ufrag}"
    req.attributes["PRIORITY"] = 5
    req.add_message_integrity(ufrag.encode())
    req.add_fingerprint()
    data = bytes(req)
    msg = stun.parse(data)
    assert msg.username == f"{ufrag}:{ufrag}" and stun.verify_integrity(data, msg, ufrag.encode())


def test_parser_rejects_garbage_with_stun_error_only():
    rng = random.Random(1)
    good = check(random_ufrag())
    samples = [b"", b"\x00" * 19, b"\x00\x01\x00\x04" + struct.pack(">I", stun.MAGIC_COOKIE) + bytes(12)]
    for _ in range(3000):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated[: rng.randint(0, len(mutated))]))
        samples.append(os.urandom(rng.randint(0, 200)))
    for data in samples:
        try:
            msg = stun.parse(data)
        except stun.StunError:
            continue
        stun.verify_integrity(data, msg, b"k")  # must not raise either
        _ = msg.username, msg.priority, msg.xor_mapped_address(), msg.error_code()


def test_demultiplexing_by_first_byte():
    assert stun.looks_like_stun(check(random_ufrag()))
    assert not stun.looks_like_stun(b"\x16\xfe\xfd" + bytes(30))
    assert stun.looks_like_dtls(b"\x16\xfe\xfd")
    assert not stun.looks_like_dtls(b"\x00\x01")


def test_ufrag_rules():
    u = random_ufrag()
    assert u.startswith(UFRAG_PREFIX) and is_valid_ufrag(u)
    assert not is_valid_ufrag("abcd")
    assert not is_valid_ufrag(UFRAG_PREFIX + "has:colon1")
    assert not is_valid_ufrag(UFRAG_PREFIX + "x" * 300)


# -- ICE-lite table -----------------------------------------------------------------------

def test_valid_check_creates_one_session_and_answers_it():
    agent = IceLiteAgent()
    u = random_ufrag()
    r = agent.handle_stun(check(u, use_candidate=False), CLIENT, 0.0)
    assert r.new and r.reply is not None and r.session.ufrag == u and not r.session.nominated
    reply = stun.parse(r.reply)
    assert reply.msg_type == stun.BINDING_SUCCESS and reply.xor_mapped_address() == CLIENT
    assert stun.verify_integrity(r.reply, reply, u.encode())
    r2 = agent.handle_stun(check(u), CLIENT, 1.0)
    assert not r2.new and r2.session is r.session and r.session.nominated
    assert agent.session_for(CLIENT) is r.session and len(agent) == 1


@pytest.mark.parametrize("data,reason", [
    (b"\x00\x01\x00\x00" + struct.pack(">I", stun.MAGIC_COOKIE) + bytes(12), "USERNAME"),
    (None, "not a libp2p"),  # filled below: ufrag without the prefix
    (None, "MESSAGE-INTEGRITY"),  # wrong key
    (None, "type"),  # a binding success sent to us
])
def test_bad_checks_are_dropped_without_state(data, reason):
    agent = IceLiteAgent()
    u = random_ufrag()
    if reason == "not a libp2p":
        data = check("plainufrag", key=b"plainufrag")
    elif reason == "MESSAGE-INTEGRITY":
        data = check(u, key=b"not-the-ufrag")
    elif reason == "type":
        data = stun.binding_success(stun.new_transaction_id(), CLIENT, u.encode())
    r = agent.handle_stun(data, CLIENT, 0.0)
    assert r.reply is None and r.session is None and reason in r.dropped
    assert len(agent) == 0 and not agent.by_addr
    assert agent.session_for(CLIENT) is None


def test_per_ip_cap_rate_limit_and_table_cap_hold_under_a_flood():
    agent = IceLiteAgent(max_sessions=100, max_sessions_per_ip=10,
                         rate_per_ip=(1e9, 1e9), rate=(1e9, 1e9))
    for i in range(1000):  # one attacker IP, many ports and ufrags
        agent.handle_stun(check(random_ufrag()), ("203.0.113.66", 10000 + i), 0.0)
    assert agent.per_ip["203.0.113.66"] <= 10 and len(agent) <= 10
    for i in range(1000):  # many IPs
        agent.handle_stun(check(random_ufrag()), (f"203.0.113.{i % 250}", 20000 + i), 0.0)
    assert len(agent) <= 100 and len(agent.by_addr) <= 100
    # a legitimate client still gets in (the oldest unconnected session makes room)
    r = agent.handle_stun(check(random_ufrag()), CLIENT, 0.0)
    assert r.new and r.reply is not None


def test_rate_limit_per_ip():
    agent = IceLiteAgent(rate_per_ip=(10.0, 5.0))
    created = sum(agent.handle_stun(check(random_ufrag()), ("203.0.113.1", 1000 + i), 0.0).new
                  for i in range(50))
    assert created == 5
    # other IPs are not affected
    assert agent.handle_stun(check(random_ufrag()), CLIENT, 0.0).new
    # tokens come back with time
    assert agent.handle_stun(check(random_ufrag()), ("203.0.113.1", 999), 1.0).new


def test_unconnected_sessions_expire_and_connected_ones_keep_their_address():
    agent = IceLiteAgent()
    u1, u2 = random_ufrag(), random_ufrag()
    s1 = agent.handle_stun(check(u1), CLIENT, 0.0).session
    assert agent.expire(5.0) == []
    assert agent.expire(100.0) == [s1] and len(agent) == 0 and agent.session_for(CLIENT) is None
    s1 = agent.handle_stun(check(u1), CLIENT, 100.0).session
    s1.connection = object()  # DTLS started
    # a check for another ufrag from the same address cannot take a live connection's address
    r = agent.handle_stun(check(u2), CLIENT, 101.0)
    assert r.dropped and agent.session_for(CLIENT) is s1 and len(agent) == 1
    # ...unless that connection has been silent for long (a client restarted on the same port)
    r = agent.handle_stun(check(u2), CLIENT, 200.0)
    assert r.new and agent.session_for(CLIENT) is r.session
    agent.remove(s1)
    assert len(agent) == 1 and agent.per_ip == {CLIENT[0]: 1}


def test_checker_accepts_only_its_own_authenticated_responses():
    u = random_ufrag()
    server = ("198.51.100.7", 4885)
    checker = IceChecker(u, server)
    req = checker.request(0.0)
    agent = IceLiteAgent()
    reply = agent.handle_stun(req, ("198.51.100.20", 5555), 0.0).reply
    forged = stun.binding_success(stun.parse(req).txid, ("1.2.3.4", 1), b"other key")
    assert checker.handle_stun(forged, 0.1) is None and not checker.succeeded
    unknown = stun.binding_success(stun.new_transaction_id(), ("1.2.3.4", 1), u.encode())
    checker.handle_stun(unknown, 0.1)
    assert not checker.succeeded
    checker.handle_stun(reply, 0.2)
    assert checker.succeeded and checker.last_success == 0.2
    assert checker.mapped_address == ("198.51.100.20", 5555)
    # a full-ICE server checking us gets an authenticated answer
    answer = checker.handle_stun(check(u), 0.3)
    assert answer is not None and stun.parse(answer).msg_type == stun.BINDING_SUCCESS


# -- addresses ----------------------------------------------------------------------------

def test_transport_address_matching():
    t = WebRTCDirectTransport.__new__(WebRTCDirectTransport)
    h = cert_mod.certhash(hashlib.sha256(b"c").digest())
    peer = Identity.from_seed(3).peer_id
    assert t.can_listen(Multiaddr("/ip4/0.0.0.0/udp/0/webrtc-direct"))
    assert t.can_dial(Multiaddr(f"/ip4/1.2.3.4/udp/5/webrtc-direct/certhash/{h}/p2p/{peer}"))
    assert t.can_dial(Multiaddr(f"/ip6/::1/udp/5/webrtc-direct/certhash/{h}"))
    assert not t.can_dial(Multiaddr("/ip4/1.2.3.4/udp/5/webrtc-direct"))  # no certhash
    assert not t.can_dial(Multiaddr(f"/ip4/1.2.3.4/udp/5/webrtc-direct/certhash/{h}/p2p/{peer}"
                                    f"/p2p-circuit/webrtc/p2p/{peer}"))
    assert not t.can_dial(Multiaddr("/ip4/1.2.3.4/udp/5/quic-v1"))


def test_parse_direct_addr_errors():
    from p2prtc.errors import DialError
    from p2prtc.transports.webrtc_direct.dialer import parse_direct_addr

    h = cert_mod.certhash(hashlib.sha256(b"c").digest())
    ip, port, digests, peer = parse_direct_addr(Multiaddr(f"/ip4/1.2.3.4/udp/5/webrtc-direct/certhash/{h}"))
    assert (ip, port, digests, peer) == ("1.2.3.4", 5, [hashlib.sha256(b"c").digest()], None)
    with pytest.raises(DialError, match="certhash"):
        parse_direct_addr(Multiaddr("/ip4/1.2.3.4/udp/5/webrtc-direct"))
