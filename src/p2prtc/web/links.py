"""Links people can click instead of multiaddrs: `https://host/#/dial/<multiaddr>`.

The page (web/src/app.js, `dialFromLink`) reads the fragment, connects to its relay and dials the
address. The multiaddr goes in the fragment as it is (its `/` and `:` are fine there) and never
reaches the web server. Only characters a fragment cannot hold are percent-encoded; the page
decodes with decodeURIComponent.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

DIAL_FRAGMENT = "#/dial/"
# What a fragment may carry unencoded (RFC 3986 3.5: pchar / "/" / "?"), minus "%" itself.
_FRAGMENT_SAFE = "/:@!$&'()*+,;=-._~?"


def dial_link(web_url: str, addr: str) -> str:
    """The link that opens the page at `web_url` and dials `addr`."""
    parts = urlsplit(web_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {web_url!r}")
    base = web_url.split("#", 1)[0]
    return base + DIAL_FRAGMENT + quote(addr, safe=_FRAGMENT_SAFE)


def _usable_from(addr: str, https: bool) -> int:
    """Rank of a browser-dialable address for a page on http or https (lower is better;
    3: unusable, an https page cannot open ws:// (mixed content))."""
    relay = addr.split("/p2p-circuit", 1)[0]
    protos = relay.split("/")
    if "wss" in protos or ("tls" in protos and "ws" in protos):
        return 0
    if "webrtc-direct" in protos:
        return 1
    if "ws" in protos:
        return 3 if https else 0
    return 3


def link_target(browser_addrs: list[str], web_url: str) -> str | None:
    """The address a link to `web_url` should dial: one the page can use from its scheme."""
    https = web_url.lower().startswith("https:")
    ranked = sorted((_usable_from(a, https), i, a) for i, a in enumerate(browser_addrs))
    return ranked[0][2] if ranked and ranked[0][0] < 3 else None


def addr_from_link(text: str) -> str | None:
    """The multiaddr a dial link carries (`p2prtc dial <link>` accepts one), or None when
    `text` is no such link."""
    if not text.lower().startswith(("http://", "https://")) or DIAL_FRAGMENT not in text:
        return None
    addr = unquote(text.split(DIAL_FRAGMENT, 1)[1], errors="strict").strip()
    return addr if addr.startswith("/") else None
