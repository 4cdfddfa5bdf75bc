"""AutoNAT v2, sans-I/O (libp2p/specs autonat/autonat-v2.md, r2): the message codec, the
server's per-request state machine with its address policy and rate limits, and the client's.

`protocols/autonat.py` runs these on streams. Nothing here does I/O or reads a clock: callers
feed bytes and pass `now`.

Server, per request (`ServerRequest`): DialRequest -> pick the first address it will dial ->
(a DialDataRequest when that address's IP is not the requester's observed IP: amplification
protection) -> `DialBack(addr)` for the I/O layer -> `dial_result(status)` -> DialResponse.
Private/loopback addresses are never dialled for a third party: a non-public address is only
dialled when `allow_private` is set *and* it is the requester's own observed IP.

Client, per request (`ClientRequest`): DialRequest -> maybe DialDataResponse chunks ->
DialResponse + the nonce seen on /libp2p/autonat/2/dial-back -> a `CheckResult`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb import autonat_v2_pb2 as pb
from ..wire.varint import VarintIncomplete, decode_uvarint, encode_uvarint

DIAL_REQUEST = "/libp2p/autonat/2/dial-request"
DIAL_BACK = "/libp2p/autonat/2/dial-back"

# go-libp2p autonatv2 (autonat.go): maxMsgSize, dialBackMaxMsgSize, maxPeerAddresses.
MAX_MSG_SIZE = 8192
DIAL_BACK_MAX_MSG_SIZE = 1024
MAX_PEER_ADDRESSES = 50
# Spec "Amplification Attack Prevention": servers SHOULD ask for 30k to 100k bytes; each
# DialDataResponse carries at most 4096 bytes of data.
MIN_DIAL_DATA = 30_000
MAX_DIAL_DATA = 100_000
DIAL_DATA_CHUNK = 4096
# go's server (readDialData) refuses a DialDataResponse under 100 bytes while more is owed, so a
# peer cannot make it parse many tiny messages.
MIN_DIAL_DATA_MESSAGE = 100
# What a client accepts to send (go's client refuses more than maxHandshakeSizeBytes).
CLIENT_MAX_DIAL_DATA = MAX_DIAL_DATA

# Server rate limits: go-libp2p autonatv2 defaultSettings (options.go).
SERVER_RPM = 60  # requests a minute, all peers
SERVER_PER_PEER_RPM = 12  # requests a minute from one peer
SERVER_DIAL_DATA_RPM = 12  # requests needing dial data, a minute, all peers
SERVER_MAX_CONCURRENT_PER_PEER = 2
RATE_WINDOW = 60.0  # seconds: the sliding window of the RPM limits

DialStatus = pb.DialStatus
DIAL_OK: int = pb.OK
DIAL_ERROR: int = pb.E_DIAL_ERROR
DIAL_BACK_ERROR: int = pb.E_DIAL_BACK_ERROR
ResponseStatus = pb.DialResponse.ResponseStatus
_KNOWN_RESPONSE = {pb.DialResponse.OK, pb.DialResponse.E_DIAL_REFUSED,
                   pb.DialResponse.E_REQUEST_REJECTED, pb.DialResponse.E_INTERNAL_ERROR}
_KNOWN_DIAL = {pb.OK, pb.E_DIAL_ERROR, pb.E_DIAL_BACK_ERROR}


# -- codec ------------------------------------------------------------------------------------

def encode(msg: pb.Message | pb.DialBack | pb.DialBackResponse) -> bytes:
    """One length-prefixed (uvarint) protobuf, as every message on both protocols is sent."""
    body = msg.SerializeToString()
    return encode_uvarint(len(body)) + body


class MessageReader:
    """Length-prefixed messages out of a byte stream; a length over `max_size` is a
    ProtocolError (the stream is ended by whoever owns it)."""

    def __init__(self, max_size: int = MAX_MSG_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            try:
                length, pos = decode_uvarint(self._buf)  # ProtocolError past 9 bytes
            except VarintIncomplete:
                break  # the prefix is split across reads (fuzz autonat: it raised out)
            if length > self.max_size:
                raise ProtocolError(f"autonat: message of {length} bytes (max {self.max_size})")
            if len(self._buf) < pos + length:
                break
            out.append(bytes(self._buf[pos:pos + length]))
            del self._buf[:pos + length]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def parse_message(body: bytes) -> pb.Message:
    msg = pb.Message()
    try:
        msg.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ProtocolError(f"autonat: undecodable message: {e}") from None
    return msg


def dial_data_message(size: int = DIAL_DATA_CHUNK) -> bytes:
    """One DialDataResponse with `size` bytes of data, encoded (clients reuse it)."""
    return encode(pb.Message(dialDataResponse=pb.DialDataResponse(data=bytes(size))))


# -- address policy ---------------------------------------------------------------------------

def addr_ip(addr: Multiaddr) -> str | None:
    """The IP of an /ip4 or /ip6 address (None for dns, circuits and the like)."""
    if addr.has("p2p-circuit"):
        return None
    return addr.value_for("ip4") or addr.value_for("ip6")


def is_public_ip(ip: str) -> bool:
    """Globally routable (RFC 1918, loopback, link-local, CGNAT, documentation ranges... are
    not), as go's manet.IsPublicAddr."""
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


