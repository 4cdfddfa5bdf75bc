"""p2prtc: private-to-private WebRTC with libp2p, in Python."""

__version__ = "0.1.0"
AGENT_VERSION = f"p2prtc/{__version__}"
