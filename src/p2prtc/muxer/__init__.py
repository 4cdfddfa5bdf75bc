"""Stream multiplexers: many ordered byte streams over one secured connection."""

from .yamux import YamuxMuxer, YamuxStream
from .yamux_session import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from .yamux_session import YamuxSession

__all__ = ["YAMUX_PROTOCOL_ID", "YamuxMuxer", "YamuxSession", "YamuxStream"]