@dataclass
class ServerPolicy:
    """What a server will dial. `allow_private` (go's AllowPrivateAddrs; for labs and tests)
    lets it dial a non-public address, but only the requester's own observed IP: never a
    private address of somebody else. `is_public` decides what counts as public (tests make a
    netns range play the internet). `can_dial` is the transports' say."""

    allow_private: bool = False
    is_public: Callable[[str], bool] = is_public_ip
    can_dial: Callable[[Multiaddr], bool] = lambda _a: True
    min_dial_data: int = MIN_DIAL_DATA
    max_dial_data: int = MAX_DIAL_DATA

    def refusal(self, addr: Multiaddr, observed_ip: str | None) -> str | None:
        """Why `addr` is not dialled for a requester seen at `observed_ip` (None: dial it)."""
        ip = addr_ip(addr)
        if ip is None:
            return "not an IP address"
        if not self.can_dial(addr):
            return "no transport dials it"
        if not self.is_public(ip):
            if not self.allow_private:
                return "private address"
            if observed_ip is None or not _same_ip(ip, observed_ip):
                return "private address of another host"
        return None


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


# -- server rate limits -----------------------------------------------------------------------

@dataclass
class RateLimiter:
    """go-libp2p autonatv2's rateLimiter: sliding one-minute windows, globally, per peer and for
    dial-data requests, plus a cap on one peer's concurrent requests."""

    rpm: int = SERVER_RPM
    per_peer_rpm: int = SERVER_PER_PEER_RPM
    dial_data_rpm: int = SERVER_DIAL_DATA_RPM
    max_concurrent_per_peer: int = SERVER_MAX_CONCURRENT_PER_PEER
    _all: deque[float] = field(default_factory=deque)
    _peer: dict[str, deque[float]] = field(default_factory=dict)
    _dial_data: deque[float] = field(default_factory=deque)
    _in_progress: dict[str, int] = field(default_factory=dict)

    def _expire(self, now: float) -> None:
        for q in (self._all, self._dial_data, *self._peer.values()):
            while q and q[0] <= now - RATE_WINDOW:
                q.popleft()
        for p in [p for p, q in self._peer.items() if not q]:
            del self._peer[p]

    def accept(self, peer: str, now: float) -> bool:
        """Admit a request from `peer` (then `complete(peer)` when it ends)."""
        self._expire(now)
        q = self._peer.get(peer)
        if (len(self._all) >= self.rpm or (q is not None and len(q) >= self.per_peer_rpm)
                or self._in_progress.get(peer, 0) >= self.max_concurrent_per_peer):
            return False
        self._all.append(now)
        self._peer.setdefault(peer, deque()).append(now)
        self._in_progress[peer] = self._in_progress.get(peer, 0) + 1
        return True

    def accept_dial_data(self, now: float) -> bool:
        self._expire(now)
        if len(self._dial_data) >= self.dial_data_rpm:
            return False
        self._dial_data.append(now)
        return True

    def complete(self, peer: str) -> None:
        n = self._in_progress.get(peer, 0) - 1
        if n > 0:
            self._in_progress[peer] = n
        else:
            self._in_progress.pop(peer, None)

    def __len__(self) -> int:
        """Peers with a request in the window or in progress."""
        return len(set(self._peer) | set(self._in_progress))


