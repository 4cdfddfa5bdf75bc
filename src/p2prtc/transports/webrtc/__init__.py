"""libp2p WebRTC: private-to-private `/webrtc` (signaling over a relayed connection) and the
stream layer over data channels shared with WebRTC-direct. specs: webrtc/webrtc.md, README.md."""
