import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc import multibase
from p2prtc.errors import ProtocolError
from p2prtc.identity import Identity, PeerId
from p2prtc.multiaddr import (
    _BY_NAME,
    _FIXED_SIZE,
    MAX_MULTIADDR_BYTES,
    PROTOCOL_CODES,
    Multiaddr,
    MultiaddrError,
)
from p2prtc.wire.varint import encode_uvarint

VECTORS = json.loads((Path(__file__).parent / "vectors" / "multiaddr_js.json").read_text())

PEER0 = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"  # seed 0
PEER1 = "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"  # seed 1
PEER1_CID = "bafzaajaiaejcbtwmcud5yho5okkzkhbjbcepbfnnxece2g3t22lonxyglvudxvh4"
QM_PEER = "QmQiHBDyMeiZFKsma68uut5oU3S7iXeuqD6FTsRENw5xHX"
CERT_MH = bytes((0x12, 0x20)) + hashlib.sha256(b"certificate one").digest()
CERT_U = multibase.encode(CERT_MH, "base64url")


# --- vectors from js-multiaddr -----------------------------------------------------------------


@pytest.mark.parametrize("pair", VECTORS["pairs"], ids=lambda p: p["input"][:60])
def test_js_vector_string_to_bytes(pair):
    assert Multiaddr(pair["input"]).to_bytes().hex() == pair["hex"]
    assert Multiaddr(pair["string"]).to_bytes().hex() == pair["hex"]


@pytest.mark.parametrize("pair", VECTORS["pairs"], ids=lambda p: p["input"][:60])
def test_js_vector_bytes_to_string(pair):
    ma = Multiaddr(bytes.fromhex(pair["hex"]))
    assert ma.to_bytes().hex() == pair["hex"]
    if "unix" in ma.protocols():
        # js writes unix paths percent-encoded, we write them go-style when last; both read both
        assert Multiaddr(str(ma)) == ma
        assert Multiaddr(pair["string_from_bytes"]) == ma
    else:
        assert str(ma) == pair["string_from_bytes"]


def test_js_vectors_cover_every_protocol():
    seen = {name for p in VECTORS["pairs"] for name in Multiaddr(p["input"]).protocols()}
    assert seen == set(PROTOCOL_CODES)


@pytest.mark.parametrize("name", sorted(PROTOCOL_CODES))
def test_protocol_code_and_size_match_js_table(name):
    js = VECTORS["protocols"][name]
    assert PROTOCOL_CODES[name] == js["code"]
    size = _FIXED_SIZE.get(_BY_NAME[name].kind, -1)
    assert (size * 8 if size >= 0 else -1) == js["size"]


# --- round trips per protocol ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,hexbytes",
    [
        ("/ip4/1.2.3.4/tcp/80", "0401020304060050"),
        ("/ip4/127.0.0.1/udp/65535", "047f0000019102ffff"),
        ("/ip6/::1/dccp/1", "29" + "00" * 15 + "01" + "210001"),
        ("/ip6zone/eth0/ip6/fe80::1", "2a0465746830" + "29fe80" + "00" * 13 + "01"),
        ("/dns/a.b", "3503612e62"),
        ("/dns4/a.b", "3603612e62"),
        ("/dns6/a.b", "3703612e62"),
        ("/dnsaddr/a.b", "3803612e62"),
        ("/ip4/1.2.3.4/sctp/5000", "040102030484011388"),
        ("/unix/tmp/a.sock", "90030b2f746d702f612e736f636b"),
        ("/p2p-circuit", "a202"),
        ("/tls/sni/a.b", "c003c10303612e62"),
        ("/noise", "c603"),
        ("/quic", "cc03"),
        ("/quic-v1", "cd03"),
        ("/webtransport", "d103"),
        ("/webrtc-direct", "9802"),
        ("/webrtc", "9902"),
        ("/ws", "dd03"),
        ("/wss", "de03"),
        ("/http", "e003"),
        ("/https", "bb03"),
        (f"/certhash/{CERT_U}", "d20322" + CERT_MH.hex()),
        (f"/p2p/{PEER0}", "a50326" + PeerId.from_string(PEER0).to_bytes().hex()),
    ],
)
def test_each_protocol_round_trips(text, hexbytes):
    ma = Multiaddr(text)
    assert ma.to_bytes().hex() == hexbytes
    assert str(ma) == text
    assert Multiaddr(bytes.fromhex(hexbytes)) == ma
    assert str(Multiaddr(bytes.fromhex(hexbytes))) == text