# -- server -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    """Write these bytes; `then_close` ends the exchange (the response was sent)."""
    data: bytes
    then_close: bool = False


@dataclass(frozen=True)
class DialBack:
    """Dial `addr` on a new connection and send the nonce on /libp2p/autonat/2/dial-back;
    then call `ServerRequest.dial_result`."""
    addr: Multiaddr
    index: int
    nonce: int


ServerAction = Send | DialBack


def response(status: int, index: int = 0, dial_status: int = pb.UNUSED) -> bytes:
    return encode(pb.Message(dialResponse=pb.DialResponse(
        status=status, addrIdx=index, dialStatus=dial_status)))  # type: ignore[arg-type]  # protobuf enums are ints at runtime


class ServerRequest:
    """One /libp2p/autonat/2/dial-request stream on the server. Feed it the stream's bytes;
    it answers with `Send`/`DialBack` actions."""

    def __init__(self, policy: ServerPolicy, observed_ip: str | None, *,
                 limiter: RateLimiter | None = None, now: float = 0.0,
                 dial_data_size: int | None = None) -> None:
        self.policy = policy
        self.observed_ip = observed_ip
        self.limiter = limiter
        self.now = now
        self._dial_data_size = dial_data_size
        self._reader = MessageReader()
        self.state = "request"  # -> "dial-data" -> "dialing" -> "done"
        self._target: DialBack | None = None
        self._owed = 0
        self.refusals: list[tuple[Multiaddr, str]] = []  # what was skipped, and why (for logs)
        self.dial_data_received = 0

    def receive(self, data: bytes) -> list[ServerAction]:
        actions: list[ServerAction] = []
        for body in self._reader.feed(data):
            actions.extend(self._on_message(parse_message(body)))
        return actions

    def _on_message(self, msg: pb.Message) -> list[ServerAction]:
        kind = msg.WhichOneof("msg")
        if self.state == "request":
            if kind != "dialRequest":
                raise ProtocolError(f"autonat: expected a DialRequest, got {kind}")
            return self._on_request(msg.dialRequest)
        if self.state == "dial-data":
            if kind != "dialDataResponse":
                raise ProtocolError(f"autonat: expected DialDataResponse, got {kind}")
            n = len(msg.dialDataResponse.data)
            self.dial_data_received += n
            self._owed -= n
            if self._owed > 0 and n < MIN_DIAL_DATA_MESSAGE:
                raise ProtocolError(f"autonat: dial data message of {n} bytes is too small")
            if n > DIAL_DATA_CHUNK:
                raise ProtocolError(f"autonat: dial data message of {n} bytes (max {DIAL_DATA_CHUNK})")
            if self._owed <= 0:
                assert self._target is not None
                self.state = "dialing"
                return [self._target]
            return []
        raise ProtocolError(f"autonat: unexpected {kind} in state {self.state}")

    def _on_request(self, req: pb.DialRequest) -> list[ServerAction]:
        for i, raw in enumerate(req.addrs[:MAX_PEER_ADDRESSES]):
            try:
                addr = Multiaddr.from_bytes(raw)
            except (MultiaddrError, ValueError):
                continue
            why = self.policy.refusal(addr, self.observed_ip)
            if why is not None:
                self.refusals.append((addr, why))
                continue
            self._target = DialBack(addr.without_peer_id(), i, req.nonce)
            ip = addr_ip(addr)
            assert ip is not None
            if self.observed_ip is not None and _same_ip(ip, self.observed_ip):
                self.state = "dialing"
                return [self._target]
            if self.limiter is not None and not self.limiter.accept_dial_data(self.now):
                self.state = "done"
                return [Send(response(pb.DialResponse.E_REQUEST_REJECTED), then_close=True)]
            self.state = "dial-data"
            self._owed = self._dial_data_size or self.policy.min_dial_data
            return [Send(encode(pb.Message(dialDataRequest=pb.DialDataRequest(
                addrIdx=i, numBytes=self._owed))))]
        self.state = "done"
        return [Send(response(pb.DialResponse.E_DIAL_REFUSED), then_close=True)]

    def dial_result(self, dial_status: int) -> Send:
        """The outcome of the `DialBack`: OK, E_DIAL_ERROR or E_DIAL_BACK_ERROR."""
        if self.state != "dialing" or self._target is None:
            raise RuntimeError(f"dial_result in state {self.state}")
        self.state = "done"
        return Send(response(pb.DialResponse.OK, self._target.index, dial_status), then_close=True)


