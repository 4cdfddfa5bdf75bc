"""ACME end to end against pebble (Let's Encrypt's test CA, built from the Go module proxy) on
loopback: `p2prtc web --acme-domain` gets a certificate over http-01 and serves https with it; a
renewal reaches new connections without a restart; a failed validation says why."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from cryptography import x509

from p2prtc.acme import AcmeCertificates, AcmeFailure
from p2prtc.web.acme_server import start_acme
from p2prtc.web.app import WebConfig, WebServer

from ..pebble import Pebble, PebbleMissing
from .webpage import Cli, free_port


@pytest.fixture
async def pebble_factory(tmp_path):
    started: list[Pebble] = []

    async def make(http_port: int, **kw) -> Pebble:
        p = Pebble(tmp_path / f"pebble{len(started)}", http_port=http_port, **kw)
        try:
            await p.__aenter__()
        except PebbleMissing as e:
            pytest.fail(str(e), pytrace=False)
        started.append(p)
        return p

    yield make
    for p in started:
        await p.__aexit__(None, None, None)


async def served_cert(port: int, roots_file: str, name: str) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=roots_file)
    _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    try:
        return x509.load_der_x509_certificate(
            w.get_extra_info("ssl_object").getpeercert(binary_form=True))
    finally:
        w.close()


async def test_web_gets_a_certificate_and_serves_https(pebble_factory, tmp_path):
    http_port = free_port("127.0.0.1")
    pebble = await pebble_factory(http_port)
    web = await Cli("web", "--host", "127.0.0.1", "--port", "0", "--json",
                    "--acme-domain", "chat.test", "--acme-email", "ops@chat.test",
                    "--acme-directory", pebble.directory, "--acme-ca", pebble.ca_file,
                    "--acme-http-port", str(http_port), "--acme-dir", str(tmp_path / "acme"),
                    name="web").start()
    try:
        try:
            ev = await web.wait_event("listening", timeout=60)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{pebble.describe()}") from None
        assert ev["acme"]["domains"] == ["chat.test"] and ev["acme"]["http_port"] == http_port
        port = ev["port"]
        roots = tmp_path / "pebble-roots.pem"
        roots.write_text(await pebble.roots_pem())
        cert = await served_cert(port, str(roots), "chat.test")
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["chat.test"]
        # the page itself, over https, trusted through pebble's root only
        async with aiohttp.ClientSession() as s:
            ctx = ssl.create_default_context(cafile=str(roots))
            async with s.get(f"https://127.0.0.1:{port}/config.json", ssl=ctx,
                             server_hostname="chat.test") as r:
                assert r.status == 200
            # plain http: challenges only, everything else goes to https
            async with s.get(f"http://127.0.0.1:{http_port}/x?y=1", allow_redirects=False,
                             headers={"Host": "chat.test"}) as r:
                assert r.status == 301 and r.headers["Location"] == f"https://chat.test:{port}/x?y=1"
            async with s.get(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/nope") as r:
                assert r.status == 404
        assert (tmp_path / "acme" / "account.key").stat().st_mode & 0o077 == 0
        assert (tmp_path / "acme" / "privkey.pem").stat().st_mode & 0o077 == 0
    finally:
        assert await web.interrupt() == 0

    # a second start reuses the certificate (no order: pebble is gone)
    await pebble.__aexit__(None, None, None)
    web = await Cli("web", "--host", "127.0.0.1", "--port", "0", "--json",
                    "--acme-domain", "chat.test", "--acme-directory", pebble.directory,
                    "--acme-http-port", str(http_port), "--acme-dir", str(tmp_path / "acme"),
                    name="web again").start()
    try:
        ev = await web.wait_event("listening", timeout=30)
        assert (await served_cert(ev["port"], str(roots), "chat.test")).serial_number == \
            cert.serial_number
    finally:
        assert await web.interrupt() == 0


async def test_renewal_reaches_new_connections_without_a_restart(pebble_factory, tmp_path):
    http_port = free_port("127.0.0.1")
    # 6-day certificates (Let's Encrypt's "shortlived"): renewed with a third left, 2 days
    pebble = await pebble_factory(http_port, validity_seconds=6 * 86400)
    acme = AcmeCertificates(["chat.test"], None, tmp_path / "acme", directory=pebble.directory,
                            ca_file=pebble.ca_file)
    running = await start_acme(acme, "127.0.0.1", http_port, 0)
    server = WebServer(WebConfig(), tls=running.certificate)
    port = await server.start("127.0.0.1", 0)
    try:
        roots = tmp_path / "roots.pem"
        roots.write_text(await pebble.roots_pem())
        first = await served_cert(port, str(roots), "chat.test")
        import datetime

        due = acme.renew_time()
        expected = first.not_valid_after_utc - datetime.timedelta(days=2)
        assert abs((due - expected).total_seconds()) < 2, (due, expected)
        assert not acme.needs_certificate() and acme.needs_certificate(now=due)
        running.certificate.check_interval = 0
        await acme.obtain()  # what keep_renewed does when it is due
        second = await served_cert(port, str(roots), "chat.test")
        assert second.serial_number != first.serial_number
        assert acme.obtained == 2 and running.certificate.reloads == 1
    finally:
        await server.close()
        await running.close()


async def test_failed_validation_says_why(pebble_factory, tmp_path):
    http_port = free_port("127.0.0.1")
    # pebble checks the name on an address where nothing answers the challenge
    pebble = await pebble_factory(http_port, answer_ip="127.0.0.2")
    acme = AcmeCertificates(["chat.test"], None, tmp_path / "acme", directory=pebble.directory,
                            ca_file=pebble.ca_file)
    with pytest.raises(AcmeFailure, match=r"chat\.test: validation failed: .*"):
        running = await start_acme(acme, "127.0.0.1", http_port, 443)
        await running.close()
    assert acme.expires() is None
    # no reachable ACME server: one line saying so
    gone = AcmeCertificates(["chat.test"], None, tmp_path / "gone",
                            directory=f"https://127.0.0.1:{free_port('127.0.0.1')}/dir")
    with pytest.raises(AcmeFailure, match="cannot reach"):
        await gone.obtain()

