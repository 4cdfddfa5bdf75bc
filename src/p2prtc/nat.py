"""NAT behaviour discovery (RFC 5780 section 4) against one STUN server: how our NAT maps (does
the public port change per destination?) and filters (which senders get in?).

`classify(ProbeResults)` is the sans-I/O part: it turns what the probes saw into a
`NatBehaviour`. `detect(host, port)` is the small asyncio probe that fills `ProbeResults`, always
within `DETECT_TIMEOUT` (probes that get no answer are the signal for filtering, so every wait is
short and named).

The probes, with the server's primary address A1:P1 and its OTHER-ADDRESS A2:P2 (our relay's
STUN: `p2prtc relay --stun-alt-port/--stun-alt-ip`):
- mapping, on one socket: binding requests to A1:P1, then A2:P1, then A2:P2 (RFC 5780 4.3). Same
  mapped address everywhere: endpoint-independent; a new one per address: address-dependent; per
  address and port: address-and-port-dependent ("symmetric"). With no second IP (OTHER-ADDRESS
  on A1) the second destination is A1:P2, which tells endpoint-independent from port-dependent.
  The mapped address equal to our own: no NAT.
- filtering, on a second socket that has sent only to A1:P1: CHANGE-REQUEST asking for the answer
  from A2:P2 and, at the same time, from A1:P2 (RFC 5780 4.4). The first arrives: endpoint-
  independent; only the second: address-dependent; neither within a few round trips (at most
  `FILTER_WAIT`): address-and-port-dependent. A server that cannot change IP leaves us
  "port-independent" (one of the first two); a server that answers from where we sent (ignoring
  CHANGE-REQUEST) or not at all: unknown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypedDict, cast

from .transports.webrtc_direct import stun as codec
from .transports.webrtc_direct.stun import StunError

log = logging.getLogger(__name__)

# The whole detection, whatever the network does (issue 10: a verdict within 1.5 s).
DETECT_TIMEOUT = 1.4
# No answer to our first binding request by then: the server is not reachable.
SERVER_TIMEOUT = 0.8
# A mapping probe to the server's other address that is not answered by then is "unknown".
MAPPING_TIMEOUT = 0.5
# How long a filtering probe waits for an answer from another address/port; silence means the
# NAT dropped it: FILTER_WAIT_RTTS round trips as measured by the first request, within
# [FILTER_WAIT_MIN, FILTER_WAIT] (room for one retransmission; short enough for DETECT_TIMEOUT).
FILTER_WAIT = 0.5
FILTER_WAIT_MIN = 0.2
FILTER_WAIT_RTTS = 4
# Retransmissions of one request (seconds after the first send), well inside the waits above;
# RFC 8489's 500 ms RTO would leave no room for a second try.
RETRANSMIT_AT = (0.1, 0.3)
DEFAULT_STUN_PORT = 3478

NONE = "none"  # no NAT: the server sees our own address
EI = "endpoint-independent"
AD = "address-dependent"
APD = "address-and-port-dependent"
PORT_INDEPENDENT = "port-independent"  # filtering: EI or AD, the server cannot tell which
UNKNOWN = "unknown"
MAPPINGS = (NONE, EI, AD, APD, UNKNOWN)
FILTERINGS = (EI, AD, APD, PORT_INDEPENDENT, UNKNOWN)
LAB_TYPES = ("public", "full-cone", "restricted", "port-restricted", "symmetric", UNKNOWN)

Addr = tuple[str, int]


class NatBehaviourDict(TypedDict):
    """NatBehaviour as JSON (natinfo messages, `nat` events)."""

    mapping: str
    filtering: str
    type: str
    public: str | None
    server: str | None
    error: str | None


def fmt_addr(addr: Addr | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def parse_addr(text: str, default_port: int | None = None) -> Addr:
    """"ip:port", "[v6]:port" or "host" (with default_port) -> (host, port); ValueError if not."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
        if ":" in text:
            ipaddress.IPv6Address(text)  # ValueError unless a bare IPv6 address
    if not port:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"bad address {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class NatBehaviour:
    mapping: str
    filtering: str
    public: Addr | None = None   # our address:port as the STUN server saw it
    server: str | None = None    # the STUN server asked, "host:port"
    error: str | None = None     # why the result is unknown, in words

    @property
    def lab_type(self) -> str:
        """The NAT lab's name for this behaviour (a double NAT looks like its outer one)."""
        m, f = self.mapping, self.filtering
        if m in (AD, APD):
            return "symmetric"
        if m == NONE:
            return {AD: "restricted", APD: "port-restricted"}.get(f, "public")
        if m == EI:
            return {EI: "full-cone", AD: "restricted", APD: "port-restricted"}.get(f, UNKNOWN)
        return UNKNOWN

    @property
    def known(self) -> bool:
        return self.mapping != UNKNOWN

    def describe(self) -> str:
        if self.mapping == UNKNOWN and self.public is None:
            return f"NAT behaviour unknown: {self.error or 'no answer from the STUN server'}."
        parts = []
        t = self.lab_type
        mapping = {
            NONE: "the STUN server sees our own address",
            EI: "the NAT keeps one public port per socket whatever the destination "
                "(endpoint-independent mapping)",
            AD: "the NAT uses a new public port for each destination address "
                "(address-dependent mapping)",
            APD: "the NAT uses a new public port for each destination address and port "
                 "(address-and-port-dependent mapping)",
            UNKNOWN: "whether the public port changes per destination is unknown"
                     + (f" ({self.error})" if self.error else ""),
        }[self.mapping]
        filtering = {
            EI: "it lets in packets from anyone (endpoint-independent filtering)",
            AD: "it lets in packets only from addresses we have sent to "
                "(address-dependent filtering)",
            APD: "it lets in packets only from the exact address and port we have sent to "
                 "(address-and-port-dependent filtering)",
            PORT_INDEPENDENT: "it lets in packets from other ports of an address we have sent "
                              "to (the server has no second IP to tell whether from anyone)",
            UNKNOWN: "its filtering is unknown (the server offers no second address or port)",
        }[self.filtering]
        parts.append(self._name() if t != "public" else "not behind a NAT")
        parts.append(mapping)
        parts.append(filtering)
        if self.public is not None:
            parts.append(f"public address {fmt_addr(self.public)}")
        if self.server:
            parts.append(f"STUN server {self.server}")
        return "; ".join(parts) + "."

    def short(self) -> str:
        """A few words naming the behaviour, for messages about two of them."""
        name = "no NAT" if self.lab_type == "public" else self._name()
        if self.filtering == UNKNOWN:  # e.g. decided on the mapping alone
            return f"{name} ({self.mapping} mapping)"
        return f"{name} ({self.mapping} mapping, {self.filtering} filtering)"

    def _name(self) -> str:
        t = self.lab_type
        if t != UNKNOWN:
            return f"{t} NAT"
        if self.mapping == EI and self.filtering == PORT_INDEPENDENT:
            return "full-cone or restricted NAT"
        return "NAT of unknown type"

    def to_dict(self) -> NatBehaviourDict:
        return {"mapping": self.mapping, "filtering": self.filtering, "type": self.lab_type,
                "public": fmt_addr(self.public), "server": self.server, "error": self.error}

    @classmethod
    def from_dict(cls, d: object) -> NatBehaviour:
        """From a peer's JSON: unknown values become "unknown"; raises ValueError if not a dict."""
        if not isinstance(d, dict):
            raise ValueError("NAT behaviour is not an object")
        def text(key: str) -> str | None:
            value = d.get(key)
            return value if isinstance(value, str) else None

        mapping = text("mapping")
        filtering = text("filtering")
        public = None
        public_text = text("public")
        if public_text is not None:
            try:
                host, port = parse_addr(public_text)
                public = (str(ipaddress.ip_address(host)), port)
            except ValueError:
                public = None
        server = text("server")
        error = text("error")
        mapping = mapping if mapping in MAPPINGS else UNKNOWN
        filtering = filtering if filtering in FILTERINGS else UNKNOWN
        return cls(mapping, filtering, public, server and server[:300], error and error[:300])


