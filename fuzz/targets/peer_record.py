"""envelope.py and kad/records.py: signed envelopes (RFC 0002), signed peer records (RFC 0003,
the /p2prtc-peer/ namespace), the /pk/ validator, provider keys and the record selector.

Input: a mode byte, then bytes. Modes 0-3 hand the fuzzer's bytes to the decoders as they come
from the network; modes 4-5 seal them with a real key first (as the payload, or with a fuzzed
payload type), so the fuzzer gets past the signature into the peer record protobuf.
Contract: everything raises only ProtocolError (InvalidRecord); an envelope that opens verifies
and re-seals to one that opens the same; a peer record that opens names its signer, and
validates under its own key only; select picks a value that validates.
"""

from p2prtc.envelope import Envelope
from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity
from p2prtc.kad import records

SIGNER = Identity.from_seed(30)
OTHER = Identity.from_seed(31)
DOMAIN = records.PEER_RECORD_DOMAIN


def test_one(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    if mode == 0:
        _envelope(body)
    elif mode == 1:
        _peer_record(body)
    elif mode == 2:  # a record value under either key of ours, or under the fuzzer's key
        cut = body[0] if body else 0
        for key in (records.peer_record_key(SIGNER.peer_id), records.pk_key(SIGNER.peer_id),
                    body[1:1 + cut]):
            _validate(key, body[1 + cut:])
    elif mode == 3:
        try:
            records.check_multihash(body)
        except records.InvalidRecord:
            pass
    elif mode == 4:
        _peer_record(Envelope.seal(SIGNER, DOMAIN, records.PEER_RECORD_PAYLOAD_TYPE, body))
    else:
        cut = body[0] if body else 0
        sealed = Envelope.seal(SIGNER, DOMAIN, body[1:1 + cut], body[1 + cut:])
        _envelope(sealed)
        _peer_record(sealed)


def _envelope(raw: bytes) -> None:
    try:
        env = Envelope.open(raw, DOMAIN)
    except ProtocolError:
        return
    try:
        Envelope.open(raw, DOMAIN + "x")
    except ProtocolError:
        pass
    else:
        raise AssertionError("an envelope opened under another domain")
    again = Envelope.open(Envelope.seal(SIGNER, DOMAIN, env.payload_type, env.payload), DOMAIN)
    assert (again.payload_type, again.payload) == (env.payload_type, env.payload)


def _peer_record(raw: bytes) -> None:
    try:
        rec = records.open_peer_record(raw)
    except ProtocolError:
        return
    key = records.peer_record_key(rec.peer_id)
    records.validate(key, raw)  # a record that opens is valid under its own key...
    other = OTHER.peer_id if rec.peer_id != OTHER.peer_id else SIGNER.peer_id
    try:
        records.validate(records.peer_record_key(other), raw)
    except records.InvalidRecord:
        pass
    else:
        raise AssertionError("a peer record validated under another peer's key")
    newer = records.seal_peer_record(SIGNER, rec.seq + 1, list(rec.addrs)) \
        if rec.peer_id == SIGNER.peer_id and rec.seq < (1 << 63) else None
    if newer is not None:
        assert records.select(key, [raw, newer]) == 1
        assert records.select(key, [newer, raw]) == 0


def _validate(key: bytes, value: bytes) -> None:
    try:
        records.validate(key, value)
    except records.InvalidRecord:
        return
    except ProtocolError as e:
        raise AssertionError(f"validate raised {type(e).__name__}, not InvalidRecord") from e
    assert records.select(key, [value]) == 0


def seeds() -> list[bytes]:
    from p2prtc.multiaddr import Multiaddr
    addrs = [Multiaddr("/ip4/198.51.100.7/tcp/4001"), Multiaddr("/ip6/2001:db8::1/udp/9/quic-v1")]
    rec = records.seal_peer_record(SIGNER, 5, addrs)
    payload = Envelope.open(rec, DOMAIN).payload
    return [
        b"\x00" + rec,
        b"\x01" + rec,
        b"\x01" + records.seal_peer_record(OTHER, 1, []),
        b"\x02\x00" + rec,
        b"\x02\x00" + SIGNER.public_key.to_protobuf(),
        b"\x03" + records.peer_provider_key(SIGNER.peer_id),
        b"\x02\x10/p2prtc-peer/xyz" + rec,  # a key that does not end in a peer id
        b"\x04" + payload,
        b"\x05\x02\x03\x01" + payload,
        b"\x00" + Envelope.seal(SIGNER, "other-domain", b"\x03\x01", payload),
    ]
