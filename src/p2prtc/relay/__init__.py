"""The circuit relay v2 server (`p2prtc relay`): hop service, limits, accounting, metrics."""
