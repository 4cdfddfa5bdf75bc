"""identify (`/ipfs/id/1.0.0`) and identify push (`/ipfs/id/push/1.0.0`). specs: identify/README.md

On every new connection we ask the remote who it is; we answer the same question with our
public key, listen addresses, protocols, agent and the address we observe the remote at.
When our protocols or addresses change we push the new record to connected peers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..connection import Connection
from ..errors import P2PError, ProtocolError
from ..events import ConnectionOpened, Identified, ListenAddrsChanged, ProtocolsChanged
from ..identity import InvalidKey, PeerId, PublicKey
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb import identify_pb2, text
from ..streams import Stream, read_length_prefixed, write_length_prefixed

if TYPE_CHECKING:
    from ..network import Network
    from ..peerstore import PeerInfo

log = logging.getLogger(__name__)

IDENTIFY = "/ipfs/id/1.0.0"
IDENTIFY_PUSH = "/ipfs/id/push/1.0.0"
PROTOCOL_VERSION = "ipfs/0.1.0"
# rust caps identify at 4 KiB and js at 8 KiB; peers with many protocols send more, so we
# accept up to 64 KiB but keep our own small.
MAX_MESSAGE_SIZE = 64 * 1024
MAX_LISTEN_ADDRS = 64
IDENTIFY_TIMEOUT = 10.0


@dataclass
class IdentifyRecord:
    """What a remote's identify message says, checked: its key matches the connection's peer."""

    public_key: PublicKey | None
    listen_addrs: list[Multiaddr]
    observed_addr: Multiaddr | None
    protocols: list[str]
    agent_version: str | None
    protocol_version: str | None


def decode(data: bytes, remote_peer: PeerId) -> IdentifyRecord:
    """Decode an identify message from remote_peer; ProtocolError if it is malformed or names
    another key. Undecodable addresses are skipped (logged), as js and rust do."""
    msg = identify_pb2.Identify()
    try:
        msg.ParseFromString(data)
    except Exception as e:
        raise ProtocolError(f"malformed identify message: {e}") from None
    public_key = None
    if msg.HasField("publicKey"):
        try:
            public_key = PublicKey.from_protobuf(msg.publicKey)
        except InvalidKey as e:
            raise ProtocolError(f"identify carries a bad public key: {e}") from None
        if PeerId.from_public_key(public_key) != remote_peer:
            raise ProtocolError("identify public key does not match the connection's peer")
    addrs = []
    for raw in msg.listenAddrs[:MAX_LISTEN_ADDRS]:
        try:
            addrs.append(Multiaddr.from_bytes(raw))
        except MultiaddrError:
            log.debug("ignoring undecodable listen address from %s", remote_peer.short())
    observed = None
    if msg.HasField("observedAddr"):
        try:
            observed = Multiaddr.from_bytes(msg.observedAddr)
        except MultiaddrError:
            pass
    return IdentifyRecord(
        public_key=public_key,
        listen_addrs=addrs,
        observed_addr=observed,
        protocols=[text(p) for p in msg.protocols],
        agent_version=text(msg.agentVersion) if msg.HasField("agentVersion") else None,
        protocol_version=text(msg.protocolVersion) if msg.HasField("protocolVersion") else None,
    )


class IdentifyService:
    def __init__(self, host: Network) -> None:
        self.host = host
        host.handle(IDENTIFY, self._handle_identify, allow_limited=True)
        host.handle(IDENTIFY_PUSH, self._handle_push, allow_limited=True)
        host.events.on(ConnectionOpened, lambda e: self._on_connection(e.connection))
        host.events.on(ProtocolsChanged, lambda e: self._schedule_push())
        host.events.on(ListenAddrsChanged, lambda e: self._schedule_push())
        self._push_pending = False
        self._identified: dict[int, asyncio.Future[PeerInfo]] = {}

    # -- outbound --------------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        fut: asyncio.Future[PeerInfo] = asyncio.get_running_loop().create_future()
        self._identified[conn.id] = fut
        self.host.spawn(self._identify(conn, fut))

    async def identified(self, conn: Connection, timeout: float = IDENTIFY_TIMEOUT) -> PeerInfo:
        """Wait until identify on `conn` has completed; returns the PeerInfo."""
        fut = self._identified.get(conn.id)
        if fut is None:
            return self.host.peerstore.get(conn.remote_peer)
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def _identify(self, conn: Connection, fut: asyncio.Future[PeerInfo]) -> None:
        try:
            async with asyncio.timeout(IDENTIFY_TIMEOUT):
                stream = await conn.new_stream([IDENTIFY])
                data = await read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True)
                await stream.close()
            if data is None:
                raise ProtocolError("identify stream ended without a message")
            info = self._apply(conn, data)
            if not fut.done():
                fut.set_result(info)
        except (P2PError, OSError, TimeoutError) as e:
            log.info("identify with %s failed: %s", conn.remote_peer.short(), e or type(e).__name__)
            if not fut.done():
                fut.set_exception(P2PError(f"identify failed: {e}"))
                fut.exception()  # mark retrieved: nobody may be waiting
        finally:
            conn_closed = conn.wait_closed()
            self.host.spawn(self._forget_when_closed(conn, conn_closed))

    async def _forget_when_closed(self, conn: Connection,
                                  waiter: Coroutine[Any, Any, None]) -> None:
        try:
            await waiter
        finally:
            self._identified.pop(conn.id, None)

    def _apply(self, conn: Connection, data: bytes) -> PeerInfo:
        record = decode(data, conn.remote_peer)
        observed = record.observed_addr
        # Only where the peer dialed us: then it saw our listening port (through any NAT). On
        # a connection we dialed it saw an ephemeral source port nobody can dial (go keeps
        # observations only for listen addresses); a relay dialing DHT nodes put those ports
        # into its reservations (lab internet, issue 15.5).
        if observed is not None and not conn.limited and conn.direction == "inbound":
            self.host.add_observed_addr(observed)
        info = self.host.peerstore.update_identify(
            conn.remote_peer,
            protocols=record.protocols,
            agent_version=record.agent_version,
            protocol_version=record.protocol_version,
            public_key=record.public_key,
            addrs=record.listen_addrs,
            observed_addr=observed,
        )
        log.debug("identified %s: %s, %d protocols", conn.remote_peer.short(),
                  info.agent_version, len(info.protocols))
        self.host.events.emit(Identified(conn.remote_peer, info, conn))
        return info

    # -- inbound ---------------------------------------------------------------------------

    def _record(self, conn: Connection | None) -> bytes:
        msg = identify_pb2.Identify(
            protocolVersion=PROTOCOL_VERSION,
            agentVersion=self.host.agent_version,
            publicKey=self.host.identity.public_key.to_protobuf(),
            listenAddrs=[a.without_peer_id().to_bytes() for a in self.host.addrs()],
            protocols=self.host.protocols,
        )
        if conn is not None:
            msg.observedAddr = conn.remote_addr.to_bytes()
        return msg.SerializeToString()

    async def _handle_identify(self, stream: Stream) -> None:
        await write_length_prefixed(stream, self._record(stream.connection))
        await stream.close()

    async def _handle_push(self, stream: Stream) -> None:
        data = await read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True)
        await stream.close()
        if data is not None and stream.connection is not None:
            self._apply(stream.connection, data)

    # -- push ------------------------------------------------------------------------------

    def _schedule_push(self) -> None:
        # Several changes in one loop iteration (registering handlers at start-up) make one push.
        if self._push_pending:
            return
        self._push_pending = True
        asyncio.get_running_loop().call_soon(self._push_all)

    def _push_all(self) -> None:
        self._push_pending = False
        for conn in self.host.connections():
            if not conn.is_closed:
                self.host.spawn(self._push(conn))

    async def _push(self, conn: Connection) -> None:
        try:
            async with asyncio.timeout(IDENTIFY_TIMEOUT):
                stream = await conn.new_stream([IDENTIFY_PUSH])
                await write_length_prefixed(stream, self._record(conn))
                await stream.close()
        except (P2PError, OSError, TimeoutError) as e:
            log.debug("identify push to %s failed: %s", conn.remote_peer.short(), e)
