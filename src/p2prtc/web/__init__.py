"""The browser app: aiohttp server for the built js-libp2p peer (static/), `p2prtc web`, `p2prtc demo`."""
