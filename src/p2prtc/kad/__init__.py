"""Kademlia DHT (specs: kad-dht/README.md, protocol /ipfs/kad/1.0.0).

Sans-I/O core: `messages` (the wire codec), `table` (k-buckets), `lookup` (the iterative
closest-peers query as a state machine), `records` (validators, signed peer records),
`server` (the request handler: a function of (store, request) -> response). `service` is the
thin asyncio layer on a `Network`: the stream handler and the client queries.
"""

from .messages import PROTOCOL_ID

__all__ = ["PROTOCOL_ID"]
