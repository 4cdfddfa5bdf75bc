"""Build the lab: an internet bridge, the relay host, and one network per side with its NAT.

Addresses (documentation ranges only, RFC 5737):
  internet 203.0.113.0/24: relay .10 (and .11, the second address of the probe and of the
  relay's STUN server), router A .1,
  router B .2, public peers A .21 / B .22;
  LANs: A 198.51.100.0/26 (router .1, peer .2), B 198.51.100.64/26 (router .65, peer .66);
  between the two routers of a double NAT: A 198.51.100.128/26, B 198.51.100.192/26.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from .nat import router_kinds, ruleset
from .netns import LabError, Namespaces, sh

log = logging.getLogger(__name__)

INTERNET = ipaddress.ip_network("203.0.113.0/24")
RELAY_IP = "203.0.113.10"
RELAY_IP2 = "203.0.113.11"
RELAY_PORT = 4884
RELAY_WS_PORT = 8080
STUN_PORT = 3478
PROBE_PORT = 3479  # probe server: RELAY_IP and RELAY_IP2, this port and the next
# The relay's RFC 5780 STUN sockets: RELAY_IP and RELAY_IP2, STUN_PORT and this one (the peers'
# NAT detection tells full cone from restricted with the second IP).
STUN_ALT_PORT = 3481
NOWHERE_IP = "203.0.113.254"  # the relay's default gateway: nobody (see Lab._build)
# coturn (`p2prtc lab --turn coturn`) on RELAY_IP, beside the relay's own STUN/TURN port, and
# its relayed ports (a range of their own, below our relay's 49152-65535).
COTURN_PORT = 3482
COTURN_MIN_PORT = 40000
COTURN_MAX_PORT = 40999


@dataclass(frozen=True)
class SidePlan:
    wan_ip: str       # router's WAN address on the internet
    public_ip: str    # the peer's address when the side is "public"
    lan: str          # peer LAN
    middle: str       # between the outer and inner router of a double NAT


PLANS = {
    "a": SidePlan("203.0.113.1", "203.0.113.21", "198.51.100.0/26", "198.51.100.128/26"),
    "b": SidePlan("203.0.113.2", "203.0.113.22", "198.51.100.64/26", "198.51.100.192/26"),
}


def _hosts(cidr: str) -> tuple[str, str, int]:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1), str(net.network_address + 2), net.prefixlen


@dataclass
class Side:
    name: str
    nat: str
    peer_ns: str = ""
    peer_ip: str = ""
    routers: list[str] = field(default_factory=list)  # namespaces, outermost first
    wan_ifaces: list[tuple[str, str]] = field(default_factory=list)  # (router ns, its WAN iface)

    @property
    def egress(self) -> tuple[str, str, str]:
        """(namespace, interface, chain) where packets leave this side towards the internet:
        the outermost router's LAN side, or a public peer's own interface."""
        if self.routers:
            return self.routers[0], "lan", "PREROUTING"
        return self.peer_ns, "eth0", "OUTPUT"


class Lab:
    """The namespaces and links of one lab. `build()` it, then `destroy()` it (always)."""

    def __init__(self, nat_a: str, nat_b: str, tag: str | None = None) -> None:
        self.ns = Namespaces(tag)
        self.sides = {"a": Side("a", nat_a), "b": Side("b", nat_b)}
        for side in self.sides.values():
            router_kinds(side.nat)  # validates
        self.inet = ""
        self.relay_ns = ""
        self._port = 0

    def _bridge_port(self, ns: str, iface: str, ip: str) -> None:
        """Plug `iface` of namespace `ns` into the internet bridge with address `ip`."""
        self._port += 1
        port = f"p{self._port}"
        self.ns.veth(self.inet, port, ns, iface)
        sh("ip", "-n", self.inet, "link", "set", port, "master", "br0")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/{INTERNET.prefixlen}", "dev", iface)

    def build(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        self.inet = self.ns.add("inet")
        sh("ip", "-n", self.inet, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.inet, "link", "set", "br0", "up")
        self.relay_ns = self.ns.add("relay")
        self._bridge_port(self.relay_ns, "eth0", RELAY_IP)
        sh("ip", "-n", self.relay_ns, "addr", "add", f"{RELAY_IP2}/{INTERNET.prefixlen}",
           "dev", "eth0")
        # As on the internet, packets to addresses nobody routes (a peer's private host
        # candidate, which a TURN server is asked to relay to) vanish: a default route to a
        # router that is not there, instead of ENETUNREACH at the sender (which coturn answers by
        # closing the whole allocation).
        sh("ip", "-n", self.relay_ns, "route", "add", "default", "via", NOWHERE_IP)
        for side in self.sides.values():
            self._build_side(side)

    def _build_side(self, side: Side) -> None:
        plan = PLANS[side.name]
        kinds = router_kinds(side.nat)
        side.peer_ns = self.ns.add(side.name)
        if not kinds:
            side.peer_ip = plan.public_ip
            self._bridge_port(side.peer_ns, "eth0", plan.public_ip)
            return
        # Routers from the internet inwards; each one's LAN is the next one's WAN.
        lans = [plan.middle, plan.lan] if len(kinds) == 2 else [plan.lan]
        # the router before this one: its namespace and its LAN's (gateway, host, prefix length)
        upstream: tuple[str, tuple[str, str, int]] | None = None
        for i, (kind, lan) in enumerate(zip(kinds, lans, strict=True)):
            r = self.ns.add(f"r{side.name}{i + 1}", forward=True)
            side.routers.append(r)
            gw, host, plen = _hosts(lan)
            if upstream is None:
                wan_ip = plan.wan_ip
                self._bridge_port(r, "wan", wan_ip)
            else:
                # The upstream router's "lan" end, its address is the gateway for this router.
                upstream_ns, (up_gw, wan_ip, up_plen) = upstream
                self.ns.veth(upstream_ns, "lan", r, "wan")
                sh("ip", "-n", upstream_ns, "addr", "add", f"{up_gw}/{up_plen}", "dev", "lan")
                sh("ip", "-n", r, "addr", "add", f"{wan_ip}/{up_plen}", "dev", "wan")
                sh("ip", "-n", r, "route", "add", "default", "via", up_gw)
            side.wan_ifaces.append((r, "wan"))
            sh("ip", "netns", "exec", r, "nft", "-f", "-", input=ruleset(kind, wan_ip, host))
            upstream = r, (gw, host, plen)
        if upstream is None:  # (kinds is not empty)
            raise LabError(f"no routers for a {side.nat} side")
        upstream_ns, (gw, host, plen) = upstream
        self.ns.veth(upstream_ns, "lan", side.peer_ns, "eth0")
        sh("ip", "-n", upstream_ns, "addr", "add", f"{gw}/{plen}", "dev", "lan")
        sh("ip", "-n", side.peer_ns, "addr", "add", f"{host}/{plen}", "dev", "eth0")
        sh("ip", "-n", side.peer_ns, "route", "add", "default", "via", gw)
        side.peer_ip = host

    def add_public_host(self, role: str, ips: list[str], *, blackhole: bool = False) -> str:
        """One more namespace on the internet (after `build()`): `ips` on its eth0 (the first
        plugged into the bridge). `blackhole`: a default route to nowhere, as the relay has (a
        TURN server's packets to unrouted addresses vanish). Returns the namespace."""
        ns = self.ns.add(role)
        self._bridge_port(ns, "eth0", ips[0])
        for ip in ips[1:]:
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{INTERNET.prefixlen}", "dev", "eth0")
        if blackhole:
            sh("ip", "-n", ns, "route", "add", "default", "via", NOWHERE_IP)
        return ns

    def destroy(self) -> None:
        self.ns.delete_all()

    def describe(self) -> dict[str, object]:
        return {
            "relay": RELAY_IP,
            "sides": {s.name: {"nat": s.nat, "peer_ip": s.peer_ip, "peer_ns": s.peer_ns,
                               "routers": s.routers} for s in self.sides.values()},
        }

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