def test_canonical_forms():
    assert str(Multiaddr("/ip6/2001:0db8:0:0:0:0:0:1/tcp/1")) == "/ip6/2001:db8::1/tcp/1"
    assert str(Multiaddr("/ip6/1:0:0:2:0:0:0:3")) == "/ip6/1:0:0:2::3"  # the longest zero run
    assert str(Multiaddr("/ip6/1:0:0:2:3:0:0:4")) == "/ip6/1::2:3:0:0:4"  # the first of equals
    assert str(Multiaddr("/ip6/1:0:2:3:4:5:6:7")) == "/ip6/1:0:2:3:4:5:6:7"  # no '::' for one
    assert str(Multiaddr("/ip6/::ffff:1.2.3.4")) == "/ip6/::ffff:102:304"  # as js writes it
    assert str(Multiaddr("/ip4/1.2.3.4/tcp/080")) == "/ip4/1.2.3.4/tcp/80"
    assert str(Multiaddr(f"/ipfs/{QM_PEER}")) == f"/p2p/{QM_PEER}"
    assert str(Multiaddr(f"/p2p/{PEER1_CID}")) == f"/p2p/{PEER1}"
    assert str(Multiaddr("/ip4/1.2.3.4/tcp/80/")) == "/ip4/1.2.3.4/tcp/80"
    assert str(Multiaddr("/")) == "/" and Multiaddr("/").to_bytes() == b""
    assert Multiaddr(b"") == Multiaddr("/")


def test_certhash_string_is_kept_as_written_and_bytes_give_base64url():
    as_z = multibase.encode(CERT_MH, "base58btc")
    ma = Multiaddr(f"/ip4/127.0.0.1/udp/1/webrtc-direct/certhash/{as_z}")
    assert ma.value_for("certhash") == as_z
    assert str(ma).endswith(as_z)
    again = Multiaddr(ma.to_bytes())
    assert again == ma and hash(again) == hash(ma)
    assert again.value_for("certhash") == CERT_U


def test_unix_paths():
    ma = Multiaddr("/unix/tmp/p2p.sock")
    assert ma.components() == [("unix", "/tmp/p2p.sock")]
    assert Multiaddr("/unix/%2Ftmp%2Fp2p.sock") == ma  # js-multiaddr 13's form
    # Followed by another component: written js-style, or the path would swallow it.
    with_peer = ma / f"/p2p/{PEER0}"
    assert str(with_peer) == f"/unix/%2Ftmp%2Fp2p.sock/p2p/{PEER0}"
    assert Multiaddr(str(with_peer)) == with_peer
    # go-style: the rest of the string is the path.
    assert Multiaddr(f"/unix/a/p2p/{PEER0}").components() == [("unix", f"/a/p2p/{PEER0}")]
    for path in ["/a b/c", "/dir/", "/%2Fodd", "/x//y", "/ü/ß"]:
        comp = b"\x90\x03" + encode_uvarint(len(path.encode())) + path.encode()
        ma = Multiaddr(comp)
        assert ma.components() == [("unix", path)]
        assert Multiaddr(str(ma)) == ma, str(ma)


def test_components_and_accessors():
    ma = Multiaddr(f"/ip4/127.0.0.1/tcp/4001/ws/p2p/{PEER0}/p2p-circuit/webrtc/p2p/{PEER1}")
    assert ma.components() == [
        ("ip4", "127.0.0.1"),
        ("tcp", "4001"),
        ("ws", None),
        ("p2p", PEER0),
        ("p2p-circuit", None),
        ("webrtc", None),
        ("p2p", PEER1),
    ]
    assert ma.protocols() == ["ip4", "tcp", "ws", "p2p", "p2p-circuit", "webrtc", "p2p"]
    assert ma.value_for("p2p") == PEER0  # the first occurrence
    assert ma.value_for("ws") is None and ma.value_for("udp") is None
    assert ma.has("webrtc") and not ma.has("udp")
    assert ma.peer_id() == PeerId.from_string(PEER1)  # the last one
    assert bytes(ma) == ma.to_bytes()
    assert repr(ma) == f"Multiaddr({str(ma)!r})"
    assert Multiaddr(ma) == ma
    assert Multiaddr(bytearray(ma.to_bytes())) == ma
    assert Multiaddr(memoryview(ma.to_bytes())) == ma
    assert Multiaddr.from_string(str(ma)) == ma == Multiaddr.from_bytes(ma.to_bytes())
    assert {ma, Multiaddr(str(ma))} == {ma}
    assert ma != str(ma)


