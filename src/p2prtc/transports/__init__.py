"""Transports: how a connection to a multiaddr is made (TCP, WebSocket, relay circuit, WebRTC)."""

from .base import Listener, RawConnection, Transport

__all__ = ["Listener", "RawConnection", "Transport"]
