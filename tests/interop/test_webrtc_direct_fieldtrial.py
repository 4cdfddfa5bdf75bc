"""Chromium with the `WebRTC-NoSdpMangleUfrag` field trial (SDP munging forbidden, as Chrome
plans for stable) dialling our webrtc-direct listener, which speaks v1 and v2.

Expected to fail until the js-libp2p in tests/interop/js dials v2 (js-libp2p#3480, open): its
webrtc-direct dialer munges its offer's ufrag (v1), which the field trial refuses with
"InvalidModificationError: Failed to execute 'setLocalDescription'". Our listener's v2 side is
tested against go-libp2p's v2 dialer (test_webrtc_direct_go.py). strict: when js gains v2 this
XPASSes, fails the run, and the marker must go.
"""

from __future__ import annotations

import pytest

from ..netns import lab_ip
from .jspeer import BrowserPeerError, BrowserSession

pytestmark = [pytest.mark.interop, pytest.mark.browser]

FIELD_TRIAL = "--force-fieldtrials=WebRTC-NoSdpMangleUfrag/Enabled/"


@pytest.mark.xfail(strict=True, raises=BrowserPeerError,
                   reason="bundled js-libp2p dials webrtc-direct v1 (SDP munging); v2 is "
                          "js-libp2p#3480, not released")
async def test_browser_with_no_sdp_munging_dials_our_listener(js_installed, host_factory):
    host = await host_factory(listen=[f"/ip4/{lab_ip()}/udp/0/webrtc-direct"])
    addr = next(a for a in host.listen_addrs if a.has("webrtc-direct")).with_peer_id(host.peer_id)
    session = BrowserSession(extra_args=[FIELD_TRIAL])
    try:
        await session.start()
        page = await session.new_peer("field-trial page")
        await page.start()
        try:
            dialed = await page.dial(str(addr))
        except BrowserPeerError as e:
            # the failure is the one the field trial causes, not something else
            assert "setLocalDescription" in str(e) or "InvalidModification" in str(e), e
            raise
        assert "/webrtc-direct/" in dialed["remoteAddr"]
    finally:
        await session.close()
