"""TLS for the WebSocket listener (`/tls/ws`) and the web server (https), and trust for dialers.

Servers: `ReloadingCertificate` holds a server SSLContext built from a certificate chain and key
file pair and notices when the files change (certbot renews in place: the `live/` symlinks move to
new `archive/` files), so new connections get the new certificate with no restart. The listening
socket keeps one SSLContext for its whole life; its `sni_callback`, which OpenSSL calls on every
ClientHello (with or without SNI), checks the files at most every `CERT_CHECK_INTERVAL` seconds
and hands the handshake the current context. Connections already open keep the one they started
with. A pair that does not load (e.g. the certificate renewed but the key not yet written) keeps
the old certificate, logs why once, and is tried again when the files change again.

Dialers: `client_context(ca_file)` trusts the system's CAs (and `SSL_CERT_FILE` / `SSL_CERT_DIR`,
which OpenSSL reads) or, with a CA file (`--tls-ca`), that file as well.
"""

from __future__ import annotations

import logging
import os
import ssl
import time

log = logging.getLogger(__name__)

# How often (at most) a handshake triggers a look at the certificate files: two stat() calls.
# certbot renews 30 days before expiry, so a minute's delay is nothing; our tests set 0.
CERT_CHECK_INTERVAL = 60.0


class CertificateError(ValueError):
    """A certificate/key pair that cannot be loaded (at start: a usage error)."""


# (device, inode, mtime, size): changes when a file is replaced or rewritten
_FileSignature = tuple[int, int, int, int]


def _signature(path: str) -> _FileSignature:
    st = os.stat(path)  # follows symlinks: a renewal changes the target's inode and mtime
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _server_context(cert_file: str, key_file: str, alpn: list[str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise CertificateError(f"cannot load the TLS certificate {cert_file} with key {key_file}: "
                               f"{getattr(e, 'strerror', None) or e}") from None
    return ctx


class ReloadingCertificate:
    """A server SSLContext for `cert_file`/`key_file` that follows changes to the files."""

    def __init__(self, cert_file: str, key_file: str, *,
                 check_interval: float = CERT_CHECK_INTERVAL,
                 alpn: list[str] | None = None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.check_interval = check_interval
        self._alpn = alpn
        self.reloads = 0  # how many times a changed pair was loaded
        self._sig: tuple[_FileSignature, _FileSignature] | None = self._signatures()
        self._current = _server_context(cert_file, key_file, alpn)
        self.not_after = _not_after(cert_file)  # Unix time the certificate in use expires
        self._checked = time.monotonic()
        # The context the listening socket is created with: it only dispatches to the current one.
        self.context = _server_context(cert_file, key_file, alpn)
        self.context.sni_callback = self._on_client_hello

    def _signatures(self) -> tuple[_FileSignature, _FileSignature]:
        try:
            return _signature(self.cert_file), _signature(self.key_file)
        except OSError as e:
            raise CertificateError(f"cannot read the TLS certificate or key: {e}") from None

    def check(self) -> bool:
        """Load the files again if they changed; True when a new certificate is now in use."""
        self._checked = time.monotonic()
        try:
            sig = self._signatures()
        except CertificateError as e:
            if self._sig is not None:
                log.warning("%s; keeping the certificate in use", e)
                self._sig = None
            return False
        if sig == self._sig:
            return False
        self._sig = sig  # a pair that fails to load is retried only once the files change again
        try:
            ctx = _server_context(self.cert_file, self.key_file, self._alpn)
        except CertificateError as e:
            log.warning("%s; keeping the certificate in use", e)
            return False
        self._current = ctx
        self.not_after = _not_after(self.cert_file)
        self.reloads += 1
        log.info("TLS certificate %s reloaded", self.cert_file)
        return True

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def maybe_check(self) -> None:
        """check(), at most every `check_interval` (each handshake and metrics scrape asks)."""
        if time.monotonic() - self._checked >= self.check_interval:
            self.check()

    def _on_client_hello(
        self, ssl_obj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        self.maybe_check()
        ssl_obj.context = self._current
        return None


def _not_after(cert_file: str) -> float | None:
    """Expiry (Unix time) of the first certificate in a PEM chain file; None if unreadable."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verify servers against the system store (and SSL_CERT_FILE), plus `ca_file` if given."""
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise CertificateError(f"cannot load the CA file {ca_file}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
    return ctx