def test_encapsulate_and_decapsulate():
    relay = Multiaddr(f"/ip4/127.0.0.1/tcp/4884/p2p/{PEER0}")
    circuit = relay.encapsulate("/p2p-circuit/webrtc") / f"/p2p/{PEER1}"
    assert str(circuit) == f"/ip4/127.0.0.1/tcp/4884/p2p/{PEER0}/p2p-circuit/webrtc/p2p/{PEER1}"
    assert relay / Multiaddr("/p2p-circuit") == relay.encapsulate("/p2p-circuit")
    assert circuit.decapsulate("p2p-circuit") == relay
    assert circuit.decapsulate("/p2p-circuit") == relay
    assert circuit.decapsulate(Multiaddr("/p2p-circuit/webrtc")) == relay
    assert circuit.decapsulate("p2p") == relay / "/p2p-circuit/webrtc"  # the last /p2p
    assert circuit.decapsulate(f"/p2p/{PEER0}") == Multiaddr("/ip4/127.0.0.1/tcp/4884")
    assert circuit.decapsulate("ip4") == Multiaddr("/")
    assert circuit.decapsulate("udp") == circuit  # absent: unchanged, as in go
    assert circuit.decapsulate("/tcp/4885") == circuit
    assert circuit.decapsulate("/") == circuit
    with pytest.raises(MultiaddrError, match="unknown protocol"):
        circuit.decapsulate("nope")


def test_peer_id_helpers():
    base = Multiaddr("/ip4/1.2.3.4/tcp/1")
    pid = PeerId.from_string(PEER0)
    assert base.peer_id() is None
    assert base.without_peer_id() == base
    full = base.with_peer_id(pid)
    assert str(full) == f"/ip4/1.2.3.4/tcp/1/p2p/{PEER0}"
    assert base.with_peer_id(PEER0) == full
    assert full.with_peer_id(pid) == full
    assert full.peer_id() == pid
    assert full.without_peer_id() == base
    with pytest.raises(MultiaddrError, match="different peer id"):
        full.with_peer_id(PEER1)
    relay_only = full / "/p2p-circuit"
    assert relay_only.without_peer_id() == relay_only
    assert relay_only.peer_id() == pid
    assert str(relay_only.with_peer_id(PEER1)).endswith(f"/p2p-circuit/p2p/{PEER1}")
    seven = Identity.from_seed(7).peer_id
    assert Multiaddr(f"/p2p/{seven}").peer_id() == seven


# --- errors --------------------------------------------------------------------------------


