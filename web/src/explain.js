// Plain-language explanations for what goes wrong when browsers meet through a relay.

const RELAY_STATUS = {
  NO_RESERVATION: 'the relay does not know that peer: it is not connected to this relay any more ' +
    '(closed its page, or the relay restarted), or the address is mistyped',
  RESOURCE_LIMIT_EXCEEDED: 'the relay is at its limits (too many reservations or relayed ' +
    'connections right now); try again in a minute',
  RESERVATION_REFUSED: 'the relay refused to keep a slot for us',
  PERMISSION_DENIED: 'the relay does not allow this connection',
  CONNECTION_FAILED: 'the relay could not reach that peer',
  MALFORMED_MESSAGE: 'the relay did not understand the request (a different relay version?)'
}

/**
 * An error as text. Dials can fail with things that are not Errors: a WebSocket that cannot
 * connect rejects with its 'error' Event, which has no message.
 */
export function errorText (err) {
  if (err == null) return 'unknown error'
  if (typeof err === 'string') return err
  if (typeof Event !== 'undefined' && err instanceof Event) {
    const ws = typeof WebSocket !== 'undefined' && err.target instanceof WebSocket
    return ws ? `WebSocket connection to ${err.target.url} failed` : `${err.type} event`
  }
  let text = typeof err.message === 'string' ? err.message : ''
  if (Array.isArray(err.errors) && err.errors.length > 0) {
    text += `${text === '' ? '' : ': '}${err.errors.map(errorText).join('; ')}`
  }
  return text === '' ? String(err.name ?? err) : text
}

/** One sentence saying what an error means for the person at the keyboard, or null. */
export function explainError (err) {
  const text = `${err?.name ?? ''} ${errorText(err)}`
  for (const [status, why] of Object.entries(RELAY_STATUS)) {
    if (text.includes(status)) return `Relay: ${why}.`
  }
  if (/NoValidAddresses|no valid addresses/i.test(text)) {
    return 'This browser cannot use that address: browsers reach a relay only over /ws, /wss, ' +
      '/webrtc-direct or /webtransport, and peers only through a relay (/p2p-circuit/webrtc/...).'
  }
  if (/mixed content|insecure WebSocket|SecurityError/i.test(text)) {
    return 'This page is served over https, so it may only use wss:// relays: give the relay a ' +
      'TLS certificate (e.g. behind a reverse proxy) and use its /wss address.'
  }
  if (/ECONNREFUSED|WebSocket|websocket|connection refused|closed before/i.test(text)) {
    return 'Could not reach the relay: is it running, is the address right, and is its port ' +
      'open in the firewall?'
  }
  if (/RTCPeerConnection connection state became|ICE|signal timed out|SDPHandshake/i.test(text)) {
    return noDirectPath()
  }
  if (/limit/i.test(text)) {
    return 'The relay\'s limits for relayed connections (time or data) were reached.'
  }
  return null
}

export function noDirectPath () {
  return 'No direct path possible (symmetric NAT? a firewall blocking UDP?) — chatting over the ' +
    'relay is not possible from a browser. Try again once; if it keeps failing, one of you needs ' +
    'another network (e.g. a phone hotspot instead of a corporate network or VPN).'
}

// Why a relayed connection ended, in the words `p2prtc listen/dial` use (their
// transports/circuit_limit.py). Circuit relay v2 carries no reason, but js-libp2p gives each
// relayed connection `limits`: bytes left (both directions counted together) and seconds left.
const TIME_MARGIN = 2 // s: the relay's clock may start a round trip before ours
const DATA_END_SLACK = 4096 // bytes: the relay stops at a chunk boundary
const LIMIT_ROUNDING = 4096 // bytes: the handshake was counted before the connection opened
// js-libp2p's relay server writes Limit.duration in milliseconds (120000 for 2 minutes) and its
// client reads seconds: no relay grants circuits longer than a day, so a longer whole number of
// thousands is milliseconds (p2prtc's circuit_limit.limit_seconds does the same).
const MAX_PLAUSIBLE_DURATION = 24 * 3600
const limitSeconds = (s) => (s > MAX_PLAUSIBLE_DURATION && s % 1000 === 0) ? s / 1000 : s

export function dataWords (n) {
  if (n % (1024 * 1024) === 0) return `${n / 1024 / 1024} MiB`
  if (n % 1024 === 0) return `${n / 1024} KiB`
  return `${n}-byte`
}

export function durationWords (s) {
  if (s % 3600 === 0) return `${s / 3600}-hour`
  if (s % 60 === 0) return `${s / 60}-minute`
  return `${s}-second`
}

/** The relay's limits as seen when a relayed connection opens (connection.limits then). */
export function limitsAtOpen (limits) {
  if (limits == null) return null
  return {
    bytes: limits.bytes != null ? Math.ceil(Number(limits.bytes) / LIMIT_ROUNDING) * LIMIT_ROUNDING : null,
    seconds: limits.seconds != null ? Number(limits.seconds) : null
  }
}

/**
 * Why a relayed connection ended: `atOpen` from limitsAtOpen, `left` the connection's limits
 * when it closed, `relayGone` whether our connection to the relay closed too.
 */
export function relayedEndReason (atOpen, left, relayGone) {
  if (atOpen?.seconds != null && left?.seconds != null) {
    const duration = limitSeconds(atOpen.seconds)
    if (atOpen.seconds - Number(left.seconds) >= duration - TIME_MARGIN) {
      return `the relay's ${durationWords(duration)} time limit was reached`
    }
  }
  if (atOpen?.bytes != null && left?.bytes != null && Number(left.bytes) <= DATA_END_SLACK) {
    return `the relay's ${dataWords(atOpen.bytes)} data limit was reached`
  }
  if (relayGone) return 'the relay went away'
  return 'the peer left'
}
