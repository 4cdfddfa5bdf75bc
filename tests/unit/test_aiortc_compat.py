"""Our aiortc/aioice patches are active on the pinned versions, and refused on any other."""

from __future__ import annotations

import importlib.metadata

import aioice.ice
from aiortc import rtcsctptransport

from p2prtc.transports.webrtc import aiortc_compat, engine  # noqa: F401 - engine applies them


def test_every_patch_is_active_on_the_pinned_versions():
    assert aiortc_compat.version_ok("aiortc") and aiortc_compat.version_ok("aioice")
    assert aiortc_compat.active() == {"consent": True, "triggered_checks": True,
                                      "delayed_sack": True, "reopened_stream_ids": True,
                                      "channels_in_turn": True}
    assert aioice.ice.Connection.query_consent.__module__ == aiortc_compat.__name__
    assert aioice.ice.Connection.check_incoming.__module__ == aiortc_compat.__name__
    sctp = rtcsctptransport.RTCSctpTransport
    assert sctp._send_sack.__module__ == aiortc_compat.__name__
    assert sctp._data_channel_receive.__module__ == aiortc_compat.__name__
    assert sctp._data_channel_flush.__module__ == aiortc_compat.__name__


def test_an_untested_version_is_not_patched(monkeypatch, caplog):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda d: "9.0.0" if d in ("aiortc", "aioice") else real(d))
    monkeypatch.setattr(aiortc_compat, "_applied", {})
    assert aiortc_compat.apply() == {"consent": False, "triggered_checks": False,
                                     "delayed_sack": False, "reopened_stream_ids": False,
                                     "channels_in_turn": False}
    assert "aiortc 9.0.0 is not a version p2prtc was tested with" in caplog.text


async def test_data_channels_least_queued_first():
    """Before aiortc hands messages to SCTP, the channel with the least queued goes first; each
    channel keeps its own order (the patched RTCSctpTransport._data_channel_flush)."""
    from collections import deque
    from types import SimpleNamespace

    file, chat = object(), object()
    big = b"x" * 16384
    sctp = SimpleNamespace(State=rtcsctptransport.RTCSctpTransport.State,
                           _association_state=None,  # not established: aiortc's flush returns
                           _outbound_queue=deque(),  # SCTP's own queue is empty: a hand-over
                           _data_channel_queue=deque([(file, 53, big + b"1"), (file, 53, big + b"2"),
                                                      (chat, 51, b"c1"), (file, 53, big + b"3"),
                                                      (chat, 51, b"c2")]))
    await rtcsctptransport.RTCSctpTransport._data_channel_flush(sctp)
    assert [m[-2:] for _, _, m in sctp._data_channel_queue] == [b"c1", b"c2", b"x1", b"x2", b"x3"]
    sctp._data_channel_queue.extend([(chat, 51, b"c3")])
    sctp._data_channel_queue.popleft()  # what aiortc's flush sends
    await rtcsctptransport.RTCSctpTransport._data_channel_flush(sctp)
    assert [m[-2:] for _, _, m in sctp._data_channel_queue] == [b"c2", b"c3", b"x1", b"x2", b"x3"]
    # while SCTP still has chunks queued aiortc hands nothing over: the queue is left as it is
    # (ordering it on every send and SACK cost ~10% of a bulk transfer's CPU)
    sctp._outbound_queue.append(object())
    sctp._data_channel_queue.appendleft((file, 53, big + b"0"))
    await rtcsctptransport.RTCSctpTransport._data_channel_flush(sctp)
    assert [m[-2:] for _, _, m in sctp._data_channel_queue][0] == b"x0"
