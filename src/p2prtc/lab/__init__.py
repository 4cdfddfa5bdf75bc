"""The NAT lab: real NATs between network namespaces on one Linux machine.

    internet (bridge, 203.0.113.0/24) ── relay 203.0.113.10 (p2prtc relay + STUN, probe server)
       ├── router A (WAN 203.0.113.1, NAT type A) ── LAN 198.51.100.0/26  ── peer A
       └── router B (WAN 203.0.113.2, NAT type B) ── LAN 198.51.100.64/26 ── peer B

Modules: `netns` (namespaces, links, cleanup), `nat` (the NAT types as nftables rulesets and the
theory of which pairs connect), `topology` (builds the lab), `probe` (measures what a NAT really
does), `netem` (delay/loss through NFQUEUE, as this kernel has no netem), `agent` and
`browser_agent` (the peers, run inside their namespaces, JSON lines out), `scenario` (one run and
the matrix), `chaos` and `chaos_agent` (faults on a direct connection: `p2prtc lab chaos`), `cli`
(`p2prtc lab`). docs/lab.md explains the whole thing.
"""
