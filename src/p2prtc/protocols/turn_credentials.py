"""`/p2prtc/turn-credentials/1.0.0`: a peer connected to our relay asks it for TURN credentials.

No accounts: the relay hands out TURN REST API credentials (draft-uberti-behave-turn-rest-00, as
coturn's `use-auth-secret` checks them): username `<unix expiry>:<peer id>`, password
base64(HMAC-SHA1(secret, username)). The TURN server (ours, `relay/turn.py`, or an operator's
coturn with the same secret) recomputes the password, so nothing is stored. Only peers with a
direct (not relayed) connection to the relay are served: the handler is not allowed on limited
connections, so nobody gets credentials through someone else's circuit.

Wire format: the peer opens the stream and writes one uvarint-length-prefixed
`TurnCredentialsRequest` (empty today); the relay answers with one `TurnCredentials`
(`pb/turn_credentials.proto`) and closes. A relay that does not speak it (js-libp2p,
rust-libp2p) refuses in multistream-select: one round trip, `fetch_turn_credentials` returns None.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import P2PError, ProtocolError
from ..pb import turn_credentials_pb2 as pb
from ..relay.turn import rest_password, rest_username
from ..streams import Stream, read_length_prefixed, write_length_prefixed

if TYPE_CHECKING:
    from ..connection import Connection
    from ..network import Network

log = logging.getLogger(__name__)

TURN_CREDENTIALS_PROTOCOL = "/p2prtc/turn-credentials/1.0.0"
# draft-uberti-behave-turn-rest-00 2.2 recommends one day; a peer fetches again on reconnecting.
CREDENTIAL_TTL = 86400
# A request is empty; an answer is a few URLs and two short strings.
MAX_REQUEST_SIZE = 1024
MAX_RESPONSE_SIZE = 8192
MAX_URLS = 16
# The whole exchange, negotiation included: a relay that stalls costs a peer no more than this.
FETCH_TIMEOUT = 5.0


@dataclass(frozen=True)
class TurnCredentials:
    urls: list[str]
    username: str
    password: str
    ttl: int
    expires: float  # Unix time, from the username when it has one, else now + ttl


def credentials_for(secret: str, peer: str, urls: list[str], ttl: int = CREDENTIAL_TTL,
                    now: float | None = None) -> TurnCredentials:
    now = time.time() if now is None else now
    expiry = int(now) + ttl
    username = rest_username(peer, expiry)
    return TurnCredentials(list(urls), username, rest_password(secret, username), ttl, expiry)


def encode(c: TurnCredentials) -> bytes:
    return pb.TurnCredentials(urls=c.urls, username=c.username, password=c.password,
                              ttl=c.ttl).SerializeToString()


def decode(data: bytes, now: float | None = None) -> TurnCredentials:
    """ProtocolError unless it is a usable answer (turn:/turns: URLs, a username, a password)."""
    msg = pb.TurnCredentials()
    try:
        msg.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError
        raise ProtocolError(f"bad TURN credentials message: {e}") from None
    urls = list(msg.urls)
    if any(isinstance(v, bytes) for v in (*urls, msg.username, msg.password)):
        # upb hands back bytes for a proto2 string that is not UTF-8 (found by fuzz/targets/
        # pb_turn_credentials.py: str methods then raised TypeError)
        raise ProtocolError("TURN credentials that are not UTF-8")
    if not urls or len(urls) > MAX_URLS or not all(u.startswith(("turn:", "turns:"))
                                                   for u in urls):
        raise ProtocolError(f"bad TURN URLs in credentials: {urls[:MAX_URLS]!r}")
    if not msg.username or not msg.password:
        raise ProtocolError("TURN credentials without username or password")
    now = time.time() if now is None else now
    head = msg.username.partition(":")[0]
    # An ASCII Unix time, as rest_expiry reads it (str.isdigit also takes "²": float() refuses)
    unix_time = head.isascii() and head.isdigit() and len(head) <= 12
    expires = float(head) if unix_time else now + msg.ttl
    return TurnCredentials(urls, msg.username, msg.password, msg.ttl, expires)


async def fetch_turn_credentials(host: Network, relay_conn: Connection) -> TurnCredentials | None:
    """Ask the relay at the other end of `relay_conn` for TURN credentials; None if it does not
    speak the protocol (js, rust relays) or anything goes wrong (logged at debug level)."""
    stream = None
    try:
        async with asyncio.timeout(FETCH_TIMEOUT):
            stream = await host.new_stream(relay_conn, [TURN_CREDENTIALS_PROTOCOL])
            await write_length_prefixed(stream, pb.TurnCredentialsRequest().SerializeToString())
            data = await read_length_prefixed(stream, MAX_RESPONSE_SIZE)
            creds = decode(data)
    except (P2PError, OSError, TimeoutError) as e:
        log.debug("no TURN credentials from %s: %s", relay_conn.remote_peer,
                  str(e) or type(e).__name__)
        if stream is not None:
            stream.reset()
        return None
    try:
        await stream.close()
    except (P2PError, OSError):
        pass
    return creds


class TurnCredentialService:
    """The relay's side: answers `/p2prtc/turn-credentials/1.0.0` on direct connections.
    `urls(conn)` gives the TURN URLs for a peer on `conn` (ours or an external server's)."""

    def __init__(self, host: Network, secret: str, urls: Callable[[Connection], list[str]],
                 ttl: int = CREDENTIAL_TTL) -> None:
        self.host = host
        self.secret = secret
        self.urls = urls
        self.ttl = ttl
        self.served = 0
        host.handle(TURN_CREDENTIALS_PROTOCOL, self._handle)

    async def _handle(self, stream: Stream) -> None:
        conn = stream.connection
        if conn is None:  # (set for every inbound stream)
            stream.reset()
            return
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                data = await read_length_prefixed(stream, MAX_REQUEST_SIZE)
                req = pb.TurnCredentialsRequest()
                try:
                    req.ParseFromString(data)
                except Exception as e:
                    raise ProtocolError(f"bad TURN credentials request: {e}") from None
                creds = credentials_for(self.secret, str(conn.remote_peer), self.urls(conn),
                                        self.ttl)
                await write_length_prefixed(stream, encode(creds))
                await stream.close()
        except (P2PError, OSError, TimeoutError) as e:
            log.info("TURN credentials for %s failed: %s", conn.remote_peer,
                     str(e) or type(e).__name__)
            stream.reset()
            return
        self.served += 1
        log.debug("TURN credentials for %s (%d s)", conn.remote_peer, self.ttl)
