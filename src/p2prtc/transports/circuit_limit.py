"""What a relay's circuit limits leave us, and why a relayed connection ended, in words.

Circuit relay v2 carries no reason when a relay ends a circuit (rust-libp2p resets the streams at
its limit, go and our relay end them with FIN), so the peer itself must know: the relay gives the
limit in the reservation, STOP or CONNECT message (`Limit{duration, data}`, 0 = none), and the peer
counts its own bytes and time on the raw circuit byte stream. Sans-I/O: callers pass the clock.

Counting: rust-libp2p's relay counts both directions together against `max_circuit_bytes`; go's
and ours count each direction (the spec's reading). We count both directions together, which is
never less than either, so we stop before any of them cuts.
"""

from __future__ import annotations

from collections.abc import Callable

# Bytes held back from the data limit for the muxer's own frames that may follow a write (window
# updates, stream close, GoAway, pings): each is a 12-byte yamux header in an 18-byte-overhead
# Noise frame.
CONTROL_RESERVE = 1024
# What one application write costs on the circuit beyond its payload, per 64 KiB: a yamux header
# (12 bytes) and Noise framing (2-byte length + 16-byte tag), rounded up.
WRITE_OVERHEAD = 32
WRITE_CHUNK = 64 * 1024
# The data limit counts as used up once less than this is left: no useful message fits.
USED_UP_BELOW = 1024
# A connection that ends within this many bytes of its data limit was ended by it: the relay stops
# at a chunk boundary, and the peer's last write may not have been forwarded (more than the
# reserve + used-up threshold above, so both peers agree when one of them ends it for the limit).
DATA_END_SLACK = 4096
# The relay's clock for a circuit starts up to one round trip before the dialer's, and a write
# takes time to cross: writes stop this long before the time limit, and a connection that ends
# within this of it was ended by it.
TIME_MARGIN = 2.0
# js-libp2p's relay server (@libp2p/circuit-relay-v2 4.x) writes Limit.duration in milliseconds
# (its default of 2 minutes goes out as 120000) where the spec says seconds. No relay grants
# circuits longer than a day: a longer whole number of thousands is taken as milliseconds.
MAX_PLAUSIBLE_DURATION = 24 * 3600


def limit_seconds(duration: int, relay_agent: str | None = None) -> int:
    """A Limit.duration as seconds: a js-libp2p relay's (identify agent `js-libp2p/...`) is in
    milliseconds; from a relay we know nothing of, see MAX_PLAUSIBLE_DURATION."""
    if duration and relay_agent and relay_agent.startswith("js-libp2p"):
        return max(1, duration // 1000)
    if duration > MAX_PLAUSIBLE_DURATION and duration % 1000 == 0:
        return duration // 1000
    return duration


def data_words(n: int) -> str:
    """131072 -> '128 KiB'."""
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n}-byte"


def duration_words(seconds: int) -> str:
    """120 -> '2-minute'."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}-hour"
    if seconds % 60 == 0:
        return f"{seconds // 60}-minute"
    return f"{seconds}-second"


class CircuitMeter:
    """Bytes and time used on one relayed connection against the relay's limits."""

    def __init__(self, duration: int = 0, data: int = 0, *, started: float) -> None:
        self.duration = limit_seconds(max(0, int(duration)))  # seconds, 0 = no time limit
        self.data = max(0, int(data))  # bytes, 0 = no data limit
        self.started = started
        self.sent = 0
        self.received = 0
        # Bytes written by the application but still queued above the circuit (in the muxer):
        # they will cross the relay too. Set by whoever owns the muxer.
        self.queued: Callable[[], int] = lambda: 0

    @property
    def limited(self) -> bool:
        return bool(self.duration or self.data)

    @property
    def used(self) -> int:
        return self.sent + self.received

    def on_sent(self, n: int) -> None:
        self.sent += n

    def on_received(self, n: int) -> None:
        self.received += n

    def cost(self, n: int) -> int:
        """Circuit bytes an application write of n bytes uses."""
        return n + WRITE_OVERHEAD * (1 + n // WRITE_CHUNK)

    def refuse(self, n: int, now: float) -> str | None:
        """Why a write of n application bytes must not go out now, or None when it fits."""
        if self.data and self.used + self.queued() + self.cost(n) > self.data - CONTROL_RESERVE:
            return (f"the relay's {data_words(self.data)} data limit for this relayed connection "
                    "is used up")
        if self.duration and now - self.started >= self.duration - TIME_MARGIN:
            return (f"the relay's {duration_words(self.duration)} time limit for this relayed "
                    "connection is reached")
        return None

    def room(self) -> int | None:
        """Application bytes that still fit under the data limit (None: no data limit)."""
        if not self.data:
            return None
        left = self.data - CONTROL_RESERVE - self.used - self.queued()
        return max(0, left - WRITE_OVERHEAD * (1 + max(0, left) // WRITE_CHUNK))

    def data_used_up(self) -> bool:
        """Nothing useful fits into the data limit any more."""
        return bool(self.data) and \
            self.data - CONTROL_RESERVE - self.used - self.queued() < USED_UP_BELOW

    def end_reason(self, low_level: str, now: float, *, relay_gone: bool, peer_left: bool) -> str:
        """Why the connection ended, in words; `low_level` is the muxer's own reason."""
        if self.duration and now - self.started >= self.duration - TIME_MARGIN:
            return f"the relay's {duration_words(self.duration)} time limit was reached"
        if self.data and self.used >= self.data - DATA_END_SLACK:
            return f"the relay's {data_words(self.data)} data limit was reached"
        if relay_gone:
            return "the relay went away"
        if peer_left:
            return "the peer left"
        return low_level
