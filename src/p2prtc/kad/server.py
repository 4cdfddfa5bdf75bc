"""The DHT server's request handler: `handle_request(store, table, request, ...)` -> response,
no I/O (specs: kad-dht/README.md, "RPC messages"). The store holds records and provider
records with their expiry; limits below bound what one peer can make us keep."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..errors import ProtocolError
from ..identity import PeerId
from ..multiaddr import Multiaddr
from . import records
from .messages import KadMessage, KadPeer, MessageType, Record
from .records import InvalidRecord
from .table import K, RoutingTable, kad_key

# go-libp2p-kad-dht: MaxRecordAge 36 h (records older are dropped), ProvideValidity 48 h
# (amino/defaults.go).
RECORD_TTL = 36 * 3600.0
PROVIDER_TTL = 48 * 3600.0
# Our caps (go bounds the datastore by disk only): enough for a relay serving a few thousand
# listeners; the oldest entry goes first.
MAX_RECORDS = 10_000
MAX_PROVIDER_KEYS = 10_000
# go returns at most k providers per GET_PROVIDERS and keeps more; we keep 2k per key.
MAX_PROVIDERS_PER_KEY = 2 * K


@dataclass
class _Provider:
    addrs: tuple[Multiaddr, ...]
    expires: float


class Store:
    def __init__(self) -> None:
        self._records: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._providers: OrderedDict[bytes, OrderedDict[PeerId, _Provider]] = OrderedDict()

    # -- records
    def get_record(self, key: bytes, now: float) -> bytes | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[1] + RECORD_TTL < now:
            del self._records[key]
            return None
        return entry[0]

    def put_record(self, key: bytes, value: bytes, now: float) -> None:
        """Store a validated value; keep the old one when the selector prefers it."""
        old = self.get_record(key, now)
        if old is not None and old != value and records.select(key, [old, value]) == 0:
            return
        self._records[key] = (value, now)
        self._records.move_to_end(key)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def record_count(self) -> int:
        return len(self._records)

    # -- providers
    def add_provider(self, key: bytes, peer: PeerId, addrs: tuple[Multiaddr, ...],
                     now: float) -> None:
        provs = self._providers.get(key)
        if provs is None:
            provs = self._providers[key] = OrderedDict()
        provs[peer] = _Provider(addrs, now + PROVIDER_TTL)
        provs.move_to_end(peer)
        self._providers.move_to_end(key)
        while len(provs) > MAX_PROVIDERS_PER_KEY:
            provs.popitem(last=False)
        while len(self._providers) > MAX_PROVIDER_KEYS:
            self._providers.popitem(last=False)

    def providers(self, key: bytes, now: float) -> list[KadPeer]:
        provs = self._providers.get(key)
        if not provs:
            return []
        for p in [p for p, v in provs.items() if v.expires < now]:
            del provs[p]
        # newest first: a listener that re-announced is likelier to be there
        return [KadPeer(p, v.addrs) for p, v in reversed(provs.items())][:K]


def _closer(table: RoutingTable, key: bytes, sender: PeerId) -> tuple[KadPeer, ...]:
    return tuple(KadPeer(p, table.addrs(p))
                 for p in table.closest(kad_key(key), K, exclude=sender))


def handle_request(store: Store, table: RoutingTable, request: KadMessage, sender: PeerId,
                   now: float) -> KadMessage | None:
    """The answer to `request` from `sender` (None: the type has no answer, ADD_PROVIDER).
    Raises ProtocolError (InvalidRecord) for a request to refuse: the service resets the
    stream, as go does."""
    t = request.type
    if t is MessageType.FIND_NODE:
        return KadMessage(t, request.key, closer_peers=_closer(table, request.key, sender))
    if t is MessageType.PING:
        return KadMessage(t)
    if t is MessageType.GET_VALUE:
        value = store.get_record(request.key, now)
        rec = Record(request.key, value) if value is not None else None
        return KadMessage(t, request.key, rec, _closer(table, request.key, sender))
    if t is MessageType.PUT_VALUE:
        rec = request.record
        if rec is None:
            raise ProtocolError("PUT_VALUE without a record")
        if rec.key != request.key:
            raise InvalidRecord("PUT_VALUE record key differs from the message key")
        records.validate(rec.key, rec.value)
        store.put_record(rec.key, rec.value, now)
        return KadMessage(t, request.key, Record(rec.key, rec.value))
    if t is MessageType.ADD_PROVIDER:
        records.check_multihash(request.key)
        for p in request.provider_peers:
            if p.peer_id == sender:  # go: providers other than the sender are ignored
                store.add_provider(request.key, p.peer_id, p.addrs, now)
        return None
    if t is MessageType.GET_PROVIDERS:
        records.check_multihash(request.key)
        return KadMessage(t, request.key, closer_peers=_closer(table, request.key, sender),
                          provider_peers=tuple(store.providers(request.key, now)))
    raise ProtocolError(f"unsupported kad request {t.name}")
