"""The events of the public API: one frozen dataclass per `--json` event of `p2prtc listen/dial`.

`Node.events()` yields the network events (`Peer`, `Dialing`, `RelayConnected`, `Reservation`,
`Listening`, `Relayed`, `Connected`, `Disconnected`, `RelayedClosed`, `PathChanged`, `Nat`,
`NatPeer`, `Warning`, `Error`, and the relay keeper's `RelayLost`, `RelayAdded`, `RelayReleased`,
`RelaysNeeded`). The chat and file events (`Message`, `Sent`, `Undelivered`,
`FileIncoming`, `File`, `FileSent`) are those of the chat application built on top; they are
defined here so that every `--json` event has one type.

Each event's `to_dict()` is its `--json` object without the timestamp: `{"event": name, ...}`
with the same field names (see DEVELOPERS.md, "`--json` events"). `Event.t` is the time in
seconds since the node started.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "Event", "Peer", "Dialing", "RelayConnected", "Reservation", "Listening", "Relayed",
    "Connected", "Disconnected", "RelayedClosed", "PathChanged", "Nat", "NatPeer", "Warning",
    "Error", "Message", "Sent", "Undelivered", "FileIncoming", "File", "FileSent", "Published",
    "Found", "RelayLost", "RelayAdded", "RelayReleased", "RelaysNeeded", "CandidatePair",
    "RelayLimit", "EVENT_TYPES", "from_dict",
]

CandidatePair = dict[str, str]
"""The ICE pair a WebRTC connection uses: `{"local", "remote"}` candidate types (host, srflx,
prflx, relay) and `{"local_addr", "remote_addr"}` as `ip:port`."""

RelayLimit = dict[str, int]
"""A relay's limit on a relayed connection: `{"duration": seconds, "data": bytes}` (0: none)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class of every event."""

    name: ClassVar[str] = ""
    """The `"event"` value of the `--json` line."""

    t: float = field(default=0.0, compare=False)
    """Seconds since the node started."""

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object of this event (with `"event"` and `"t"`)."""
        out: dict[str, Any] = {"event": self.name, "t": round(self.t, 3)}
        for f in dataclasses.fields(self):
            if f.name != "t":
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, kw_only=True)
class Peer(Event):
    """Our own peer id, first of all."""

    name: ClassVar[str] = "peer"
    peer: str


@dataclass(frozen=True, kw_only=True)
class Dialing(Event):
    """A dial of `addr` starts."""

    name: ClassVar[str] = "dialing"
    addr: str


@dataclass(frozen=True, kw_only=True)
class RelayConnected(Event):
    """A connection to a relay is up (`relay` is its address with `/p2p/<relay id>`)."""

    name: ClassVar[str] = "relay-connected"
    relay: str


@dataclass(frozen=True, kw_only=True)
class Reservation(Event):
    """A reservation on `relay` (its peer id) holds until `expires` (unix time); refreshed by
    itself before then."""

    name: ClassVar[str] = "reservation"
    relay: str
    expires: float


@dataclass(frozen=True, kw_only=True)
class Listening(Event):
    """Our dialable addresses (after each reservation): browser-dialable ones first."""

    name: ClassVar[str] = "listening"
    addrs: list[str]
    browser_addrs: list[str]


@dataclass(frozen=True, kw_only=True)
class Relayed(Event):
    """A relayed connection with `peer` (the one a WebRTC upgrade runs over); `limit` is the
    relay's limit on it, or None."""

    name: ClassVar[str] = "relayed"
    peer: str
    addr: str
    limit: RelayLimit | None = None


@dataclass(frozen=True, kw_only=True)
class Connected(Event):
    """Once per connection with `peer`, with its final kind: `transport` "webrtc" and `direct`
    once the WebRTC upgrade worked; "relay" (not direct) once it failed. `path` is "direct",
    "turn" or "relay"; `ms` the time the dial (or upgrade) took."""

    name: ClassVar[str] = "connected"
    peer: str
    addr: str
    transport: str
    direct: bool
    path: str
    ms: float | None = None
    candidate_pair: CandidatePair | None = None


@dataclass(frozen=True, kw_only=True)
class Disconnected(Event):
    """The connection a `Connected` reported has ended; `reason` in words."""

    name: ClassVar[str] = "disconnected"
    peer: str
    reason: str
    transport: str


@dataclass(frozen=True, kw_only=True)
class RelayedClosed(Event):
    """The relayed connection under a direct one ended (the direct one stays)."""

    name: ClassVar[str] = "relayed-closed"
    peer: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class PathChanged(Event):
    """ICE moved the WebRTC connection with `peer` to another candidate pair (looked at again
    a moment after connecting): `path` is now "direct" or "turn"."""

    name: ClassVar[str] = "path"
    peer: str
    path: str
    candidate_pair: CandidatePair | None = None


@dataclass(frozen=True, kw_only=True)
class Nat(Event):
    """Our NAT, once detected against the STUN server (`type`: public, full-cone, restricted,
    port-restricted, symmetric or unknown)."""

    name: ClassVar[str] = "nat"
    mapping: str | None = None
    filtering: str | None = None
    type: str | None = None
    public: str | None = None
    server: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class NatPeer(Event):
    """What `peer` told us of its NAT; `ruled_out` says why no direct path is possible, or None."""

    name: ClassVar[str] = "nat-peer"
    peer: str
    mapping: str | None = None
    filtering: str | None = None
    type: str | None = None
    public: str | None = None
    server: str | None = None
    error: str | None = None
    ruled_out: str | None = None


