"""webrtc-direct v2 (libp2p/specs#715): USERNAME `libp2p+webrtc+v2/<client pwd>:<client ufrag>`,
the server's password = its ufrag; one listener for v1 and v2; our dialer in either version,
end to end between two hosts on loopback."""

from __future__ import annotations

import pytest

from p2prtc.errors import DialError
from p2prtc.host import Host
from p2prtc.protocols.echo import ECHO, handle_echo
from p2prtc.transports.webrtc_direct import stun
from p2prtc.transports.webrtc_direct.dialer import dial
from p2prtc.transports.webrtc_direct.ice import (
    UFRAG_PREFIX_V2,
    IceChecker,
    IceLiteAgent,
    random_ufrag,
    ufrag_version,
)
from p2prtc.transports.webrtc_direct.transport import WebRTCDirectTransport

SERVER = ("127.0.0.1", 4885)
CLIENT = ("127.0.0.1", 50000)


def test_version_is_told_by_the_prefix():
    assert ufrag_version(random_ufrag()) == 1
    assert ufrag_version(UFRAG_PREFIX_V2 + "p" * 22) == 2
    assert ufrag_version(UFRAG_PREFIX_V2 + "p" * 21) is None  # RFC 8839: pwd >= 22 chars
    assert ufrag_version(UFRAG_PREFIX_V2 + "p" * 240) is None  # ufrag <= 256 chars
    assert ufrag_version(UFRAG_PREFIX_V2 + "bad:chars" + "p" * 20) is None
    assert ufrag_version("libp2p+webrtc+v3/" + "p" * 32) is None  # unknown: refused, not v1
    assert ufrag_version("p" * 32) is None


def test_v2_checker_credentials():
    c = IceChecker.v2(SERVER)
    server_ufrag, client_ufrag = c.username.split(":")
    assert server_ufrag == c.ufrag and c.version == 2
    assert server_ufrag.startswith(UFRAG_PREFIX_V2) and not client_ufrag.startswith("libp2p")
    assert c.key == server_ufrag.encode()  # the server's password is its ufrag
    v1 = IceChecker.v1(SERVER)
    assert v1.username == f"{v1.ufrag}:{v1.ufrag}" and v1.version == 1


def test_ice_lite_agent_answers_v2_and_v1_on_one_port():
    agent = IceLiteAgent()
    for checker in (IceChecker.v2(SERVER), IceChecker.v1(SERVER)):
        data = checker.request(0.0)
        msg = stun.parse(data)
        assert msg.username == checker.username
        r = agent.handle_stun(data, CLIENT if checker.version == 2 else ("127.0.0.1", 50001),
                              0.0)
        assert r.reply is not None and r.new, r.dropped
        assert r.session.ufrag == checker.ufrag
        assert checker.handle_stun(r.reply, 0.1) is None and checker.succeeded
    assert len(agent) == 2


def test_v2_check_signed_with_the_wrong_key_or_an_unknown_version_is_dropped():
    agent = IceLiteAgent()
    c = IceChecker.v2(SERVER)
    wrong = stun.binding_request(stun.new_transaction_id(), c.username, b"client-password-" * 2,
                                 priority=1, controlling=True, tie_breaker=1, use_candidate=True)
    assert agent.handle_stun(wrong, CLIENT, 0.0).dropped == \
        "binding request with a bad MESSAGE-INTEGRITY"
    v3 = "libp2p+webrtc+v3/" + "p" * 32
    data = stun.binding_request(stun.new_transaction_id(), f"{v3}:client", v3.encode(),
                                priority=1, controlling=True, tie_breaker=1, use_candidate=True)
    assert "not a libp2p webrtc-direct one" in agent.handle_stun(data, CLIENT, 0.0).dropped
    assert len(agent) == 0


@pytest.mark.parametrize("version", [1, 2])
async def test_our_dialer_in_either_version_reaches_our_listener(version):
    server = Host()
    server.handle(ECHO, handle_echo)
    client = Host()
    try:
        addrs = await server.listen("/ip4/127.0.0.1/udp/0/webrtc-direct")
        conn = await dial(addrs[0].with_peer_id(server.peer_id), client.identity, version)
        assert conn.details.webrtc_direct_version == version
        assert conn.details.ufrag.startswith(f"libp2p+webrtc+v{version}/")
        stream = await conn.new_stream([ECHO])
        await stream.write(b"v%d" % version)
        await stream.close_write()
        got = b""
        while chunk := await stream.read():
            got += chunk
        assert got == b"v%d" % version
        inbound = server.connections(client.peer_id)
        assert inbound and inbound[0].details.webrtc_direct_version == version
        await conn.close()
    finally:
        await client.close()
        await server.close()


async def test_unknown_dial_version_is_refused():
    host = Host()
    with pytest.raises(DialError, match="unknown webrtc-direct version 3"):
        await dial(None, host.identity, 3)  # type: ignore[arg-type]
    assert WebRTCDirectTransport(host).dial_version == 1
    await host.close()
