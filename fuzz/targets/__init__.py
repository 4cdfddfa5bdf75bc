"""The fuzz targets: one module per decoder, each with `test_one(data: bytes)` (raises only on a
broken contract) and `seeds()` (valid encodings from our own encoders, for the corpus)."""

import importlib

NAMES = [
    "varint",
    "multistream",
    "noise_handshake",
    "noise_transport",
    "yamux",
    "pb_identify",
    "pb_circuit",
    "identity",
    "multiaddr",
    "webrtc_framing",
    "webrtc_stream",
    "signaling",
    "natinfo",
    "pb_turn_credentials",
    "stun",
    "turn",
    "kad",
    "peer_record",
    "autonat",
    "webrtc_stream_core",
]


def load(name: str):
    if name not in NAMES:
        raise KeyError(f"unknown fuzz target {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")