def unknown(server: str | None, error: str) -> NatBehaviour:
    return NatBehaviour(UNKNOWN, UNKNOWN, None, server, error)


def direct_path_ruled_out(a: NatBehaviour | None, b: NatBehaviour | None) -> str | None:
    """Why theory rules out a direct (hole-punched) path between peers behind `a` and `b`, in
    words naming both behaviours; None when it may work or we do not know enough.

    A side whose mapping depends on the destination sends its checks from a port the other side
    never learned from STUN; a side filtering per address and port drops exactly those. So: one
    side address(-and-port)-dependent mapping and the other address-and-port-dependent filtering,
    or both destination-dependent (src/p2prtc/lab/nat.py `predict`, the lab's results table).
    """
    if a is None or b is None:
        return None
    dep = (AD, APD)
    pair = f"between {a.short()} here and {b.short()} there"
    if a.mapping in dep and b.mapping in dep:
        return (f"no direct path possible {pair}: both sides send from a new port per "
                "destination, a port the other side never learned")
    for x, y in ((a, b), (b, a)):
        if x.mapping in dep and y.filtering == APD:
            return (f"no direct path possible {pair}: the {x.lab_type} side sends from a new "
                    "port per destination and the other side only accepts the address and port "
                    "it has sent to")
    return None


