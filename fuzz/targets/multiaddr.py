"""multiaddr.py: binary and text multiaddrs (every protocol in our table).

Contract: MultiaddrError (a ValueError and a ProtocolError) only; bytes -> Multiaddr -> text
-> Multiaddr -> bytes round-trips; the accessors never raise on a decoded address.
"""

from p2prtc.multiaddr import Multiaddr, MultiaddrError


def test_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        try:
            text = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            return
        try:
            addr = Multiaddr.from_string(text)
        except MultiaddrError:
            return
    else:
        try:
            addr = Multiaddr.from_bytes(data[1:])
        except MultiaddrError:
            return
        assert addr.to_bytes() == data[1:], "binary multiaddr does not round-trip"
    text = str(addr)
    again = Multiaddr.from_string(text)
    assert again == addr and again.to_bytes() == addr.to_bytes(), text
    assert str(again) == text
    names = addr.protocols()
    assert len(names) == len(addr.components())
    for name in names:
        addr.value_for(name)
        assert addr.has(name)
    addr.peer_id()
    addr.without_peer_id()
    if names:
        addr.decapsulate(names[-1])
        addr.split_last(names[0])


def seeds() -> list[bytes]:
    texts = [
        "/ip4/198.51.100.7/tcp/4884/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
        "/ip6/::1/udp/5000/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_"
        "tpevQ",
        "/dns4/relay.example/tcp/443/wss/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        "/p2p-circuit/webrtc/p2p/12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X",
        "/ip4/127.0.0.1/udp/1/quic-v1",
        "/unix/tmp%2Fsock",
    ]
    out = []
    for t in texts:
        try:
            a = Multiaddr(t)
        except MultiaddrError:
            continue
        out += [b"\x01" + t.encode(), b"\x00" + a.to_bytes()]
    # What js-libp2p's @multiformats/multiaddr encodes (tests/unit/vectors/multiaddr_js.json).
    for pair in _js_pairs():
        out += [b"\x01" + pair["input"].encode(), b"\x00" + bytes.fromhex(pair["hex"])]
    return out


def _js_pairs() -> list[dict]:
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "tests" / "unit" / "vectors" / "multiaddr_js.json"
    return [p for p in json.loads(path.read_text())["pairs"] if p.get("hex")]
