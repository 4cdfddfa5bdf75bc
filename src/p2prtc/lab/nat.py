"""NAT types: how each is built with nftables, and what theory predicts for a pair of them.

Vocabulary of RFC 4787 / RFC 5780: a NAT's *mapping* is endpoint-independent (EIM: one public
port per inside socket, whatever the destination) or address-and-port-dependent (a new public port
per destination); its *filtering* lets in packets from anyone (EIF), from addresses the inside
socket has sent to (ADF), or only from the exact address:port it has sent to (APDF).

| type            | mapping | filtering | built with                                              |
|-----------------|---------|-----------|---------------------------------------------------------|
| public          | none    | none      | the peer sits on the internet bridge                     |
| full-cone       | EIM     | EIF       | SNAT to the WAN address (keeps ports) + DNAT of new inbound UDP to the peer |
| restricted      | EIM     | ADF       | as full-cone, but DNAT only from (address, port) pairs in a dynamic set filled by outbound UDP |
| port-restricted | EIM     | APDF      | masquerade (Linux keeps the source port, conntrack filters per endpoint) |
| symmetric       | APDM    | APDF      | masquerade fully-random (a random port per conntrack entry) |
| double          | EIM     | APDF      | two port-restricted routers in a row                    |

Every router drops unsolicited inbound packets addressed to itself (TESTING.md's pitfall: an
accepted one leaves a conntrack entry our own ICE check then collides with, so masquerade picks a
new port and a port-restricted pair fails as if symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

NAT_TYPES = ("public", "full-cone", "restricted", "port-restricted", "symmetric", "double")

# What the probe should see for each type: (mapping, filtering, routers between peer and internet).
EXPECTED = {
    "public": ("none", "endpoint-independent", 0),
    "full-cone": ("endpoint-independent", "endpoint-independent", 1),
    "restricted": ("endpoint-independent", "address-dependent", 1),
    "port-restricted": ("endpoint-independent", "address-and-port-dependent", 1),
    "symmetric": ("address-and-port-dependent", "address-and-port-dependent", 1),
    "double": ("endpoint-independent", "address-and-port-dependent", 2),
}


def router_kinds(nat: str) -> list[str]:
    """The routers of one side, outermost first (each a NAT kind understood by `ruleset`)."""
    if nat not in NAT_TYPES:
        raise ValueError(f"unknown NAT type {nat!r}; one of {', '.join(NAT_TYPES)}")
    if nat == "public":
        return []
    if nat == "double":
        return ["port-restricted", "port-restricted"]
    return [nat]


def ruleset(kind: str, wan_ip: str, lan_host: str, wan: str = "wan") -> str:
    """The nftables ruleset of a router of `kind` whose WAN interface is `wan` with `wan_ip`,
    with one host (`lan_host`) behind it."""
    guard = f"""
  chain input_guard {{
    type filter hook input priority 0; policy accept;
    iifname "{wan}" ct state new drop
  }}"""
    forward_rules = [f'iifname "{wan}" ct state new ct status dnat accept',
                     f'iifname "{wan}" ct state new drop']
    extra = ""
    if kind == "port-restricted":
        post = f'oifname "{wan}" masquerade'
        pre = ""
    elif kind == "symmetric":
        post = f'oifname "{wan}" masquerade fully-random'
        pre = ""
    elif kind == "full-cone":
        post = f'oifname "{wan}" snat to {wan_ip}'
        pre = f'iifname "{wan}" meta l4proto udp dnat to {lan_host}'
    elif kind == "restricted":
        post = f'oifname "{wan}" snat to {wan_ip}'
        pre = f'iifname "{wan}" meta l4proto udp ip saddr . udp dport @contacted dnat to {lan_host}'
        # (remote address, inside port) of every outbound UDP packet; the inside port is the
        # public one too, as SNAT keeps ports when it can (one host behind the router).
        forward_rules.insert(0, f'oifname "{wan}" meta l4proto udp update @contacted '
                                '{ ip daddr . udp sport }')
        extra = """
  set contacted {
    type ipv4_addr . inet_service
    flags dynamic, timeout
    timeout 10m
  }"""
    else:
        raise ValueError(f"no router ruleset for {kind!r}")
    forward = "\n    ".join(forward_rules)
    prenat = f"""
  chain prenat {{
    type nat hook prerouting priority dstnat; policy accept;
    {pre}
  }}""" if pre else ""
    return f"""table ip p2plab {{{extra}{guard}
  chain forward_guard {{
    type filter hook forward priority 0; policy accept;
    {forward}
  }}
  chain postnat {{
    type nat hook postrouting priority srcnat; policy accept;
    {post}
  }}{prenat}
}}
"""


@dataclass(frozen=True)
class Prediction:
    direct: bool
    why: str


_FILTERING = {
    "public": "open", "full-cone": "EIF", "restricted": "ADF",
    "port-restricted": "APDF", "double": "APDF", "symmetric": "APDF",
}


def predict(a: str, b: str) -> Prediction:
    """Does theory say two peers behind NAT types `a` and `b` can connect directly (UDP hole
    punching with ICE, each side knowing its server-reflexive address from the relay's STUN)?

    Each peer learns its public address:port from STUN and sends it to the other over the relay;
    both then send ICE checks to each other at the same time. A check gets through when the
    receiving NAT lets it in, and the receiver learns the sender's real public port from it
    (a peer-reflexive candidate) and can answer there.

    - No NAT or a full cone on one side: that side receives from anyone on the port STUN saw, so
      the other side's checks arrive whatever its own NAT does; the reply goes back to the port
      they came from. Direct works.
    - Endpoint-independent mapping on both sides (restricted, port-restricted, double): each side's
      checks leave from the port STUN saw, the other side has already sent to that exact
      address:port, so even per-port filtering lets them in. Direct works.
    - Symmetric on one side: its checks leave from a fresh port STUN never saw. An address-restricted
      peer lets them in (it has sent to that address) and answers the new port: direct works. A
      port-restricted (or double, or symmetric) peer drops them: it only ever sent to the port in
      the STUN candidate, and the symmetric side in turn drops everything not from the port it
      sent to. No candidate pair can work.

    So direct fails exactly when one side is symmetric and the other filters per port
    (port-restricted, double or symmetric).
    """
    for t in (a, b):
        if t not in NAT_TYPES:
            raise ValueError(f"unknown NAT type {t!r}")
    if a == "symmetric" and b == "symmetric":
        return Prediction(False, "symmetric NAT on both sides: each side's checks leave from a "
                                 "port the other never learned, and both filter per port; "
                                 "no candidate pair works")
    if "symmetric" in (a, b):
        other = b if a == "symmetric" else a
        f = _FILTERING[other]
        if f == "APDF":
            return Prediction(False, f"symmetric NAT against a {other} NAT: the symmetric side "
                                     "sends from a new port per destination and the "
                                     f"{other} side only accepts the port STUN reported; "
                                     "no candidate pair works")
        if f == "ADF":
            return Prediction(True, "the restricted side accepts the symmetric side's new port "
                                    "(same address) and answers it (peer-reflexive pair)")
        return Prediction(True, f"the {other} side accepts packets from any port, so the "
                                "symmetric side's checks get through (peer-reflexive pair)")
    if "public" in (a, b) or "full-cone" in (a, b):
        return Prediction(True, "one side accepts packets from anyone on its STUN port")
    return Prediction(True, "both NATs keep one public port per socket, so the ports STUN "
                            "reported are the ones checks come from")