# -- the sans-I/O classifier ---------------------------------------------------------------------


@dataclass
class ProbeResults:
    """What the probes saw. None: not run, or no answer."""
    server: Addr
    local: Addr | None = None            # the mapping socket's own address
    mapped: Addr | None = None           # test I: to the primary address
    origin: Addr | None = None           # RESPONSE-ORIGIN of test I
    other: Addr | None = None            # OTHER-ADDRESS of test I
    mapped_second: Addr | None = None    # test II: to (other IP, primary port), or to the other
                                         # port when the server has no second IP
    mapped_third: Addr | None = None     # test III: to (other IP, other port)
    second_dest: Addr | None = None      # where test II went
    # Filtering: True answered from the asked-for address, False no answer within FILTER_WAIT,
    # None not run / refused (error 420) / answered from the wrong address.
    filter_change_ip_port: bool | None = None
    filter_change_port: bool | None = None
    error: str | None = None


def classify(r: ProbeResults) -> NatBehaviour:
    server = fmt_addr(r.server)
    if r.mapped is None:
        return unknown(server, r.error or f"no answer from the STUN server at {server}")
    no_nat = r.local is not None and r.mapped == r.local
    mapping, error = UNKNOWN, None
    if r.other is None:
        error = "the STUN server gives no OTHER-ADDRESS (RFC 5780)"
    elif r.mapped_second is None:
        error = f"no answer from the STUN server's other address {fmt_addr(r.second_dest)}"
    elif r.mapped_second == r.mapped:
        mapping = EI
    else:
        two_ips = r.second_dest is not None and r.second_dest[0] != r.server[0]
        if not two_ips:
            mapping = APD  # a new port for the server's other port
        elif r.mapped_third is None:
            mapping = AD  # at least; the third probe went unanswered
        else:
            mapping = AD if r.mapped_third == r.mapped_second else APD
    if no_nat:
        mapping = NONE
    filtering = UNKNOWN
    if r.filter_change_ip_port:
        filtering = EI
    elif r.filter_change_port:
        filtering = AD if r.filter_change_ip_port is False else PORT_INDEPENDENT
    elif r.filter_change_port is False:  # (filter_change_ip_port is not True here)
        filtering = APD
    return NatBehaviour(mapping, filtering, r.mapped, server, error or r.error)