def test_error_type():
    assert issubclass(MultiaddrError, ValueError) and issubclass(MultiaddrError, ProtocolError)
    with pytest.raises(TypeError):
        Multiaddr(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Multiaddr.from_bytes("/ip4/1.2.3.4")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Multiaddr.from_string(b"\x04")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,message",
    [
        ("/foo/1", "unknown protocol 'foo' in '/foo/1'"),
        ("/memory/1", "unknown protocol 'memory'"),
        ("", "must start with '/'"),
        ("ip4/1.2.3.4", "must start with '/'"),
        ("//ip4/1.2.3.4", "empty protocol name"),
        ("/ip4/1.2.3.4//tcp/1", "empty protocol name"),
        ("/ip4", "'ip4' is missing its value"),
        ("/ip4/", "'ip4' is missing its value"),
        ("/tcp", "'tcp' is missing its value"),
        ("/ip4/1.2.3.4/tcp/65536", "invalid tcp port '65536'"),
        ("/ip4/1.2.3.4/udp/-1", "invalid udp port '-1'"),
        ("/ip4/1.2.3.4/udp/+1", "invalid udp port"),
        ("/ip4/1.2.3.4/tcp/1e3", "invalid tcp port"),
        ("/ip4/1.2.3.4/tcp/\u0661", "invalid tcp port"),  # an Arabic-Indic digit
        ("/ip4/1.2.3.4/tcp/0000080", "invalid tcp port"),
        ("/ip4/1.2.3", "invalid IPv4 address '1.2.3'"),
        ("/ip4/256.1.1.1", "invalid IPv4 address"),
        ("/ip4/01.2.3.4", "invalid IPv4 address"),
        ("/ip4/::1", "invalid IPv4 address"),
        ("/ip6/1.2.3.4", "invalid IPv6 address"),
        ("/ip6/1:2:3:4:5:6:7:8:9", "invalid IPv6 address"),
        ("/ip6/fe80::1%eth0", "use /ip6zone"),
        ("/p2p/Qmnotapeerid", "invalid p2p value"),
        ("/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXT", "invalid p2p value"),
        ("/p2p/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "invalid p2p value"),
        ("/certhash/uEiD!!", "invalid certhash"),
        ("/certhash/xyz", "invalid certhash"),
        ("/certhash/uAA", "certhash is not a multihash"),
        ("/certhash/" + multibase.encode(b"\x12\x20abc", "base64url"), "length does not match"),
        ("/unix/", "'unix' is missing its value"),
        ("/unix/%2F%ff", "not UTF-8"),
        ("/dns/\ud800", "not valid Unicode"),
        ("/ip4/1.2.3.4/tcp/80/ip4/" + "x" * 5000, "longer than"),
        ("/dns/" + "a" * (MAX_MULTIADDR_BYTES), "longer than"),
    ],
)
def test_bad_strings(text, message):
    with pytest.raises(MultiaddrError) as info:
        Multiaddr(text)
    assert message in str(info.value)


def _component(code: int, value: bytes, fixed: bool = False) -> bytes:
    return encode_uvarint(code) + (value if fixed else encode_uvarint(len(value)) + value)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"\x04\x01\x02\x03", "truncated inside the ip4 value"),
        (b"\x06\x00", "truncated inside the tcp value"),
        (b"\x29" + bytes(15), "truncated inside the ip6 value"),
        (b"\x80", "truncated inside a protocol code"),
        (b"\x84\x00", "bad protocol code"),  # not minimal
        (b"\xff" * 10, "bad protocol code"),
        (b"\x35", "truncated inside a dns value length"),
        (b"\x35\x05abc", "truncated inside the dns value"),
        (b"\x35\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "truncated inside the dns value"),
        (b"\x00", "unknown protocol code 0"),
        (b"\x89\x06", "unknown protocol code 777"),  # memory is left out
        (_component(53, b""), "dns value is empty"),
        (_component(53, b"a/b"), "contains '/'"),
        (_component(449, b"\xff"), "sni value is not UTF-8"),
        (_component(400, b"tmp/sock"), "not absolute"),
        (_component(421, b"\x12\x20" + bytes(31)), "invalid p2p value"),
        (_component(421, b"\x13\x20" + bytes(32)), "invalid p2p value"),
        (_component(421, b""), "invalid p2p value"),
        (_component(466, b""), "certhash is not a multihash"),
        (_component(466, b"\x12\x20abc"), "length does not match"),
        (_component(53, b"a" * MAX_MULTIADDR_BYTES), "longer than"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(MultiaddrError) as info:
        Multiaddr(data)
    assert message in str(info.value)


def test_size_limit():
    name = "a" * (MAX_MULTIADDR_BYTES - 10)
    ma = Multiaddr(f"/dns/{name}")
    assert len(ma.to_bytes()) <= MAX_MULTIADDR_BYTES
    with pytest.raises(MultiaddrError, match="longer than"):
        ma / f"/p2p/{PEER0}"
    with pytest.raises(MultiaddrError, match="longer than"):
        Multiaddr(f"/dns/{name}/p2p/{PEER0}")


@pytest.mark.parametrize("pair", VECTORS["pairs"], ids=lambda p: p["input"][:60])
def test_every_truncation_of_a_vector_is_refused_or_a_prefix(pair):
    data = bytes.fromhex(pair["hex"])
    full = Multiaddr(data)
    for cut in range(len(data)):
        try:
            part = Multiaddr(data[:cut])
        except MultiaddrError:
            continue
        assert full.to_bytes().startswith(part.to_bytes())
        assert len(part.protocols()) < len(full.protocols())


# --- properties ----------------------------------------------------------------------------

_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/"),
    min_size=1,
    max_size=20,
)
_peer_ids = st.one_of(
    st.integers(0, 255).map(lambda n: str(Identity.from_seed(n).peer_id)),
    st.binary(min_size=32, max_size=32).map(lambda d: PeerId(b"\x12\x20" + d).to_base58()),
)
_certhashes = st.tuples(
    st.binary(min_size=0, max_size=64),
    st.sampled_from(["base58btc", "base32", "base64url", "base16"]),
).map(lambda t: multibase.encode(bytes((0x12, len(t[0]))) + t[0], t[1]))
_paths = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), max_size=8
    ),
    min_size=1,
    max_size=4,
).map(lambda segs: "/" + "/".join(segs))

