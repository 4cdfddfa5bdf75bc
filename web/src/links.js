// Which relay address a page can use from where it was loaded, and links that dial an address.
//
// An https page may not open ws:// (mixed content: browsers block it outright), so it needs the
// relay's WebSocket over TLS (/tls/ws, /wss) or WebRTC-direct (UDP, its own DTLS: allowed).
// An http page can use any of them. `p2prtc web --relay` may be given several of the relay's
// addresses; /config.json hands them all over as `relays`.
//
// Links: https://host/#/dial/<multiaddr>. The fragment never reaches the server; the address
// goes in as it is (its / and : are fine in a fragment), only what a fragment cannot carry is
// percent-encoded, as src/p2prtc/web/links.py writes them for `p2prtc listen --web-url`.

export const DIAL_FRAGMENT = '#/dial/'

/** The transport part of a relay address: its protocol names before any /p2p-circuit. */
function relayProtocols (addr) {
  const text = String(addr)
  const head = text.split('/p2p-circuit')[0]
  return head.split('/').filter((p) => p !== '')
}

/** 0: secure WebSocket, 1: WebRTC-direct, 2: plain ws, 3: nothing a browser can dial. */
export function relayKind (addr) {
  const protos = relayProtocols(addr)
  if (protos.includes('wss') || (protos.includes('tls') && protos.includes('ws'))) return 'wss'
  if (protos.includes('webrtc-direct')) return 'webrtc-direct'
  if (protos.includes('ws')) return 'ws'
  return 'other'
}

/** Whether a page loaded over `pageProtocol` ('https:' or 'http:') can dial this relay address. */
export function usableFrom (addr, pageProtocol) {
  const kind = relayKind(addr)
  if (kind === 'other') return false
  return !(pageProtocol === 'https:' && kind === 'ws')
}

const RANK_HTTPS = { wss: 0, 'webrtc-direct': 1 }
const RANK_HTTP = { ws: 0, wss: 1, 'webrtc-direct': 2 }

/**
 * The relay address to use from a page loaded over `pageProtocol`, out of `addrs` (in the order
 * given): { relay, problem }. `problem` says, in words, why none of them can be used.
 */
export function chooseRelay (addrs, pageProtocol) {
  const list = (addrs ?? []).filter((a) => a != null && a !== '')
  if (list.length === 0) return { relay: null, problem: null }
  const rank = pageProtocol === 'https:' ? RANK_HTTPS : RANK_HTTP
  const usable = list.filter((a) => rank[relayKind(a)] != null)
  usable.sort((a, b) => rank[relayKind(a)] - rank[relayKind(b)])
  if (usable.length > 0) return { relay: usable[0], problem: null }
  return { relay: null, problem: mixedContentProblem(list, pageProtocol) }
}

/**
 * Every relay this page can use, out of `addrs`: one address per relay (its peer id, the
 * best-ranked address, as chooseRelay), the best-ranked relay first. The page reserves on each.
 */
export function chooseRelays (addrs, pageProtocol) {
  const rank = pageProtocol === 'https:' ? RANK_HTTPS : RANK_HTTP
  const usable = (addrs ?? []).filter((a) => a != null && a !== '' && rank[relayKind(a)] != null)
  usable.sort((a, b) => rank[relayKind(a)] - rank[relayKind(b)])
  const seen = new Set()
  return usable.filter((a) => {
    const id = String(a).split('/p2p/').pop()
    if (seen.has(id)) return false
    seen.add(id)
    return true
  })
}

/** Why an https page cannot use these relay addresses, or null when it can use one. */
export function mixedContentProblem (addrs, pageProtocol) {
  if (pageProtocol !== 'https:') return null
  const plain = addrs.filter((a) => relayKind(a) === 'ws')
  if (plain.length === 0 || addrs.some((a) => usableFrom(a, pageProtocol))) return null
  const which = plain.length === 1 ? `The only relay address this page has (${plain[0]}) is` : 'The relay addresses this page has are'
  return `${which} plain WebSocket (ws://), and a page opened over https may not use it: ` +
    'browsers block ws:// from https pages (mixed content). Give the relay a WebSocket over TLS ' +
    '(p2prtc relay --wss-port 443 --tls-cert FILE --tls-key FILE) and pass its /tls/ws address ' +
    'to p2prtc web --relay, or open this page over http.'
}

/** The link that opens this page (`pageUrl`, e.g. location.href) and dials `addr`. */
export function dialLink (pageUrl, addr) {
  const base = String(pageUrl).split('#')[0]
  const safe = String(addr).replace(/[^A-Za-z0-9/:@!$&'()*+,;=\-._~?]/g, (c) => encodeURIComponent(c))
  return base + DIAL_FRAGMENT + safe
}

/** The address a `#/dial/<addr>` fragment asks for, or null. */
export function dialTarget (hash) {
  if (typeof hash !== 'string' || !hash.startsWith(DIAL_FRAGMENT)) return null
  const text = hash.slice(DIAL_FRAGMENT.length)
  try {
    const addr = decodeURIComponent(text).trim()
    return addr.startsWith('/') ? addr : null
  } catch {
    return null
  }
}
