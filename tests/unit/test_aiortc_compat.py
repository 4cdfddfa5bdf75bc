"""Our aiortc/aioice patches are active on the pinned versions, and refused on any other."""

from __future__ import annotations

import importlib.metadata

import aioice.ice
from aiortc import rtcsctptransport

from p2prtc.transports.webrtc import aiortc_compat, engine  # noqa: F401 - engine applies them


def test_every_patch_is_active_on_the_pinned_versions():
    assert aiortc_compat.version_ok("aiortc") and aiortc_compat.version_ok("aioice")
    assert aiortc_compat.active() == {"consent": True, "triggered_checks": True,
                                      "delayed_sack": True, "reopened_stream_ids": True}
    assert aioice.ice.Connection.query_consent.__module__ == aiortc_compat.__name__
    assert aioice.ice.Connection.check_incoming.__module__ == aiortc_compat.__name__
    sctp = rtcsctptransport.RTCSctpTransport
    assert sctp._send_sack.__module__ == aiortc_compat.__name__
    assert sctp._data_channel_receive.__module__ == aiortc_compat.__name__


def test_an_untested_version_is_not_patched(monkeypatch, caplog):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda d: "9.0.0" if d in ("aiortc", "aioice") else real(d))
    monkeypatch.setattr(aiortc_compat, "_applied", {})
    assert aiortc_compat.apply() == {"consent": False, "triggered_checks": False,
                                     "delayed_sack": False, "reopened_stream_ids": False}
    assert "aiortc 9.0.0 is not a version p2prtc was tested with" in caplog.text
