"""The DHT on a `Network` (asyncio): the /ipfs/kad/1.0.0 stream handler (server mode) and the
client queries, each a `Lookup` driven with `alpha` RPCs in flight.

Mode (specs: kad-dht/README.md, "Client and server mode"): a server registers the protocol, so
identify advertises it; a client does not, and is therefore never added to anyone's routing
table. Peers enter our table when identify shows they speak the protocol (or they answered a
query), and leave it when a query to them fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..errors import P2PError, ProtocolError
from ..events import Identified
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..streams import Stream, read_length_prefixed, write_length_prefixed
from . import records
from .lookup import Lookup
from .messages import (MAX_MESSAGE_SIZE, PROTOCOL_ID, KadMessage, KadPeer, MessageType, Record,
                       decode, encode)
from .records import InvalidRecord, PeerRecord
from .server import Store, handle_request
from .table import RoutingTable, kad_key

if TYPE_CHECKING:
    from ..network import Network

log = logging.getLogger("p2prtc.kad")

# go-libp2p-kad-dht: dhtReadMessageTimeout 10 s per request; rust: 10 s query timeout per peer.
RPC_TIMEOUT = 10.0
# go resets an inbound DHT stream idle for 1 min (streamIdleTimeout).
STREAM_IDLE_TIMEOUT = 60.0
# How long a whole lookup may take (go: the caller's context; ours: a bound for the CLI).
LOOKUP_TIMEOUT = 30.0


async def _read_to_end(stream: Stream) -> None:
    """Wait for the peer's end of a stream that should carry nothing more."""
    while await stream.read(MAX_MESSAGE_SIZE):
        pass