@dataclass(frozen=True, kw_only=True)
class Warning(Event):  # noqa: A001 - the event's name
    """Something is being retried (reservation failed, relay lost) or a server did not help;
    `relay` is the relay it is about (its peer id, or its address when the id is not known
    yet), or None."""

    name: ClassVar[str] = "warning"
    reason: str
    relay: str | None = None


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """Something failed (e.g. no direct WebRTC path with `peer`); the node goes on."""

    name: ClassVar[str] = "error"
    reason: str
    peer: str | None = None


@dataclass(frozen=True, kw_only=True)
class Message(Event):
    """Chat application: a message from `peer`."""

    name: ClassVar[str] = "message"
    peer: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Sent(Event):
    """Chat application: `text` was written into an open stream to `peer`."""

    name: ClassVar[str] = "sent"
    peer: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Undelivered(Event):
    """Chat application: `text` was not sent, and why."""

    name: ClassVar[str] = "undelivered"
    peer: str | None
    text: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class FileIncoming(Event):
    """Chat application: `peer` starts sending a file."""

    name: ClassVar[str] = "file-incoming"
    peer: str
    name_: str = field(metadata={"json": "name"})
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return _rename(super().to_dict())


@dataclass(frozen=True, kw_only=True)
class File(Event):
    """Chat application: a file from `peer` was received and saved at `path`."""

    name: ClassVar[str] = "file"
    peer: str
    name_: str = field(metadata={"json": "name"})
    bytes: int
    sha256: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return _rename(super().to_dict())


@dataclass(frozen=True, kw_only=True)
class FileSent(Event):
    """Chat application: a file went to `peer`, its checksum verified by the receiver."""

    name: ClassVar[str] = "file-sent"
    peer: str
    name_: str = field(metadata={"json": "name"})
    bytes: int
    sha256: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return _rename(super().to_dict())


@dataclass(frozen=True, kw_only=True)
class Published(Event):
    """Our signed peer record (with `addrs`, our circuit addresses) went into the DHT:
    `record_peers` DHT servers stored it, `provider_peers` got our provider record (go nodes
    take only that). Again whenever the addresses change, and every hour."""

    name: ClassVar[str] = "published"
    addrs: list[str]
    record_peers: int
    provider_peers: int


@dataclass(frozen=True, kw_only=True)
class Found(Event):
    """The DHT gave `addrs` of `peer`; `source`: "record" (its signed peer record, verified),
    "provider" or "peer-routing" (unsigned hints the connection's handshake checks)."""

    name: ClassVar[str] = "found"
    peer: str
    addrs: list[str]
    source: str


@dataclass(frozen=True, kw_only=True)
class Reachability(Event):
    """What AutoNAT v2 servers (relays) said of our direct `addrs` (`Node.reachability()`):
    `reachability` "public", "private" or "unknown"; `needs_relay` is False only when public."""

    name: ClassVar[str] = "reachability"
    reachability: str
    addrs: list[str]
    servers: int
    needs_relay: bool


@dataclass(frozen=True, kw_only=True)
class RelayLost(Event):
    """The relay at `relay` has been unreachable for `down_s` seconds (`listen()`'s
    `relay_grace`): it no longer counts, and with a DHT another relay is looked for
    (`RelayAdded`). The lost one is still retried, slowly, and kept if it comes back."""

    name: ClassVar[str] = "relay-lost"
    relay: str
    down_s: float


@dataclass(frozen=True, kw_only=True)
class RelayAdded(Event):
    """The relay keeper starts reserving on `relay` (found in the DHT to replace a lost one,
    or again after we stopped being publicly reachable); `Reservation` follows once granted."""

    name: ClassVar[str] = "relay-added"
    relay: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RelayReleased(Event):
    """The relay keeper stopped keeping the reservation on `relay`: we are publicly
    reachable, a lost relay came back (more than wanted), or a relay found in the DHT never
    granted one. Its addresses leave `addrs()`."""

    name: ClassVar[str] = "relay-released"
    relay: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RelaysNeeded(Event):
    """AutoNAT changed its verdict: `needed` False (publicly reachable: the relay
    reservations are released) or True again (reserving again)."""

    name: ClassVar[str] = "relays-needed"
    needed: bool
    reason: str


def _rename(d: dict[str, Any]) -> dict[str, Any]:
    """`name_` (a file's name; `name` is the event's) is `name` in JSON."""
    d["name"] = d.pop("name_")
    return d


EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls for cls in (
        Peer, Dialing, RelayConnected, Reservation, Listening, Relayed, Connected, Disconnected,
        RelayedClosed, PathChanged, Nat, NatPeer, Warning, Error, Message, Sent, Undelivered,
        FileIncoming, File, FileSent, Published, Found, Reachability, RelayLost, RelayAdded,
        RelayReleased, RelaysNeeded)
}
"""Every event type by its `--json` name."""


def from_dict(obj: dict[str, Any]) -> Event:
    """The event of a `--json` object (unknown fields are ignored); KeyError for an unknown
    event name."""
    cls = EVENT_TYPES[obj["event"]]
    names = {f.metadata.get("json", f.name): f.name for f in dataclasses.fields(cls)}
    return cls(**{names[k]: v for k, v in obj.items() if k in names})
