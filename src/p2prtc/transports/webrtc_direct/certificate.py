"""The listener's DTLS certificate, derived from the libp2p identity, and fingerprint helpers.

The certificate's SHA-256 is in our `/webrtc-direct/certhash/...` address, so it must not change
across restarts or the address printed yesterday stops working. Instead of a second key file
we derive it: the ECDSA P-256 key from the identity key with HKDF, fixed validity dates, serial
and subject, and a deterministic (RFC 6979) signature. Same identity (same key file, same
`--secret-key-seed`) -> byte-identical certificate -> same address. P-256 because browsers
only take ECDSA P-256 (js-libp2p and rust-libp2p generate the same). Validity: from 2000 to
9999-12-31 (RFC 5280's "no well-defined expiration"): WebRTC checks fingerprints, never dates,
and rust-libp2p's certificates (rcgen defaults) run to the year 4096 as well.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ...errors import ProtocolError
from ...identity import Identity
from ...multibase import MultibaseError, decode as multibase_decode, encode as multibase_encode

if TYPE_CHECKING:
    from aiortc import RTCCertificate

log = logging.getLogger(__name__)

MULTIHASH_SHA256 = 0x12
SHA256_LEN = 32
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HKDF_SALT = b"p2prtc webrtc-direct certificate"
_HKDF_INFO = b"ecdsa-p256 v1"
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def sha256_multihash(digest: bytes) -> bytes:
    return bytes((MULTIHASH_SHA256, SHA256_LEN)) + digest


def certhash(digest: bytes) -> str:
    """The `/certhash` value: multibase base64url of the sha2-256 multihash."""
    return multibase_encode(sha256_multihash(digest), "base64url")


def digest_from_certhash(text: str) -> bytes:
    """The SHA-256 fingerprint in a `/certhash` value (any multibase; sha2-256 only)."""
    try:
        mh = multibase_decode(text)
    except MultibaseError as e:
        raise ProtocolError(f"certhash {text!r} is not multibase: {e}") from None
    if len(mh) != 2 + SHA256_LEN or mh[0] != MULTIHASH_SHA256 or mh[1] != SHA256_LEN:
        raise ProtocolError(f"certhash {text!r} is not a sha2-256 multihash (the only hash the "
                            "spec requires and the only one we support)")
    return mh[2:]


def sdp_fingerprint(digest: bytes) -> str:
    """`AB:CD:...` as in an SDP `a=fingerprint:sha-256` line."""
    return ":".join(f"{b:02X}" for b in digest)


def noise_prologue(client_digest: bytes, server_digest: bytes) -> bytes:
    """webrtc-direct.md "Connection Security": prefix + client (Noise responder) fingerprint +
    server (Noise initiator) fingerprint, each as a multihash."""
    return b"libp2p-webrtc-noise:" + sha256_multihash(client_digest) + sha256_multihash(server_digest)


@dataclass(frozen=True)
class DtlsCertificate:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.der).digest()

    @property
    def certhash(self) -> str:
        return certhash(self.digest)

    def rtc_certificate(self) -> RTCCertificate:
        from aiortc import RTCCertificate

        return RTCCertificate(key=self.key, cert=self.cert)


def _derive_key(identity: Identity) -> ec.EllipticCurvePrivateKey:
    # 48 bytes reduced mod n: negligible bias (FIPS 186-5 A.2.1 style extra bits).
    okm = HKDF(hashes.SHA256(), 48, _HKDF_SALT, _HKDF_INFO).derive(identity.private_bytes())
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _build(key: ec.EllipticCurvePrivateKey, deterministic: bool) -> x509.Certificate:
    pub = key.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "libp2p webrtc-direct")])
    serial = int.from_bytes(hashlib.sha256(pub).digest()[:16], "big") >> 1 or 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
    )
    if deterministic:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return builder.sign(key, hashes.SHA256())


_cache: dict[bytes, DtlsCertificate] = {}


def certificate_for(identity: Identity, *, cached: bool = True) -> DtlsCertificate:
    """The listener certificate of `identity` (the same bytes every time); derived once per
    process unless `cached` is False (derived again: tests check it comes out the same)."""
    if not cached:
        return _derive_certificate(identity)
    private = identity.private_bytes()
    cached_cert = _cache.get(private)
    if cached_cert is None:
        cached_cert = _cache[private] = _derive_certificate(identity)
    return cached_cert


def _derive_certificate(identity: Identity) -> DtlsCertificate:
    key = _derive_key(identity)
    try:
        cert = _build(key, deterministic=True)
    except Exception as e:  # OpenSSL without RFC 6979 support (cryptography >= 44 needs 3.2+)
        log.warning("deterministic ECDSA unavailable (%s): the webrtc-direct certhash will "
                    "change on every restart", e)
        cert = _build(key, deterministic=False)
    return DtlsCertificate(key, cert)


def ephemeral_certificate() -> DtlsCertificate:
    """A fresh certificate for one outgoing connection (the spec asks clients not to reuse one,
    so on-path observers cannot link a client's connections)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return DtlsCertificate(key, _build(key, deterministic=False))