class KadService:
    def __init__(self, network: Network, *, server: bool = True) -> None:
        self.network = network
        self.server = server
        self.table = RoutingTable(network.peer_id)
        self.store = Store()
        self._unsubscribe: Callable[[], None] | None = None
        self._served = asyncio.Condition()  # notified after each request we served

    def start(self) -> KadService:
        if self.server:
            self.network.handle(PROTOCOL_ID, self._handle)
        self._unsubscribe = self.network.events.on(Identified, self._on_identified)
        return self

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- the routing table
    def _on_identified(self, ev: Identified) -> None:
        if ev.connection.limited:
            return
        if PROTOCOL_ID in ev.info.protocols:
            self.table.add(ev.peer, ev.info.addrs)
        else:
            self.table.remove(ev.peer)

    async def bootstrap(self, addrs: Iterable[Multiaddr | str], *,
                        timeout: float = RPC_TIMEOUT) -> list[PeerId]:
        """Connect to the given DHT servers, add them, then look ourselves up (which fills the
        table with our neighbours). Returns the bootstrap peers that joined the table."""
        joined: list[PeerId] = []
        for addr in addrs:
            try:
                conn = await self.network.dial(addr, timeout=timeout)
                info = await asyncio.wait_for(self.network.identified(conn), timeout)
            except (P2PError, OSError, TimeoutError) as e:
                log.warning("DHT bootstrap peer %s unreachable: %s", addr, e)
                continue
            if info is not None and PROTOCOL_ID in info.protocols:
                self.table.add(conn.remote_peer, info.addrs)
                joined.append(conn.remote_peer)
            else:
                log.warning("DHT bootstrap peer %s does not serve %s", addr, PROTOCOL_ID)
        if joined:
            await self.closest_peers(self.network.peer_id.to_bytes())
        return joined

    # -- the server side
    async def _handle(self, stream: Stream) -> None:
        conn = stream.connection
        assert conn is not None  # set on every inbound stream
        peer = conn.remote_peer
        try:
            while True:
                data = await asyncio.wait_for(
                    read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True),
                    STREAM_IDLE_TIMEOUT)
                if data is None:
                    break
                request = decode(data)
                response = handle_request(self.store, self.table, request, peer, time.time())
                async with self._served:
                    self._served.notify_all()
                if response is not None:
                    await write_length_prefixed(stream, encode(response))
        except TimeoutError:
            stream.reset()
            return
        except ProtocolError as e:
            log.info("kad: refused a request of %s: %s", peer.short(), e)
            stream.reset()
            return
        except (P2PError, OSError) as e:  # the stream or connection went away
            log.debug("kad: stream of %s ended: %s", peer.short(), e)
            stream.reset()
            return
        await stream.close()

    async def wait_for_provider(self, key: bytes, peer: PeerId, timeout: float) -> None:
        """Until our store holds `peer` as a provider of `key` (ADD_PROVIDER has no answer, so
        its sender cannot know when we took it); TimeoutError after `timeout`."""
        def held() -> bool:
            return any(p.peer_id == peer for p in self.store.providers(key, time.time()))

        async with asyncio.timeout(timeout), self._served:
            await self._served.wait_for(held)

    # -- the client side
    async def request(self, peer: KadPeer, request: KadMessage, *,
                      reply: bool = True) -> KadMessage | None:
        """One RPC on a new stream to `peer` (its answer; None with `reply=False`)."""
        if peer.addrs:
            self.network.peerstore.add_addrs(peer.peer_id, list(peer.addrs))
        stream = await asyncio.wait_for(self.network.new_stream(peer.peer_id, PROTOCOL_ID),
                                        RPC_TIMEOUT)
        try:
            await write_length_prefixed(stream, encode(request))
            if not reply:
                # no answer comes (ADD_PROVIDER); go and rust read the next message only after
                # handling this one, so their end of the stream after our FIN means it was taken
                await stream.close_write()
                with contextlib.suppress(P2PError, OSError):
                    await asyncio.wait_for(_read_to_end(stream), RPC_TIMEOUT)
                await stream.close()
                return None
            data = await asyncio.wait_for(read_length_prefixed(stream, MAX_MESSAGE_SIZE),
                                          RPC_TIMEOUT)
            response = decode(data)
        except BaseException:
            stream.reset()
            raise
        await stream.close()
        if response.type is not request.type:
            raise ProtocolError(f"kad answer of type {response.type.name} "
                                f"to {request.type.name}")
        return response

    async def _lookup(self, key: bytes, request: KadMessage,
                      on_answer: Callable[[KadPeer, KadMessage], bool] | None = None) -> Lookup:
        """Run the iterative lookup for `key`, sending `request` to each peer; `on_answer`
        returning True ends it early."""
        target = kad_key(key)
        seeds = [KadPeer(p, self.table.addrs(p)) for p in self.table.closest(target)]
        lookup = Lookup(target, seeds, local=self.network.peer_id)
        pending: dict[asyncio.Task[KadMessage | None], KadPeer] = {}
        deadline = asyncio.get_running_loop().time() + LOOKUP_TIMEOUT
        try:
            while not lookup.done:
                for p in lookup.next_queries():
                    pending[asyncio.ensure_future(self.request(p, request))] = p
                if not pending:
                    break
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                finished, _ = await asyncio.wait(pending, timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    p = pending.pop(task)
                    exc = task.exception()
                    response = task.result() if exc is None else None
                    if response is None:
                        log.debug("kad: %s failed: %s", p.peer_id.short(), exc)
                        lookup.on_failure(p.peer_id)
                        self.table.remove(p.peer_id)
                        continue
                    lookup.on_response(p.peer_id, response.closer_peers)
                    self.table.add(p.peer_id, p.addrs or self.table.addrs(p.peer_id))
                    if on_answer is not None and on_answer(p, response):
                        lookup.stop()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return lookup

    async def closest_peers(self, key: bytes) -> list[KadPeer]:
        lookup = await self._lookup(key, KadMessage(MessageType.FIND_NODE, key))
        return lookup.closest()

    async def find_peer(self, peer: PeerId) -> tuple[Multiaddr, ...]:
        """Addresses of `peer` from FIND_NODE answers (empty when nobody knew them)."""
        found: list[tuple[Multiaddr, ...]] = []

        def on_answer(_from: KadPeer, msg: KadMessage) -> bool:
            for p in msg.closer_peers:
                if p.peer_id == peer and p.addrs:
                    found.append(p.addrs)
                    return True
            return False

        key = peer.to_bytes()
        await self._lookup(key, KadMessage(MessageType.FIND_NODE, key), on_answer)
        return found[0] if found else ()

    async def _send_to_closest(self, key: bytes, request: KadMessage, *,
                               reply: bool) -> int:
        closest = await self.closest_peers(key)
        results = await asyncio.gather(*(self.request(p, request, reply=reply) for p in closest),
                                       return_exceptions=True)
        for p, r in zip(closest, results, strict=True):
            if isinstance(r, BaseException):
                log.debug("kad: %s to %s failed: %s", request.type.name, p.peer_id.short(), r)
        return sum(1 for r in results if not isinstance(r, BaseException))

    async def put_value(self, key: bytes, value: bytes) -> int:
        """Store a record on the k closest peers (and here, as a server); the number of peers
        that took it. Raises InvalidRecord for a record we would refuse ourselves."""
        records.validate(key, value)
        if self.server:
            self.store.put_record(key, value, time.time())
        return await self._send_to_closest(
            key, KadMessage(MessageType.PUT_VALUE, key, Record(key, value)), reply=True)

    async def get_value(self, key: bytes) -> bytes | None:
        """The best valid value for `key` found (the first lookup answer with one ends it);
        invalid records from peers are dropped."""
        values: list[bytes] = []
        local = self.store.get_record(key, time.time())
        if local is not None:
            values.append(local)

        def on_answer(p: KadPeer, msg: KadMessage) -> bool:
            if msg.record is None or msg.record.key != key:
                return False
            try:
                records.validate(key, msg.record.value)
            except InvalidRecord as e:
                log.info("kad: invalid record for %r from %s: %s", key[:40], p.peer_id.short(), e)
                return False
            values.append(msg.record.value)
            return True

        await self._lookup(key, KadMessage(MessageType.GET_VALUE, key), on_answer)
        if not values:
            return None
        return values[records.select(key, values)]

    async def provide(self, key: bytes, addrs: Sequence[Multiaddr] | None = None) -> int:
        """ADD_PROVIDER for `key` (a multihash) with `addrs` (default: the addresses we
        advertise) to the k closest peers (and to our own store, as a server); the number of
        peers it was sent to."""
        records.check_multihash(key)
        mine = self.network.addrs() if addrs is None else addrs
        me = KadPeer(self.network.peer_id, tuple(a.without_peer_id() for a in mine))
        if self.server:
            self.store.add_provider(key, me.peer_id, me.addrs, time.time())
        return await self._send_to_closest(
            key, KadMessage(MessageType.ADD_PROVIDER, key, provider_peers=(me,)), reply=False)

    async def find_providers(self, key: bytes, *, wanted: int = 1) -> list[KadPeer]:
        """Providers of `key`; the lookup ends once `wanted` were found."""
        records.check_multihash(key)
        found: dict[PeerId, KadPeer] = {p.peer_id: p
                                        for p in self.store.providers(key, time.time())}

        def on_answer(_from: KadPeer, msg: KadMessage) -> bool:
            for p in msg.provider_peers:
                if p.peer_id not in found or (p.addrs and not found[p.peer_id].addrs):
                    found[p.peer_id] = p
            return len(found) >= wanted

        if len(found) < wanted:
            await self._lookup(key, KadMessage(MessageType.GET_PROVIDERS, key), on_answer)
        return list(found.values())

    # -- peer records: how a listener behind a NAT is found (DEVELOPERS.md, "The DHT")
    async def publish_self(self, addrs: Sequence[Multiaddr]) -> tuple[int, int]:
        """PUT our signed peer record (seq: ms since the epoch, as go's) and ADD_PROVIDER our
        peer key; (peers that took the record, peers sent the provider record)."""
        me = self.network.peer_id
        bare = [a.without_peer_id() for a in addrs]
        env = records.seal_peer_record(self.network.identity, int(time.time() * 1000), bare)
        put, provided = await asyncio.gather(
            self.put_value(records.peer_record_key(me), env),
            self.provide(records.peer_provider_key(me), bare))
        return put, provided

    async def find_peer_addrs(self, peer: PeerId) -> tuple[list[Multiaddr], str]:
        """Addresses of `peer`, and where they came from: its signed peer record ("record",
        verified), else its provider record ("provider"), else FIND_NODE ("peer-routing").
        Only the record is signed; the others are hints the connection's handshake checks."""
        value = await self.get_value(records.peer_record_key(peer))
        if value is not None:
            rec: PeerRecord = records.open_peer_record(value)
            if rec.addrs:
                return list(rec.addrs), "record"
        for p in await self.find_providers(records.peer_provider_key(peer)):
            if p.peer_id == peer and p.addrs:
                return list(p.addrs), "provider"
        addrs = await self.find_peer(peer)
        return list(addrs), "peer-routing"
