"""Certificates without a separate tool: ACME (RFC 8555) http-01 with `aioacme` (asyncio, httpx).

`AcmeCertificates` keeps an account key, a certificate and its key in a state directory
(`account.key`, `fullchain.pem`, `privkey.pem`, the names certbot uses), obtains a certificate
for its domains when there is none or it expires within `RENEW_BEFORE`, and answers the
http-01 challenges at `/.well-known/acme-challenge/<token>` (`challenge_response`), which the web
server serves on its plain-http port. The TLS servers read the files through
`transports.tls.ReloadingCertificate`, so a renewal reaches new connections with no restart.

The ACME server's answers are network input: a failed order ends that attempt with an
`AcmeFailure` naming the server's reason, retried after `RETRY_AFTER_FAILURE`; it never ends the
process once a certificate is in use.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    import aioacme  # optional (p2prtc[acme]): imported where used

log = logging.getLogger(__name__)

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# Let's Encrypt's advice: renew when a third of the lifetime is left (30 days of 90; 2 days of a
# 6-day "shortlived" certificate), and never later than this before expiry.
RENEW_BEFORE = datetime.timedelta(days=30)
# How often the renewal task looks at the certificate's expiry (certbot's timer: twice a day).
CHECK_INTERVAL = 12 * 3600.0
# After a failed attempt (server down, challenge failed), try again after this long.
RETRY_AFTER_FAILURE = 3600.0
# How long one order may take (validation and issuance) and how often we poll its state.
ORDER_TIMEOUT = 120.0
POLL_INTERVAL = 0.5
# Challenge tokens are base64url (RFC 8555 8.3: at least 128 bits); we refuse anything else.
MAX_TOKEN_LENGTH = 256


class AcmeFailure(RuntimeError):
    """An order that did not give a certificate, with the ACME server's reason."""


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint of a P-256 account key (the second half of a key authorization)."""
    nums = key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64u(nums.x.to_bytes(32, "big")),
           "y": _b64u(nums.y.to_bytes(32, "big"))}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    return _b64u(hashlib.sha256(canonical).digest())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class AcmeCertificates:
    def __init__(self, domains: list[str], email: str | None, state_dir: str | Path, *,
                 directory: str = LETS_ENCRYPT, ca_file: str | None = None) -> None:
        if not domains:
            raise ValueError("ACME needs at least one domain")
        self.domains = list(dict.fromkeys(d.lower().rstrip(".") for d in domains))
        self.email = email
        self.directory = directory
        self.dir = Path(state_dir)
        self.cert_file = self.dir / "fullchain.pem"
        self.key_file = self.dir / "privkey.pem"
        self._ssl: ssl.SSLContext = ssl.create_default_context()
        if ca_file:  # the ACME server's own TLS (pebble's test CA in tests)
            self._ssl.load_verify_locations(cafile=ca_file)
        self._tokens: dict[str, str] = {}  # token -> key authorization, while an order runs
        self.obtained = 0

    # -- state ---------------------------------------------------------------------------------

    def expires(self) -> datetime.datetime | None:
        """When the certificate on disk expires (None: none, unreadable, or for other names)."""
        cert = self._certificate()
        return cert.not_valid_after_utc if cert is not None else None

    def renew_time(self) -> datetime.datetime | None:
        """When to renew the certificate on disk (None: there is none to renew, get one)."""
        cert = self._certificate()
        if cert is None:
            return None
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        return cert.not_valid_after_utc - min(RENEW_BEFORE, lifetime / 3)

    def _certificate(self) -> x509.Certificate | None:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            self.key_file.stat()
        except (OSError, ValueError):
            return None
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = {n.lower() for n in sans.value.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            names = set()
        if not set(self.domains) <= names:
            return None
        return cert

    def needs_certificate(self, now: datetime.datetime | None = None) -> bool:
        due = self.renew_time()
        return due is None or (now or datetime.datetime.now(datetime.UTC)) >= due

    def _account_key(self) -> ec.EllipticCurvePrivateKey:
        path = self.dir / "account.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
            log.warning("%s is not an EC key: making a new ACME account key", path)
        except FileNotFoundError:
            pass
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(path, _key_pem(key))
        return key

    # -- http-01 -------------------------------------------------------------------------------

    def challenge_response(self, token: str) -> str | None:
        """The key authorization for `token` while its order runs, else None (answer 404)."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        return self._tokens.get(token)

    # -- ordering ------------------------------------------------------------------------------

    async def obtain(self) -> None:
        """Order a certificate for our domains and write it (and its new key) to the state dir."""
        import aioacme

        self.dir.mkdir(parents=True, exist_ok=True)
        account_key = self._account_key()
        thumb = jwk_thumbprint(account_key)
        client = aioacme.Client(account_key=account_key, directory_url=self.directory,
                                ssl=self._ssl)
        try:
            await asyncio.wait_for(self._order(client, thumb), ORDER_TIMEOUT)
        except TimeoutError:
            raise AcmeFailure(f"no certificate from {self.directory} within "
                              f"{ORDER_TIMEOUT:.0f} s") from None
        except aioacme.AcmeError as e:
            raise AcmeFailure(f"{self.directory}: {e}") from None
        except OSError as e:
            raise AcmeFailure(f"cannot reach {self.directory}: {e}") from None
        except Exception as e:  # httpx's errors are not OSErrors
            if type(e).__module__.startswith(("httpx", "httpcore")):
                raise AcmeFailure(f"cannot reach {self.directory}: {e}") from None
            raise
        finally:
            self._tokens.clear()
            await client.close()

    async def _order(self, client: aioacme.Client, thumb: str) -> None:
        import aioacme

        await client.get_account()
        if self.email:
            await client.update_account(contact=[f"mailto:{self.email}"])
        order = await client.new_order([aioacme.Identifier(value=d) for d in self.domains])
        for uri in order.authorizations:
            authz = await client.get_authorization(uri)
            if authz.status == aioacme.AuthorizationStatus.valid:
                continue
            ch = next((c for c in authz.challenges
                       if c.type == aioacme.ChallengeType.http01), None)
            if ch is None:
                raise AcmeFailure(f"{authz.identifier.value}: the server offers no http-01 "
                                  "challenge")
            self._tokens[ch.token] = f"{ch.token}.{thumb}"
            await client.answer_challenge(ch.url)
            while authz.status == aioacme.AuthorizationStatus.pending:
                await asyncio.sleep(POLL_INTERVAL)
                authz = await client.get_authorization(uri)
            # a fresh name: mypy would keep authz.status narrowed by the `continue` above
            final: aioacme.Authorization = authz
            if final.status != aioacme.AuthorizationStatus.valid:
                why = next((c.error.detail for c in authz.challenges if c.error is not None),
                           authz.status.value)
                raise AcmeFailure(f"{authz.identifier.value}: validation failed: {why}")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.domains[0])]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in self.domains]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        order = await client.finalize_order(order.finalize, csr)
        while order.status in (aioacme.OrderStatus.pending, aioacme.OrderStatus.ready,
                               aioacme.OrderStatus.processing):
            await asyncio.sleep(POLL_INTERVAL)
            order = await client.get_order(order.uri)
        if order.status != aioacme.OrderStatus.valid or not order.certificate:
            raise AcmeFailure(f"order ended {order.status.value}: "
                              f"{order.error.detail if order.error else 'no certificate'}")
        pem = await client.get_certificate(order.certificate)
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError as e:
            raise AcmeFailure(f"the server sent no PEM certificate chain: {e}") from None
        # key first: a reader that sees the new key with the old certificate keeps the old pair
        # and loads the new one once the certificate follows (transports/tls.py)
        _write_private(self.key_file, _key_pem(key))
        tmp = self.cert_file.with_name(self.cert_file.name + ".tmp")
        tmp.write_bytes(pem)
        tmp.replace(self.cert_file)
        self.obtained += 1
        log.info("ACME: certificate for %s from %s, valid until %s", ", ".join(self.domains),
                 self.directory, self.expires())

    async def keep_renewed(self, on_renewed: Callable[[], object]) -> None:
        """Forever: renew when due (`on_renewed()` after each new certificate); failures wait
        RETRY_AFTER_FAILURE and are logged, the certificate in use stays."""
        while True:
            due = self.renew_time()
            now = datetime.datetime.now(datetime.UTC)
            wait = CHECK_INTERVAL if due is None else \
                max(1.0, min(CHECK_INTERVAL, (due - now).total_seconds()))
            if self.needs_certificate():
                try:
                    await self.obtain()
                    on_renewed()
                except AcmeFailure as e:
                    log.warning("ACME renewal failed (%s); keeping the certificate in use, "
                                "next try in %.0f s", e, RETRY_AFTER_FAILURE)
                    wait = RETRY_AFTER_FAILURE
            await asyncio.sleep(wait)
