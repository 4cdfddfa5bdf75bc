"""p2prtc: private-to-private WebRTC with libp2p, in Python.

The public API is what this package exports (everything else is internal):

- `Node`: a peer that listens through circuit-relay-v2 relays and dials other peers, upgrading
  to a direct WebRTC connection; `Connection` and `Stream` are what it gives.
- `NoDirectPath`, `DialError` and the other exceptions (all `P2PError`s).
- `IceServer`: a STUN/TURN server with credentials, for `Node(turn=[...])`.
- the event types of `Node.events()` (`p2prtc.api_events`): `Connected`, `Listening`, ...

```python
from p2prtc import Node

async with Node() as node:
    node.handle("/my/proto/1.0.0", handler)     # async def handler(stream) -> None
    addrs = await node.listen(relay_multiaddr)  # give one to the other side
    conn = await node.dial(addr)                # returns once direct
    stream = await conn.open_stream("/my/proto/1.0.0")
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
AGENT_VERSION = f"p2prtc/{__version__}"

# The public names, imported on first use: `python -m p2prtc relay` does not load the WebRTC
# stack, and the internal modules can import this package for AGENT_VERSION.
_EXPORTS = {
    "Node": "node", "Connection": "node", "Stream": "node", "NoDirectPath": "node",
    "Handler": "node",
    "P2PError": "errors", "DialError": "errors", "ProtocolError": "errors",
    "StreamClosed": "errors", "StreamReset": "errors", "NegotiationFailed": "errors",
    "IncompleteRead": "streams",
    "IceServer": "transports.webrtc.engine",
    "api_events": None,
}
_EVENTS = ("Event", "Peer", "Dialing", "RelayConnected", "Reservation", "Listening", "Relayed",
           "Connected", "Disconnected", "RelayedClosed", "PathChanged", "Nat", "NatPeer",
           "Warning", "Error", "Message", "Sent", "Undelivered", "FileIncoming", "File",
           "FileSent")
_EXPORTS.update({name: "api_events" for name in _EVENTS})

__all__ = [
    "__version__", "Node", "Connection", "Stream", "NoDirectPath", "Handler", "P2PError",
    "DialError", "ProtocolError", "StreamClosed", "StreamReset", "NegotiationFailed",
    "IncompleteRead", "IceServer", "api_events", "Event", "Peer", "Dialing", "RelayConnected",
    "Reservation", "Listening", "Relayed", "Connected", "Disconnected", "RelayedClosed",
    "PathChanged", "Nat", "NatPeer", "Warning", "Error", "Message", "Sent", "Undelivered",
    "FileIncoming", "File", "FileSent",
]
assert set(__all__) == {"__version__", *_EXPORTS}

if TYPE_CHECKING:
    from . import api_events
    from .api_events import (Connected, Dialing, Disconnected, Error, Event, File, FileIncoming,
                             FileSent, Listening, Message, Nat, NatPeer, PathChanged, Peer,
                             Relayed, RelayConnected, RelayedClosed, Reservation, Sent,
                             Undelivered, Warning)
    from .errors import (DialError, NegotiationFailed, P2PError, ProtocolError, StreamClosed,
                         StreamReset)
    from .node import Connection, Handler, NoDirectPath, Node, Stream
    from .streams import IncompleteRead
    from .transports.webrtc.engine import IceServer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name, "")
    if module == "":
        raise AttributeError(f"module 'p2prtc' has no attribute {name!r}")
    import importlib

    if module is None:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    else:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