_component_strings = st.one_of(
    st.ip_addresses(v=4).map(lambda a: f"/ip4/{a}"),
    st.ip_addresses(v=6).map(lambda a: f"/ip6/{a}"),
    st.tuples(st.sampled_from(["tcp", "udp", "dccp", "sctp"]), st.integers(0, 65535)).map(
        lambda t: f"/{t[0]}/{t[1]}"
    ),
    st.tuples(st.sampled_from(["dns", "dns4", "dns6", "dnsaddr", "sni", "ip6zone"]), _names).map(
        lambda t: f"/{t[0]}/{t[1]}"
    ),
    _peer_ids.map(lambda p: f"/p2p/{p}"),
    _certhashes.map(lambda c: f"/certhash/{c}"),
    st.sampled_from(
        [f"/{n}" for n, p in _BY_NAME.items() if p.kind == "none"]
    ),
)


@st.composite
def _multiaddr_strings(draw):
    parts = draw(st.lists(_component_strings, max_size=8))
    text = "".join(parts)
    if draw(st.booleans()):  # a unix path takes the rest of a go-style string
        text += "/unix" + draw(
            _paths.filter(lambda p: not p.endswith("/") and p[1:4].upper() != "%2F")
        )
    return text or "/"


@settings(max_examples=150, deadline=None)
@given(_multiaddr_strings())
def test_valid_multiaddrs_round_trip(text):
    ma = Multiaddr(text)
    decoded = Multiaddr.from_bytes(ma.to_bytes())
    assert decoded == ma
    assert Multiaddr(str(ma)) == ma
    assert Multiaddr(str(decoded)) == ma
    assert str(Multiaddr(str(decoded))) == str(decoded)
    assert [n for n, _ in ma.components()] == ma.protocols()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_multiaddr_error(data):
    try:
        ma = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return
    assert ma.to_bytes() == data
    assert Multiaddr(str(ma)) == ma


@st.composite
def _component_bytes(draw):
    """Components with a known code and an arbitrary value: reaches the value checks."""
    proto = draw(st.sampled_from(sorted(set(_BY_NAME.values()), key=lambda p: p.code)))
    size = _FIXED_SIZE.get(proto.kind)
    if size is not None:
        return encode_uvarint(proto.code) + draw(st.binary(min_size=size, max_size=size))
    value = draw(
        st.one_of(
            st.binary(max_size=40),
            _names.map(lambda s: s.encode()),
            st.binary(max_size=40).map(lambda d: bytes((0x12, len(d))) + d),
            _paths.map(lambda s: s.encode()),
        )
    )
    return encode_uvarint(proto.code) + encode_uvarint(len(value)) + value


@settings(max_examples=150, deadline=None)
@given(st.lists(_component_bytes(), max_size=6), st.integers(0, 400), st.binary(max_size=3))
def test_structured_bytes_round_trip_or_raise(parts, cut, junk):
    data = b"".join(parts)
    for candidate in (data, data[:cut] + junk):
        try:
            ma = Multiaddr.from_bytes(candidate)
        except MultiaddrError:
            continue
        assert ma.to_bytes() == candidate
        assert Multiaddr(str(ma)) == ma


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_random_strings_only_raise_multiaddr_error(text):
    try:
        ma = Multiaddr(text)
    except MultiaddrError:
        return
    assert Multiaddr(ma.to_bytes()) == ma


def test_relay_peer_of_a_circuit_address():
    relay, dest = ("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
                   "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
    circuit = Multiaddr(f"/ip4/198.51.100.7/tcp/4001/p2p/{relay}/p2p-circuit/webrtc/p2p/{dest}")
    assert str(circuit.relay_peer()) == relay and str(circuit.peer_id()) == dest
    assert Multiaddr(f"/ip4/198.51.100.7/tcp/4001/p2p/{relay}").relay_peer() is None