# -- the asyncio probe ---------------------------------------------------------------------------


class _StunClient(asyncio.DatagramProtocol):
    """One UDP socket; requests matched to answers by transaction id (answers to CHANGE-REQUEST
    come from another address)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[tuple[codec.StunMessage, Addr]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint's transport (uvloop's is not an asyncio.DatagramTransport
        # subclass, hence no isinstance)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        try:
            msg = codec.parse(data)
        except StunError as e:
            log.debug("ignoring a datagram from %s: %s", addr[0], e)
            return
        fut = self.waiting.get(msg.txid)
        if fut is not None and not fut.done():
            fut.set_result((msg, (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("STUN probe socket: %s", exc)

    async def request(self, dest: Addr, wait: float, *, change_ip: bool = False,
                      change_port: bool = False) -> tuple[codec.StunMessage, Addr] | None:
        """Send a binding request (retransmitted per RETRANSMIT_AT); the answer or None."""
        txid = codec.new_transaction_id()
        attrs = [(codec.ATTR_SOFTWARE, codec.SOFTWARE)]
        if change_ip or change_port:
            attrs.append((codec.ATTR_CHANGE_REQUEST,
                          codec.change_request_value(change_ip, change_port)))
        data = codec.build(codec.BINDING_REQUEST, txid, attrs)
        fut: asyncio.Future[tuple[codec.StunMessage, Addr]]
        fut = asyncio.get_running_loop().create_future()
        self.waiting[txid] = fut
        start = time.monotonic()
        try:
            for at in (0.0, *RETRANSMIT_AT):
                if at >= wait:
                    break
                delay = start + at - time.monotonic()
                if delay > 0:
                    done, _ = await asyncio.wait({fut}, timeout=delay)
                    if done:
                        return fut.result()
                assert self.transport is not None
                try:
                    self.transport.sendto(data, dest)
                except OSError as e:
                    log.debug("STUN probe to %s: %s", fmt_addr(dest), e)
            remaining = start + wait - time.monotonic()
            done, _ = await asyncio.wait({fut}, timeout=max(0.0, remaining))
            return fut.result() if done else None
        finally:
            self.waiting.pop(txid, None)
            fut.cancel()


def _local_ip_towards(ip: str) -> str | None:
    """The address we send to `ip` from (a route lookup; connecting a UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((ip, 9))
            local: str = s.getsockname()[0]
            return local
    except OSError:
        return None


async def _mapping(client: _StunClient, r: ProbeResults) -> None:
    got = await client.request(r.server, SERVER_TIMEOUT)
    if got is None:
        return
    msg, _src = got
    if msg.msg_type != codec.BINDING_SUCCESS:
        r.error = f"the STUN server answered with error {msg.error_code()}"
        return
    r.mapped = msg.xor_mapped_address() or msg.mapped_address()
    r.origin = msg.response_origin()
    r.other = msg.other_address()
    if r.mapped is None or r.other is None:
        return
    server_ip = r.server[0]
    # A server behind a NAT or bound to 0.0.0.0 may name an address we cannot reach: its port
    # still tells us where the alternate listens on the address we did reach.
    same_ip = r.other[0] == (r.origin[0] if r.origin else server_ip) or r.other[0] == server_ip
    if same_ip:
        r.second_dest = (server_ip, r.other[1])
    else:
        r.second_dest = (r.other[0], r.server[1])
    got = await client.request(r.second_dest, MAPPING_TIMEOUT)
    if got is None or got[0].msg_type != codec.BINDING_SUCCESS:
        return
    r.mapped_second = got[0].xor_mapped_address() or got[0].mapped_address()
    if same_ip or r.mapped_second == r.mapped:
        return
    got = await client.request(r.other, MAPPING_TIMEOUT)
    if got is not None and got[0].msg_type == codec.BINDING_SUCCESS:
        r.mapped_third = got[0].xor_mapped_address() or got[0].mapped_address()


async def _filtering(client: _StunClient, r: ProbeResults) -> None:
    t0 = time.monotonic()
    got = await client.request(r.server, SERVER_TIMEOUT)
    wait = min(FILTER_WAIT, max(FILTER_WAIT_MIN, FILTER_WAIT_RTTS * (time.monotonic() - t0)))
    if got is None or got[0].msg_type != codec.BINDING_SUCCESS:
        return
    other = got[0].other_address()
    if other is None:
        return
    server_ip = r.server[0]

    async def change(change_ip: bool) -> bool | None:
        ans = await client.request(r.server, wait, change_ip=change_ip, change_port=True)
        if ans is None:
            return False
        msg, src = ans
        if msg.msg_type != codec.BINDING_SUCCESS:
            return None  # e.g. 420: the server cannot change IP
        if src == r.server or (change_ip and src[0] == server_ip):
            return None  # answered from where we sent: CHANGE-REQUEST ignored, tells nothing
        return True

    r.filter_change_ip_port, r.filter_change_port = await asyncio.gather(change(True),
                                                                         change(False))


async def detect(host: str, port: int = DEFAULT_STUN_PORT, *,
                 timeout: float = DETECT_TIMEOUT,
                 on_mapping: Callable[[NatBehaviour], None] | None = None) -> NatBehaviour:
    """Our NAT's behaviour as seen through the STUN server host:port; never takes longer than
    `timeout` and never raises for network trouble (the result is then "unknown", saying why).
    `on_mapping` gets the behaviour with the mapping alone as soon as the (fast) mapping probes
    are done, before the filtering probes' waits end."""
    deadline = time.monotonic() + timeout
    label = fmt_addr((host, port))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except TimeoutError:
        return unknown(label, f"cannot resolve {host} within {timeout:g} s")
    except OSError as e:
        return unknown(label, f"cannot resolve {host}: {e.strerror or e}")
    family, _, _, _, sockaddr = infos[0]
    r = ProbeResults(server=(str(sockaddr[0]), int(sockaddr[1])))  # an AF_INET(6) address
    any_ip = "::" if family == socket.AF_INET6 else "0.0.0.0"
    transports = []
    try:
        clients = []
        for _ in range(2):
            t, c = await loop.create_datagram_endpoint(_StunClient, local_addr=(any_ip, 0),
                                                       family=family)
            transports.append(t)
            clients.append(c)
        local_ip = _local_ip_towards(r.server[0])
        if local_ip is not None:
            r.local = (local_ip, transports[0].get_extra_info("sockname")[1])
        remaining = max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                async def mapping() -> None:
                    await _mapping(clients[0], r)
                    if on_mapping is not None:
                        on_mapping(classify(replace(r, filter_change_ip_port=None,
                                                    filter_change_port=None)))

                await asyncio.gather(mapping(), _filtering(clients[1], r))
        except TimeoutError:
            log.debug("NAT detection via %s cut at %.1f s", label, timeout)
    except OSError as e:
        return unknown(label, f"cannot send to {label}: {e.strerror or e}")
    finally:
        for t in transports:
            t.close()
    result = classify(r)
    if result.server != label:
        result = NatBehaviour(result.mapping, result.filtering, result.public, label,
                              result.error)
    return result


def stun_server_for(target: str) -> Addr:
    """`stun:host[:port]`, `host:port`, or a relay multiaddr (its host, port 3478) -> (host, port).
    Raises ValueError with a reason."""
    if target.startswith("/"):
        from .multiaddr import Multiaddr

        addr = Multiaddr(target)
        for proto in ("ip4", "ip6", "dns4", "dns6", "dns"):
            host = addr.value_for(proto)
            if host:
                return host, DEFAULT_STUN_PORT
        raise ValueError(f"{target} has no IP address or DNS name")
    text = target[5:] if target.startswith("stun:") else target
    text = text.split("?", 1)[0]
    return parse_addr(text, DEFAULT_STUN_PORT)


class Probe(Protocol):
    """What NatDetector runs: `detect`'s signature."""

    def __call__(self, host: str, port: int, *,
                 on_mapping: Callable[[NatBehaviour], None] | None = None,
                 ) -> Coroutine[Any, Any, NatBehaviour]:
        ...


# Makes a task of a coroutine (asyncio.ensure_future, Host.spawn).
Spawn = Callable[[Coroutine[Any, Any, NatBehaviour]], "asyncio.Future[NatBehaviour]"]


class NatDetector:
    """Runs `detect` once in the background for a peer; `result(wait)` gives the behaviour,
    `mapping_result(wait)` the mapping part as soon as it is known (or None)."""

    def __init__(self, server: Addr | None, probe: Probe | None = None) -> None:
        """probe(host, port, on_mapping=...) -> NatBehaviour: `detect` unless given."""
        self.server = server
        self.probe: Probe = probe or detect
        self.task: asyncio.Future[NatBehaviour] | None = None
        self._mapping: asyncio.Future[NatBehaviour] | None = None

    @classmethod
    def known(cls, behaviour: NatBehaviour) -> NatDetector:
        """A detector whose result is already there (tests, or a behaviour learned elsewhere)."""
        d = cls(None)
        fut: asyncio.Future[NatBehaviour] = asyncio.get_running_loop().create_future()
        fut.set_result(behaviour)
        d.task = fut
        return d

    def start(self, spawn: Spawn = asyncio.ensure_future) -> asyncio.Future[NatBehaviour]:
        """Start the detection (once) as a task made by `spawn` (e.g. `Host.spawn`, so that
        closing the host ends it)."""
        if self.task is None:
            self._mapping = asyncio.get_running_loop().create_future()
            if self.server is None:
                async def none() -> NatBehaviour:
                    return unknown(None, "no STUN server to ask")
                self.task = spawn(none())
            else:
                self.task = spawn(self.probe(*self.server, on_mapping=self._mapping_known))
        return self.task

    def _mapping_known(self, partial: NatBehaviour) -> None:
        if self._mapping is not None and not self._mapping.done():
            self._mapping.set_result(partial)

    @property
    def done(self) -> NatBehaviour | None:
        if self.task is not None and self.task.done() and not self.task.cancelled():
            return self.task.result()
        return None

    async def result(self, wait: float) -> NatBehaviour | None:
        """Our behaviour, waiting at most `wait` seconds for the detection to end."""
        return await self._wait([self.start()], wait)

    async def mapping_result(self, wait: float) -> NatBehaviour | None:
        """The whole behaviour if known, else the mapping part (filtering "unknown") once the
        mapping probes are done; waits at most `wait` seconds."""
        task = self.start()
        futs = [task] + ([self._mapping] if self._mapping is not None else [])
        return await self._wait(futs, wait)

    async def _wait(self, futs: list[asyncio.Future[NatBehaviour]], wait: float) -> NatBehaviour | None:
        done, _ = await asyncio.wait(futs, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        for f in futs:  # the whole result first
            if f in done and not f.cancelled() and f.exception() is None:
                return f.result()
        return None

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def could_be_ruled_out(partial: NatBehaviour, theirs: NatBehaviour) -> bool:
    """Whether what `partial` does not know yet (unknown mapping or filtering) could still make
    `direct_path_ruled_out(mine, theirs)` say no: then it is worth waiting for the rest."""
    maps = [partial.mapping] if partial.mapping != UNKNOWN else [EI, APD]
    filts = [partial.filtering] if partial.filtering != UNKNOWN else [EI, APD]
    return any(direct_path_ruled_out(NatBehaviour(m, f), theirs) for m in maps for f in filts)
