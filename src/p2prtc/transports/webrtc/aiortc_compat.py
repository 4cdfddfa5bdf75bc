"""Everything we do to aiortc/aioice beyond their public API, in one place.

`apply()` installs our patches once per process, only on the versions they were written and
tested against (`TESTED`); on any other version it logs once and leaves that library's own
behaviour alone. The accessors below read aioice internals that trickle ICE needs (aiortc does
not trickle: its gatherer waits for every STUN/TURN answer before the SDP can leave); each
returns None when the internals are not what we expect, and the caller falls back.

Patches (each with its reason):
- consent (RFC 7675) expires 7 s after the last answered check, checked every 2 s and every
  0.5 s once a check went unanswered (a vanished peer is noticed in 5-8 s, not 30 s);
- an immediate triggered check for in-progress pairs (RFC 8445 7.3.1.4);
- delayed SCTP SACKs (RFC 4960 6.2);
- a DATA_CHANNEL_OPEN on a stream id still held no longer trips an assert that ended the
  connection;
- data-channel messages go to SCTP least-queued channel first, not in one FIFO (a chat message
  no longer waits behind a file's whole queued megabyte).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import random
import time
from typing import Any

log = logging.getLogger(__name__)

# The versions each patch and accessor was written against (pyproject pins the same ranges).
TESTED = {"aiortc": ("1.16.",), "aioice": ("0.13.",)}

_applied: dict[str, bool] = {}


def version_ok(dist: str) -> bool:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return version.startswith(TESTED[dist])


def active() -> dict[str, bool]:
    """Which patches are installed (for tests and `-v` logs)."""
    return dict(_applied)


def apply() -> dict[str, bool]:
    """Install the patches once; returns which are active."""
    if _applied:
        return active()
    ice_ok, sctp_ok = version_ok("aioice"), version_ok("aiortc")
    for dist, ok in (("aioice", ice_ok), ("aiortc", sctp_ok)):
        if not ok:
            log.warning("%s %s is not a version p2prtc was tested with (%s); running it without "
                        "our patches", dist, _version(dist), "/".join(TESTED[dist]))
    _applied["consent"] = ice_ok and _patch_consent()
    _applied["triggered_checks"] = ice_ok and _patch_triggered_checks()
    _applied["delayed_sack"] = sctp_ok and _patch_delayed_sack()
    _applied["reopened_stream_ids"] = sctp_ok and _patch_reopened_stream_ids()
    _applied["channels_in_turn"] = sctp_ok and _patch_channels_in_turn()
    return active()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# aioice checks consent (RFC 7675) every 5 s and gives up after 6 misses in a row: a vanished
# peer takes 30 s to notice (RFC 7675's own timeout). A chat user expects ~10 s (issue 12 asks
# for 10 s from the peer's death to the report): consent expires CONSENT_TIMEOUT after the last
# answered check. Checks go every CONSENT_INTERVAL while answered and every CONSENT_RETRY once
# one was not (libwebrtc, too, pings a connection that stopped answering faster), so loss alone
# cannot expire it: at 5 % loss each way ~10 % of checks go unanswered, and expiry needs ~13 in
# a row. Intervals are randomized by +-20 % (RFC 7675 5.1 asks for randomization).
CONSENT_INTERVAL = 2.0
CONSENT_RETRY = 0.5
CONSENT_TIMEOUT = 7.0


def _patch_consent() -> bool:
    import aioice.ice as ice
    import aioice.stun as stun

    conn_cls = ice.Connection
    if not all(hasattr(conn_cls, a) for a in ("query_consent", "build_request", "close")):
        return False

    async def query_consent(self: Any) -> None:
        # Started by connect() once the remote password is known (as aioice's own).
        assert self.remote_password is not None
        last_answer = time.monotonic()
        answered = True
        while True:
            pause = CONSENT_INTERVAL if answered else CONSENT_RETRY
            await asyncio.sleep(pause * (0.8 + 0.4 * random.random()))
            answered = False
            for pair in list(self._nominated.values()):
                request = self.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request, pair.remote_addr,
                        integrity_key=self.remote_password.encode("utf8"), retransmissions=0)
                except stun.TransactionError:
                    continue
                answered = True
                last_answer = time.monotonic()
            if time.monotonic() - last_answer >= CONSENT_TIMEOUT:
                log.info("ICE consent expired: no answer to a check for %.1f s",
                         time.monotonic() - last_answer)
                self._query_consent_task = None  # close() would cancel this very task
                await self.close()
                return

    query_consent.__qualname__ = "Connection.query_consent"
    # (patching the pinned version's method is this module's purpose; `self` is Any in the
    # replacements below because they read internals aioice does not declare)
    conn_cls.query_consent = query_consent  # type: ignore[method-assign]
    return True


def _patch_triggered_checks() -> bool:
    """RFC 8445 7.3.1.4: a check received for a pair whose own check is in progress triggers a
    new check at once. aioice 0.13 waits for its retransmission timer instead (500 ms), which
    behind NATs is exactly when our first check was dropped (the remote's NAT had no mapping
    yet). We resend the in-flight request immediately; its answer completes the transaction."""
    import aioice.ice as ice

    original = getattr(ice.Connection, "check_incoming", None)
    if original is None:
        return False
    in_progress = ice.CandidatePair.State.IN_PROGRESS

    def check_incoming(self: Any, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        original(self, message, addr, protocol)
        try:
            for pair in self._check_list:
                if pair.protocol is protocol and pair.remote_addr == addr \
                        and pair.state == in_progress:
                    for tx in list(protocol.transactions.values()):
                        if tx._Transaction__addr == addr:
                            protocol.send_stun(tx._Transaction__request, addr)
        except AttributeError:  # internals moved: keep aioice's own behaviour
            pass

    ice.Connection.check_incoming = check_incoming  # type: ignore[method-assign]
    return True


# SCTP delayed acknowledgement (RFC 4960 6.2): acknowledge every second packet, or within
# SACK_DELAY of the first unacknowledged one, and at once when there are gaps or duplicates.
# aiortc 1.16 acknowledges every packet, and the SACK work on both ends was the largest cost of a
# bulk transfer in our profiles (building, sending, and at the sender parsing and walking the
# sent queue for each one).
SACK_DELAY = 0.02


def _patch_delayed_sack() -> bool:
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    if not hasattr(cls, "_send_sack") or not hasattr(cls, "_handle_data"):
        return False
    send_now = cls._send_sack

    async def send_sack(self: Any) -> None:
        timer = getattr(self, "_p2prtc_sack_timer", None)
        if self._sack_misordered or self._sack_duplicates \
                or getattr(self, "_p2prtc_unacked", 0) >= 1:
            self._p2prtc_unacked = 0
            if timer is not None:
                timer.cancel()
                self._p2prtc_sack_timer = None
            await send_now(self)
            return
        self._p2prtc_unacked = 1
        if timer is None:
            def fire() -> None:
                self._p2prtc_sack_timer = None
                if self._sack_needed and self._association_state == cls.State.ESTABLISHED:
                    self._p2prtc_unacked = 1
                    asyncio.ensure_future(send_sack(self))

            self._p2prtc_sack_timer = asyncio.get_running_loop().call_later(SACK_DELAY, fire)

    cls._send_sack = send_sack  # type: ignore[method-assign]
    return True


def _patch_channels_in_turn() -> bool:
    """aiortc hands data-channel messages to SCTP from one FIFO for all channels (each channel
    may queue up to engine.BUFFERED_HIGH, 1 MiB), whenever SCTP's own queue ran empty: under
    congestion a chat message waited behind every byte a file transfer had queued (the lab's
    chaos run: 19-25 s at 5 % loss and 100 ms RTT). Before each hand-over the queue is ordered
    by how much each channel has queued, least first (stable: each channel keeps its own order),
    so a channel sending a little goes before one sending a lot, and bulk channels alternate as
    their backlogs shift."""
    from aiortc import rtcsctptransport

    cls = rtcsctptransport.RTCSctpTransport
    original = getattr(cls, "_data_channel_flush", None)
    if original is None:
        return False

    async def data_channel_flush(self: Any) -> None:
        queue = getattr(self, "_data_channel_queue", None)
        # aiortc hands over only once its own SCTP queue ran empty, yet this runs on every send
        # and every SACK: order the queue only then (scanning it each time cost ~10% of a bulk
        # transfer's CPU, bench/README "before/after")
        if queue is not None and len(queue) > 1 and not getattr(self, "_outbound_queue", True):
            backlog: dict[int, int] = {}
            for channel, _, data in queue:
                backlog[id(channel)] = backlog.get(id(channel), 0) + len(data)
            if len(backlog) > 1:
                ordered = sorted(queue, key=lambda entry: backlog[id(entry[0])])
                queue.clear()
                queue.extend(ordered)
        await original(self)

    cls._data_channel_flush = data_channel_flush  # type: ignore[method-assign]
    return True


def _patch_reopened_stream_ids() -> bool:
    """A DATA_CHANNEL_OPEN on a stream id aiortc still holds trips an `assert` inside aiortc's
    SCTP receive path, which ends the whole connection (seen once in ~55 browser streams: the
    browser reused the id of a channel it had closed before our side's reset completed). A
    closing channel on that id is finished on the spot; an open one is kept and the new open
    ignored, so only that one stream fails."""
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    original = getattr(cls, "_data_channel_receive", None)
    dcep, channel_open = getattr(sctp, "WEBRTC_DCEP", None), getattr(sctp, "DATA_CHANNEL_OPEN", None)
    if original is None or dcep is None or channel_open is None:
        return False

    async def receive(self: Any, stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == dcep and data and data[0] == channel_open:
            existing = self._data_channels.get(stream_id)
            if existing is not None:
                if existing.readyState in ("closing", "closed"):
                    self._data_channel_inbound_reset.discard(stream_id)
                    self._data_channel_outbound_reset.discard(stream_id)
                    self._data_channels.pop(stream_id, None)
                    existing._setReadyState("closed")
                else:
                    log.info("ignoring a data channel open on stream %d: already in use", stream_id)
                    return
        await original(self, stream_id, pp_id, data)

    cls._data_channel_receive = receive  # type: ignore[method-assign]
    return True


# -- ICE internals that trickle needs ---------------------------------------------------------

def ice_connection(pc: Any) -> Any | None:
    """The aioice Connection behind an RTCPeerConnection's data channel transport."""
    try:
        return pc.sctp.transport.transport._connection
    except AttributeError:
        return None


def ice_closing(connection: Any) -> bool:
    """Whether an aioice Connection is closing or closed (consent expired, or close() called)."""
    return bool(getattr(connection, "_closing", False))


def host_protocols(connection: Any) -> list[Any]:
    """The UDP sockets (aioice StunProtocol) of our host candidates."""
    try:
        return [p for p in connection._protocols
                if p.local_candidate is not None and p.local_candidate.type == "host"]
    except AttributeError:
        return []


def add_local_candidate(connection: Any, candidate: Any) -> None:
    """Record a candidate found after the SDP left (for our own reporting: a server-reflexive
    candidate shares its base's socket, so ICE pairs and checks need nothing new)."""
    try:
        connection._local_candidates.append(candidate)
    except AttributeError:
        pass


def selected_pair(connection: Any) -> tuple[Any, Any] | None:
    """(local, remote) aioice Candidates of the nominated pair, or None."""
    try:
        pair = connection._nominated.get(1)
    except AttributeError:
        return None
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate


def new_protocol(connection: Any) -> Any:
    """A socket protocol for `connection` (what aioice uses for each candidate's socket)."""
    import aioice.ice as ice

    return ice.StunProtocol(connection)


def skip_data_channel_id_zero(sctp: Any) -> None:
    """Make an RTCSctpTransport never hand out data channel id 0 (webrtc-direct keeps it for
    the Noise channel): its next id, 0 when we are the DTLS client, moves on to 2."""
    if getattr(sctp, "_data_channel_id", None) == 0:
        sctp._data_channel_id = 2


def add_local_protocol(connection: Any, protocol: Any) -> bool:
    """Add a socket found after ICE began (a TURN allocation) to ICE: pair its candidate with
    every remote candidate; the check loop picks the new pairs up while remote candidates are
    still expected (always, for us: js never ends its list). False if aioice is not as known."""
    try:
        if connection._closing or connection._check_list_done:
            return False
        connection._protocols.append(protocol)
        for remote in list(connection._remote_candidates):
            connection._pair_remote_candidate(remote)
        connection.sort_check_list()
        return True
    except AttributeError:
        return False


async def close_protocol(protocol: Any) -> None:
    """Close a candidate's socket that ICE does not own (for TURN: deallocate)."""
    try:
        await asyncio.wait_for(protocol.close(), 2.0)
    except (TimeoutError, OSError, AttributeError) as e:
        log.debug("closing a candidate socket: %s", e)
