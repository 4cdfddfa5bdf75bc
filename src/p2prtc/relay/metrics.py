"""Relay counters and their Prometheus text exposition (`--metrics-port`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .turn import TurnStats

if TYPE_CHECKING:
    from ..resources import ResourceManager
    from ..transports.tls import ReloadingCertificate


@dataclass
class RelayMetrics:
    reservations_active: int = 0
    reservations_total: int = 0
    circuits_active: int = 0
    circuits_total: int = 0
    bytes_relayed: int = 0
    connections_active: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # reason -> count
    turn: TurnStats = field(default_factory=TurnStats)  # the TURN server's (relay/turn.py)
    # the --wss-port certificate, when there is one
    certificate: ReloadingCertificate | None = None
    # the host's budgets, set by the relay app
    resources: ResourceManager | None = None

    def refuse(self, reason: str) -> None:
        self.refusals[reason] += 1

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, value: int, labels: str = "") -> None:
            if not any(l.startswith(f"# HELP {name} ") for l in lines):
                lines.append(f"# HELP {name} {help_}")
                lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{labels} {value}")

        metric("p2prtc_relay_reservations_active", "gauge", "Live reservations.",
               self.reservations_active)
        metric("p2prtc_relay_reservations_total", "counter", "Reservations accepted (incl. renewals).",
               self.reservations_total)
        metric("p2prtc_relay_circuits_active", "gauge", "Live relayed circuits.",
               self.circuits_active)
        metric("p2prtc_relay_circuits_total", "counter", "Circuits established.",
               self.circuits_total)
        metric("p2prtc_relay_bytes_relayed_total", "counter", "Bytes relayed, both directions.",
               self.bytes_relayed)
        metric("p2prtc_relay_connections_active", "gauge", "Open connections to the relay.",
               self.connections_active)
        if not self.refusals:
            metric("p2prtc_relay_refusals_total", "counter", "Refused requests by reason.", 0,
                   '{reason="none"}')
        for reason, count in sorted(self.refusals.items()):
            metric("p2prtc_relay_refusals_total", "counter", "Refused requests by reason.", count,
                   f'{{reason="{_escape_label(reason)}"}}')
        t = self.turn
        metric("p2prtc_relay_turn_allocations_active", "gauge", "Live TURN allocations.",
               t.allocations_active)
        metric("p2prtc_relay_turn_allocations_total", "counter", "TURN allocations made.",
               t.allocations_total)
        metric("p2prtc_relay_turn_bytes_relayed_total", "counter",
               "Bytes relayed through TURN allocations, both directions.", t.bytes_relayed)
        help_ = "Refused TURN requests and dropped TURN datagrams by reason."
        if not t.refusals:
            metric("p2prtc_relay_turn_refusals_total", "counter", help_, 0, '{reason="none"}')
        for reason, count in sorted(t.refusals.items()):
            metric("p2prtc_relay_turn_refusals_total", "counter", help_, count,
                   f'{{reason="{_escape_label(reason)}"}}')
        rm = self.resources
        if rm is not None:
            for scope, key, used, limit in rm.usage():
                labels = f'{{scope="{scope}",resource="{key}"}}'
                metric("p2prtc_relay_resource_usage", "gauge",
                       "Resources in use by scope (system, transient: connections not yet "
                       "authenticated); memory is bytes buffered in streams.", used, labels)
                metric("p2prtc_relay_resource_limit", "gauge",
                       "Budget of each scope and resource (0: none).", limit, labels)
            metric("p2prtc_relay_resource_peers", "gauge", "Peers holding resources.", rm.peers)
            help_ = "Connections and streams refused by a budget, by scope and resource."
            if not rm.refusals:
                metric("p2prtc_relay_resource_refusals_total", "counter", help_, 0,
                       '{scope="none",resource="none"}')
            for (scope, resource), count in sorted(rm.refusals.items()):
                metric("p2prtc_relay_resource_refusals_total", "counter", help_, count,
                       f'{{scope="{scope}",resource="{_escape_label(resource)}"}}')
        cert = self.certificate
        if cert is not None:
            cert.maybe_check()  # a renewal shows here even before the next TLS handshake
            if cert.not_after is not None:
                metric("p2prtc_relay_tls_certificate_expiry_timestamp_seconds", "gauge",
                       "When the WebSocket-over-TLS certificate in use expires (Unix time).",
                       int(cert.not_after))
            metric("p2prtc_relay_tls_certificate_reloads_total", "counter",
                   "Renewed certificates picked up without a restart.", cert.reloads)
        return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    # Text exposition format: a label value escapes backslash, double quote and line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
