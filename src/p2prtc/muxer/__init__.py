"""Stream multiplexers: many ordered byte streams over one secured connection."""

from .yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from .yamux import YamuxMuxer, YamuxSession, YamuxStream

__all__ = ["YAMUX_PROTOCOL_ID", "YamuxMuxer", "YamuxSession", "YamuxStream"]
