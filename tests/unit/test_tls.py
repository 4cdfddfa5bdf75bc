"""TLS: the reloading server certificate, /tls/ws listening and dialling (with a CA made here),
/sni, and `--log-format json`."""

from __future__ import annotations

import asyncio
import json
import logging
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from p2prtc.errors import DialError
from p2prtc.host import Host
from p2prtc.logjson import JsonLogFormatter
from p2prtc.multiaddr import Multiaddr
from p2prtc.protocols.echo import ECHO, handle_echo
from p2prtc.transports.tls import CertificateError, ReloadingCertificate, client_context
from p2prtc.transports.websocket import websocket_transport

from ..tlsca import TestCA


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


async def served_serial(port: int, ca: TestCA, name: str = "127.0.0.1") -> int:
    """The serial number of the certificate a fresh TLS handshake with 127.0.0.1:port gets."""
    ctx = client_context(str(ca.ca_pem))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def tls_server(cert: ReloadingCertificate):
    async def handle(reader, writer):
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=cert.context)
    return server, server.sockets[0].getsockname()[1]


async def test_new_connections_get_a_renewed_certificate_old_ones_stay(ca, caplog):
    first = ca.issue("relay", ["127.0.0.1"])
    cert = ReloadingCertificate(str(first.cert), str(first.key), check_interval=0)
    server, port = await tls_server(cert)
    try:
        assert await served_serial(port, ca) == first.serial
        ctx = client_context(str(ca.ca_pem))
        _r, open_writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)

        second = ca.issue("relay", ["127.0.0.1"])  # same paths, new files (a renewal)
        assert await served_serial(port, ca) == second.serial
        assert cert.reloads == 1
        # the connection made before the renewal is still up, with the old certificate
        assert not open_writer.is_closing()
        old = open_writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert old == first.certificate.public_bytes(Encoding.DER)
        open_writer.close()

        # a half-done renewal (a key that does not fit) keeps the certificate in use, says why
        with caplog.at_level(logging.WARNING, logger="p2prtc.transports.tls"):
            third = ca.issue("other", ["127.0.0.1"])
            second.key.write_bytes(third.key.read_bytes())
            assert await served_serial(port, ca) == second.serial
        assert any("keeping the certificate in use" in r.getMessage() for r in caplog.records)
        # ... and the completed one is picked up
        second.cert.write_bytes(third.cert.read_bytes())
        assert await served_serial(port, ca) == third.serial
        assert cert.reloads == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_files_are_looked_at_at_most_every_interval(ca):
    first = ca.issue("relay", ["127.0.0.1"])
    cert = ReloadingCertificate(str(first.cert), str(first.key), check_interval=3600)
    server, port = await tls_server(cert)
    try:
        ca.issue("relay", ["127.0.0.1"])
        assert await served_serial(port, ca) == first.serial  # not looked at yet
        assert cert.check() is True  # the timer's job, done by hand
        assert await served_serial(port, ca) != first.serial
    finally:
        server.close()
        await server.wait_closed()


def test_unusable_files_are_a_clear_error(ca, tmp_path):
    good = ca.issue("relay", ["127.0.0.1"])
    with pytest.raises(CertificateError, match="cannot read the TLS certificate"):
        ReloadingCertificate(str(tmp_path / "missing.pem"), str(good.key))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(CertificateError, match="cannot load the TLS certificate"):
        ReloadingCertificate(str(bad), str(good.key))
    with pytest.raises(CertificateError, match="cannot load the CA file"):
        client_context(str(bad))


async def _tls_ws_pair(ca, hosts, dialer_ca: bool = True):
    issued = ca.issue("relay", hosts)
    server = Host()
    server.handle(ECHO, handle_echo)
    websocket_transport(server.transports).server_tls = ReloadingCertificate(
        str(issued.cert), str(issued.key))
    addrs = await server.listen("/ip4/127.0.0.1/tcp/0/tls/ws")
    client = Host()
    if dialer_ca:
        websocket_transport(client.transports).client_ssl = client_context(str(ca.ca_pem))
    return server, client, addrs


async def echo_once(client: Host, addr: Multiaddr) -> bytes:
    stream = await asyncio.wait_for(client.new_stream(addr, [ECHO]), 10)
    await stream.write(b"over tls")
    await stream.close_write()
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