def rejected_response() -> bytes:
    """The answer to a request over the rate limits (E_REQUEST_REJECTED)."""
    return response(pb.DialResponse.E_REQUEST_REJECTED)


# -- client -----------------------------------------------------------------------------------

class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class CheckResult:
    """One server's answer about one address of ours."""
    status: str  # "ok", "refused" (E_DIAL_REFUSED), "rejected", "internal-error"
    addr: Multiaddr | None = None  # the address the server dialled (addrs[index])
    index: int = -1
    dial_status: str = "unused"  # "ok", "dial-error", "dial-back-error", "unused"
    dial_data_sent: int = 0
    reachability: Reachability = Reachability.UNKNOWN

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "addr": str(self.addr) if self.addr else None,
                "index": self.index, "dial_status": self.dial_status,
                "dial_data_sent": self.dial_data_sent,
                "reachability": self.reachability.value}


@dataclass(frozen=True)
class SendDialData:
    """Send `total` bytes of dial data (in DialDataResponse chunks) for addrs[index]."""
    index: int
    total: int


@dataclass(frozen=True)
class Done:
    result: CheckResult


@dataclass(frozen=True)
class AwaitDialBack:
    """The server says it dialled back but our dial-back handler has not seen the nonce yet:
    wait a moment for it, then call `ClientRequest.held_result()`."""


ClientAction = SendDialData | Done | AwaitDialBack

_RESPONSE_NAMES = {pb.DialResponse.OK: "ok", pb.DialResponse.E_DIAL_REFUSED: "refused",
                   pb.DialResponse.E_REQUEST_REJECTED: "rejected",
                   pb.DialResponse.E_INTERNAL_ERROR: "internal-error"}
_DIAL_NAMES = {pb.OK: "ok", pb.E_DIAL_ERROR: "dial-error",
               pb.E_DIAL_BACK_ERROR: "dial-back-error", pb.UNUSED: "unused"}


def dial_status_name(status: int) -> str:
    for key, name in _DIAL_NAMES.items():
        if key == status:
            return name
    return str(status)


class DialDataRefused(ProtocolError):
    """The server asked for dial data we will not send (the client resets the stream)."""


