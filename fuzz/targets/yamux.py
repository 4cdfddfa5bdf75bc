"""muxer/yamux_session.py: a YamuxSession fed random frame sequences, reacting as an app would.

Input: a policy byte (role, split seed, how the application reacts), then the wire bytes.
Contract: receive_data returns events or raises ProtocolError, after which the session refuses
more input; it never delivers more bytes on a stream than the window it granted, never holds
more inbound streams than its limit, and everything it sends is valid yamux: a peer session
fed our output (as it would be) never raises.
"""

from p2prtc.errors import ProtocolError, StreamClosed
from p2prtc.muxer import yamux_session as y

from ..harness import split_points

MAX_STREAMS = 8  # a small limit so the fuzzer reaches it


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def test_one(data: bytes) -> None:
    if len(data) < 2:
        return
    policy, seed, wire = data[0], data[1], data[2:]
    is_client = bool(policy & 1)
    session = y.YamuxSession(is_client, max_streams=MAX_STREAMS, max_outbound_streams=4,
                             clock=_Clock())
    # The remote as our output sees it: it does not see the fuzzer's frames, so frames for
    # streams it never opened are the "unknown stream" case every implementation skips.
    peer = y.YamuxSession(not is_client, max_streams=1000, clock=_Clock())
    received: dict[int, int] = {}
    if policy & 2:
        session.open_stream()
    if policy & 4:
        session.ping()
    try:
        for chunk in split_points(wire, seed):
            events = session.receive_data(chunk)
            # A remote may reuse an id once its stream is gone (the session only refuses a SYN
            # for an open one, as go-yamux does): the last incarnation in a batch is the live one.
            last_open = {ev.stream_id: i for i, ev in enumerate(events)
                         if isinstance(ev, y.StreamOpened)}
            for i, ev in enumerate(events):
                if isinstance(ev, y.StreamOpened) and last_open[ev.stream_id] != i:
                    continue
                _react(session, ev, policy, received)
            _check(session)
            peer.receive_data(session.data_to_send())
    except ProtocolError:
        try:
            session.receive_data(b"\x00" * 12)
        except ProtocolError:
            pass
        else:
            raise AssertionError("a failed yamux session accepted more input")
        session.go_away(y.GO_AWAY_PROTOCOL_ERROR)
        peer.receive_data(session.data_to_send())


def _react(session: y.YamuxSession, ev, policy: int, received: dict[int, int]) -> None:
    if isinstance(ev, y.DataReceived):
        received[ev.stream_id] = received.get(ev.stream_id, 0) + len(ev.data)
        assert received[ev.stream_id] <= y.MAX_WINDOW * 2
        if policy & 8:
            session.consumed(ev.stream_id, len(ev.data))
    elif isinstance(ev, y.StreamOpened):
        # (Events come after the whole chunk was parsed: the stream may be gone already.)
        if not session.has_stream(ev.stream_id):
            return
        if policy & 16:
            session.send_data(ev.stream_id, b"x" * (1 + policy))
        if policy & 32:
            session.end_stream(ev.stream_id)
        if policy & 64:
            try:
                session.open_stream()
            except StreamClosed:
                pass
    elif isinstance(ev, y.StreamEnded) and policy & 128:
        if session.has_stream(ev.stream_id):
            session.reset_stream(ev.stream_id)
    elif isinstance(ev, y.StreamReset):
        received.pop(ev.stream_id, None)


def _check(session: y.YamuxSession) -> None:
    inbound = [s for s in session.stream_ids if (s & 1) != session.is_client]
    assert len(inbound) <= MAX_STREAMS, "more inbound streams than the limit"
    for sid in session.stream_ids:
        assert 0 <= session.send_window(sid) <= y.MAX_UINT32
        assert y.DEFAULT_WINDOW <= session.recv_window(sid) <= y.MAX_WINDOW


def seeds() -> list[bytes]:
    # Made by our own sessions: what a real remote sends.
    out = []
    for role in (0, 1):
        remote = y.YamuxSession(bool(role))
        sid = remote.open_stream()
        remote.send_data(sid, b"hello")
        remote.ping()
        sid2 = remote.open_stream()
        remote.send_data(sid2, b"z" * 1000)
        remote.end_stream(sid)
        remote.reset_stream(sid2)
        remote.go_away()
        wire = remote.data_to_send()
        # our role is the other one; policy bits: react in every way
        out.append(bytes([(1 - role) | 0b11111000, 0]) + wire)
        out.append(bytes([(1 - role) | 0b00001110, 5]) + wire)
    h = y.HEADER.pack
    out.append(b"\x01\x00" + h(0, y.TYPE_DATA, y.FLAG_SYN, 2, 3) + b"abc"
               + h(0, y.TYPE_WINDOW_UPDATE, y.FLAG_FIN, 2, 0) + h(0, y.TYPE_DATA, 0, 2, 1) + b"!")
    out.append(b"\x00\x03" + h(0, y.TYPE_PING, y.FLAG_ACK, 0, 0) + h(0, 7, 0, 0, 0))
    out.append(b"\x08\x00" + b"".join(h(0, y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 2 * i + 1, 0)
                                      for i in range(12)))
    return out
