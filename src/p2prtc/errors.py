"""Exception types shared by every layer.

Anything a remote peer can cause derives from `ProtocolError`: the layer that sees it ends the
stream or connection with the message as the logged reason, and nothing above it crashes.
"""


class P2PError(Exception):
    """Base class of p2prtc errors."""


class ProtocolError(P2PError):
    """The remote peer sent something that breaks the protocol (malformed, oversized, unexpected)."""


class StreamClosed(P2PError):
    """Writing to (or opening) a stream that is closed, reset or whose connection ended."""


class StreamReset(StreamClosed):
    """The stream was reset by either side; data in flight may be lost."""


class NegotiationFailed(P2PError):
    """multistream-select found no protocol both sides support."""


class DialError(P2PError):
    """A dial failed; the message says why in words a user can act on."""


class HandshakeError(ProtocolError):
    """The security handshake failed (bad signature, unexpected peer, bad message)."""