class ClientRequest:
    """One /libp2p/autonat/2/dial-request stream on the client."""

    def __init__(self, addrs: list[Multiaddr], nonce: int, *, send_dial_data: bool = True,
                 max_dial_data: int = CLIENT_MAX_DIAL_DATA) -> None:
        if not addrs:
            raise ValueError("autonat: nothing to check")
        self.addrs = addrs
        self.nonce = nonce
        self.send_dial_data = send_dial_data
        self.max_dial_data = max_dial_data
        self._reader = MessageReader()
        self.dial_data_sent = 0
        self.dial_back_received = False
        self._asked = False
        self._held: pb.DialResponse | None = None
        self._answered = False  # the DialResponse came: the exchange is over

    def request(self) -> bytes:
        return encode(pb.Message(dialRequest=pb.DialRequest(
            addrs=[a.to_bytes() for a in self.addrs], nonce=self.nonce)))

    def dial_back(self, nonce: int) -> bool:
        """A DialBack arrived on /libp2p/autonat/2/dial-back: True if it is ours."""
        if nonce == self.nonce:
            self.dial_back_received = True
            return True
        return False

    def receive(self, data: bytes) -> list[ClientAction]:
        out: list[ClientAction] = []
        for body in self._reader.feed(data):
            if self._answered:  # (fuzz autonat: a second response was taken too)
                raise ProtocolError("autonat: a message after the DialResponse")
            msg = parse_message(body)
            kind = msg.WhichOneof("msg")
            if kind == "dialDataRequest":
                out.append(self._on_dial_data(msg.dialDataRequest))
            elif kind == "dialResponse":
                self._answered = True
                resp = msg.dialResponse
                if (resp.status == pb.DialResponse.OK and resp.dialStatus == pb.OK
                        and not self.dial_back_received):
                    self._held = resp
                    out.append(AwaitDialBack())
                else:
                    out.append(Done(self._on_response(resp)))
            else:
                raise ProtocolError(f"autonat: unexpected {kind} from the server")
        return out

    def _on_dial_data(self, req: pb.DialDataRequest) -> SendDialData:
        if self._asked:
            raise ProtocolError("autonat: a second DialDataRequest")
        self._asked = True
        if req.addrIdx >= len(self.addrs):
            raise ProtocolError(f"autonat: DialDataRequest for address {req.addrIdx} of "
                                f"{len(self.addrs)}")
        if not self.send_dial_data:
            raise DialDataRefused("autonat: the server asks for dial data and we send none")
        if req.numBytes > self.max_dial_data:
            raise DialDataRefused(f"autonat: the server asks for {req.numBytes} bytes of dial "
                                  f"data (we send at most {self.max_dial_data})")
        self.dial_data_sent = req.numBytes
        return SendDialData(req.addrIdx, req.numBytes)

    def held_result(self) -> CheckResult:
        """The result of a response that waited for its dial-back (`AwaitDialBack`)."""
        if self._held is None:
            raise RuntimeError("no response is held")
        return self._on_response(self._held)

    def _on_response(self, resp: pb.DialResponse) -> CheckResult:
        if resp.status not in _KNOWN_RESPONSE:
            raise ProtocolError(f"autonat: unknown response status {resp.status}")
        status = _RESPONSE_NAMES[resp.status]
        if resp.status != pb.DialResponse.OK:
            return CheckResult(status, dial_data_sent=self.dial_data_sent)
        if resp.addrIdx >= len(self.addrs):
            raise ProtocolError(f"autonat: response for address {resp.addrIdx} of {len(self.addrs)}")
        if resp.dialStatus not in _KNOWN_DIAL:
            raise ProtocolError(f"autonat: unknown dial status {resp.dialStatus}")
        addr = self.addrs[resp.addrIdx]
        reach = Reachability.UNKNOWN
        if resp.dialStatus == pb.OK:
            # Spec: trust the nonce, not the server's word.
            if not self.dial_back_received:
                raise ProtocolError("autonat: the server reports a dial back we never received")
            reach = Reachability.PUBLIC
        elif resp.dialStatus == pb.E_DIAL_ERROR:
            reach = Reachability.PRIVATE
        return CheckResult(status, addr, resp.addrIdx, _DIAL_NAMES[resp.dialStatus],
                           self.dial_data_sent, reach)


def parse_dial_back(body: bytes) -> int:
    msg = pb.DialBack()
    try:
        msg.ParseFromString(body)
    except Exception as e:
        raise ProtocolError(f"autonat: undecodable DialBack: {e}") from None
    return msg.nonce


def dial_back_message(nonce: int) -> bytes:
    return encode(pb.DialBack(nonce=nonce))


def dial_back_response() -> bytes:
    return encode(pb.DialBackResponse(status=pb.DialBackResponse.OK))
