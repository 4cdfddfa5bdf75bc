"""Connection security: libp2p Noise (`noise.py`)."""