async def test_tls_ws_listen_and_dial_with_a_ca_file(ca):
    server, client, addrs = await _tls_ws_pair(ca, ["127.0.0.1"])
    try:
        assert [a.protocols() for a in addrs] == [["ip4", "tcp", "tls", "ws"]]
        port = addrs[0].value_for("tcp")
        for text in (f"/ip4/127.0.0.1/tcp/{port}/tls/ws", f"/ip4/127.0.0.1/tcp/{port}/wss"):
            addr = Multiaddr(text).with_peer_id(server.peer_id)
            assert await echo_once(client, addr) == b"over tls"
            for conn in client.connections(server.peer_id):
                await conn.close()
        # the listener saw /tls/ws connections
        assert all(c.local_addr.protocols()[-2:] == ["tls", "ws"]
                   for c in server.connections())
    finally:
        await client.close()
        await server.close()


async def test_sni_names_the_certificate_host(ca):
    server, client, addrs = await _tls_ws_pair(ca, ["relay.test"])  # no IP in the certificate
    try:
        port = addrs[0].value_for("tcp")
        wrong = Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/tls/ws").with_peer_id(server.peer_id)
        with pytest.raises(DialError, match="(?i)certificate"):
            await client.dial(wrong)
        right = Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/tls/sni/relay.test/ws"
                          ).with_peer_id(server.peer_id)
        assert await echo_once(client, right) == b"over tls"
    finally:
        await client.close()
        await server.close()


async def test_untrusted_server_is_refused(ca):
    server, client, addrs = await _tls_ws_pair(ca, ["127.0.0.1"], dialer_ca=False)
    try:
        with pytest.raises(DialError, match="(?i)certificate verify failed"):
            await client.dial(addrs[0].with_peer_id(server.peer_id))
    finally:
        await client.close()
        await server.close()


def test_tls_ws_listen_needs_a_certificate():
    host = Host()
    ws = websocket_transport(host.transports)
    assert not ws.can_listen(Multiaddr("/ip4/127.0.0.1/tcp/0/tls/ws"))
    assert ws.can_listen(Multiaddr("/ip4/127.0.0.1/tcp/0/ws"))
    for text in ("/dns4/relay.test/tcp/443/tls/ws", "/ip4/1.2.3.4/tcp/443/wss",
                 "/ip4/1.2.3.4/tcp/443/tls/sni/relay.test/ws"):
        assert ws.can_dial(Multiaddr(text))


def test_json_log_lines():
    fmt = JsonLogFormatter()
    rec = logging.LogRecord("p2prtc.relay", logging.WARNING, __file__, 1, "two\nlines %s", ("x",),
                            None)
    line = fmt.format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "p2prtc.relay"
    assert doc["message"] == "two\nlines x" and doc["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("p", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(fmt.format(rec))
    assert "ValueError: boom" in doc["exception"]


async def test_ssl_cert_file_is_trusted_without_a_ca_option(ca, monkeypatch):
    """SSL_CERT_FILE (read by OpenSSL when the default store loads) works like --tls-ca."""
    import ssl

    leaf = ca.issue("relay", ["127.0.0.1"])

    async def handshake(ctx):
        cert = ReloadingCertificate(str(leaf.cert), str(leaf.key))
        server, port = await tls_server(cert)
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.close()
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(client_context())
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_pem))
    await handshake(client_context())


async def test_relay_metrics_show_the_certificate_in_use(ca):
    from p2prtc.relay.metrics import RelayMetrics

    first = ca.issue("relay", ["127.0.0.1"], days=1)
    cert = ReloadingCertificate(str(first.cert), str(first.key), check_interval=0)
    m = RelayMetrics(certificate=cert)
    text = m.render()
    assert (f"p2prtc_relay_tls_certificate_expiry_timestamp_seconds "
            f"{int(first.certificate.not_valid_after_utc.timestamp())}") in text
    assert "p2prtc_relay_tls_certificate_reloads_total 0" in text
    second = ca.issue("relay", ["127.0.0.1"], days=2)  # renewed: seen at the next scrape
    text = m.render()
    assert (f"p2prtc_relay_tls_certificate_expiry_timestamp_seconds "
            f"{int(second.certificate.not_valid_after_utc.timestamp())}") in text
    assert "p2prtc_relay_tls_certificate_reloads_total 1" in text
    assert "tls_certificate" not in RelayMetrics().render()
