"""The Host picks no connection that is going away: once the remote's yamux GoAway has arrived
(or the connection is closing) a new stream on it fails ("remote yamux session is going away"),
so best_connection, and Host.dial's reuse, take another connection or dial anew."""

from __future__ import annotations

from p2prtc.connection import Connection
from p2prtc.host import Host
from p2prtc.identity import Identity
from p2prtc.multiaddr import Multiaddr
from p2prtc.muxer.yamux import GO_AWAY_NORMAL, YamuxMuxer
from tests.helpers import memory_pipe


def connection(peer: Identity) -> tuple[Connection, YamuxMuxer]:
    """A connection to `peer` over an in-memory pipe; the remote's muxer is returned too."""
    a, b = memory_pipe()
    remote = YamuxMuxer(b, False, on_stream=lambda s: s.reset())
    remote.start()
    conn = Connection(muxer=YamuxMuxer(a, True), remote_peer=peer.peer_id,
                      remote_public_key=None, local_addr=Multiaddr("/ip4/127.0.0.1/tcp/1"),
                      remote_addr=Multiaddr(f"/ip4/127.0.0.1/tcp/2/p2p/{peer.peer_id}"),
                      direction="outbound", transport="tcp")
    return conn, remote


async def test_a_connection_the_remote_sent_go_away_on_is_not_picked() -> None:
    peer = Identity.generate()
    host = Host(identify=False, transports=[])
    try:
        older, older_remote = connection(peer)
        newer, newer_remote = connection(peer)
        host.add_connection(older)
        host.add_connection(newer)
        assert host.best_connection(peer.peer_id) is newer and not newer.going_away

        newer_remote.session.go_away(GO_AWAY_NORMAL)  # the peer is closing it (no teardown yet)
        newer_remote.kick_writer()
        assert isinstance(newer.muxer, YamuxMuxer)
        await newer.muxer.ping()  # its reply comes after the GoAway: it has arrived
        assert newer.going_away and not newer.is_closed
        assert host.best_connection(peer.peer_id) is older
        # Host.dial reuses the one that is not going away
        assert await host.dial(newer.remote_addr) is older

        await older.close()  # closing (a GoAway sent): not picked either
        assert older.going_away
        assert host.best_connection(peer.peer_id) is None
    finally:
        await host.close()
        for m in (older_remote, newer_remote):
            await m.close()
