// TURN credentials from our relay, `/p2prtc/turn-credentials/1.0.0` (spec:
// src/p2prtc/protocols/turn_credentials.py, message: src/p2prtc/pb/turn_credentials.proto).
//
// The peer opens the stream on its own (not relayed) connection to the relay and writes one
// uvarint-length-prefixed, empty TurnCredentialsRequest; the relay answers with one
// length-prefixed TurnCredentials {urls (1), username (2), password (3), ttl (4)} and closes. A
// relay that does not speak the protocol (js, rust) refuses it in multistream-select: no TURN.
//
// No imports: the page bundles this file, and the NAT lab's browser agent loads it as is into the
// js-libp2p harness page (src/p2prtc/lab/browser_agent.py).

export const TURN_CREDENTIALS_PROTOCOL = '/p2prtc/turn-credentials/1.0.0'
// Same limits as the Python side (protocols/turn_credentials.py).
export const FETCH_TIMEOUT = 5000 // ms, negotiation included
export const MAX_RESPONSE_SIZE = 8192
export const MAX_URLS = 16
// Fetch again when the credentials have less than this left (s); and how long a "no" from a
// relay holds before asking it again (s).
export const REFRESH_MARGIN = 600
export const NO_TURN_RECHECK = 600

export class TurnCredentialsError extends Error {}

/** The request: a zero length prefix (an empty TurnCredentialsRequest). */
export function encodeRequest () {
  return Uint8Array.of(0)
}

function readVarint (buf, pos) {
  let value = 0
  let scale = 1
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new TurnCredentialsError('truncated varint')
    const b = buf[pos++]
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) return [value, pos]
    scale *= 128
  }
  throw new TurnCredentialsError('varint too long')
}

/**
 * A complete length-prefixed message at the start of `buf`: its body, or null while more bytes
 * are needed. Throws when the prefix announces more than `max` bytes.
 */
export function lengthPrefixedBody (buf, max = MAX_RESPONSE_SIZE) {
  let len, pos
  try {
    [len, pos] = readVarint(buf, 0)
  } catch (err) {
    if (buf.length < 10 && err.message === 'truncated varint') return null
    throw err
  }
  if (len > max) throw new TurnCredentialsError(`answer of ${len} bytes is over ${max}`)
  return buf.length >= pos + len ? buf.subarray(pos, pos + len) : null
}

/** TurnCredentials (protobuf) -> {urls, username, password, ttl, expires}; throws unless usable. */
export function decodeCredentials (body, now = Date.now() / 1000) {
  const text = new TextDecoder('utf-8', { fatal: true })
  const out = { urls: [], username: '', password: '', ttl: 0 }
  let pos = 0
  try {
    while (pos < body.length) {
      let key, n
      [key, pos] = readVarint(body, pos)
      const field = Math.floor(key / 8)
      const wire = key & 7
      if (wire === 0) {
        [n, pos] = readVarint(body, pos)
        if (field === 4) out.ttl = n
      } else if (wire === 2) {
        [n, pos] = readVarint(body, pos)
        if (pos + n > body.length) throw new TurnCredentialsError('truncated field')
        const bytes = body.subarray(pos, pos + n)
        pos += n
        if (field === 1) out.urls.push(text.decode(bytes))
        else if (field === 2) out.username = text.decode(bytes)
        else if (field === 3) out.password = text.decode(bytes)
      } else if (wire === 1) {
        pos += 8
      } else if (wire === 5) {
        pos += 4
      } else {
        throw new TurnCredentialsError(`wire type ${wire}`)
      }
    }
  } catch (err) {
    throw new TurnCredentialsError(`bad TURN credentials message: ${err.message}`)
  }
  if (pos > body.length) throw new TurnCredentialsError('bad TURN credentials message: truncated')
  if (out.urls.length === 0 || out.urls.length > MAX_URLS ||
      !out.urls.every((u) => u.startsWith('turn:') || u.startsWith('turns:'))) {
    throw new TurnCredentialsError(`bad TURN URLs in credentials: ${JSON.stringify(out.urls.slice(0, MAX_URLS))}`)
  }
  if (out.username === '' || out.password === '') {
    throw new TurnCredentialsError('TURN credentials without username or password')
  }
  const head = out.username.split(':')[0]
  out.expires = /^\d+$/.test(head) ? Number(head) : now + out.ttl
  return out
}

/** RTCIceServer entries for the credentials. */
export function iceServersFrom (creds) {
  return creds == null ? [] : [{ urls: creds.urls, username: creds.username, credential: creds.password }]
}

function chunkOf (data) {
  return data instanceof Uint8Array ? data : data.subarray()
}

/**
 * Ask the relay at the other end of `conn` (a js-libp2p Connection, not limited) for TURN
 * credentials. Resolves to the credentials, or null when the relay does not speak the protocol
 * or anything goes wrong (the reason goes to `onError`).
 */
export async function fetchTurnCredentials (conn, { timeout = FETCH_TIMEOUT, onError } = {}) {
  const signal = AbortSignal.timeout(timeout)
  let stream = null
  try {
    stream = await conn.newStream(TURN_CREDENTIALS_PROTOCOL, { signal })
    const answer = new Promise((resolve, reject) => {
      let buf = new Uint8Array(0)
      const fail = (err) => { cleanup(); reject(err) }
      const onMessage = (evt) => {
        const chunk = chunkOf(evt.data)
        const next = new Uint8Array(buf.length + chunk.length)
        next.set(buf)
        next.set(chunk, buf.length)
        buf = next
        try {
          const body = lengthPrefixedBody(buf)
          if (body != null) { cleanup(); resolve(body) }
        } catch (err) {
          fail(err)
        }
      }
      const onClose = () => fail(new TurnCredentialsError('the relay closed the stream before answering'))
      const onAbort = () => fail(new TurnCredentialsError(`no answer within ${timeout} ms`))
      const cleanup = () => {
        stream.removeEventListener('message', onMessage)
        stream.removeEventListener('close', onClose)
        signal.removeEventListener('abort', onAbort)
      }
      stream.addEventListener('message', onMessage)
      stream.addEventListener('close', onClose)
      signal.addEventListener('abort', onAbort)
    })
    if (!stream.send(encodeRequest())) await stream.onDrain({ signal })
    const creds = decodeCredentials(await answer)
    await stream.close({ signal }).catch(() => {})
    return creds
  } catch (err) {
    stream?.abort(err)
    onError?.(err)
    return null
  }
}

/**
 * TURN servers per relay: `refresh(relayPeer, conn)` fetches (once at a time) when the cached
 * credentials are missing or about to expire; `iceServers()` gives every relay's current ones.
 */
export class TurnCache {
  constructor ({ fetch = fetchTurnCredentials, onError } = {}) {
    this.fetch = fetch
    this.onError = onError
    this.entries = new Map() // relay peer id -> {creds, until}
    this.pending = new Map() // relay peer id -> Promise
  }

  fresh (relay, now = Date.now() / 1000) {
    const e = this.entries.get(relay)
    return e != null && e.until - now > (e.creds != null ? REFRESH_MARGIN : 0)
  }

  refresh (relay, conn) {
    if (this.fresh(relay)) return Promise.resolve(this.entries.get(relay).creds)
    if (this.pending.has(relay)) return this.pending.get(relay)
    const p = this.fetch(conn, { onError: (err) => this.onError?.(relay, err) }).then((creds) => {
      const until = creds != null ? creds.expires : Date.now() / 1000 + NO_TURN_RECHECK
      this.entries.set(relay, { creds, until })
      return creds
    }).finally(() => this.pending.delete(relay))
    this.pending.set(relay, p)
    return p
  }

  credentials (relay) {
    return this.entries.get(relay)?.creds ?? null
  }

  iceServers () {
    return [...this.entries.values()].flatMap((e) => iceServersFrom(e.creds))
  }
}

/**
 * How a WebRTC connection's packets travel, from its RTCPeerConnection's selected candidate
 * pair: {path: 'turn', relay: '<TURN relayed IP>', pair} or {path: 'direct', pair}; null while
 * no pair is selected. `turnHosts`: the TURN servers' addresses we know, for a peer-reflexive
 * remote candidate that is the other side's relayed address (its checks came before its
 * signalling; Chromium may also hide a peer-reflexive address, then this cannot tell).
 */
export async function selectedPath (pc, turnHosts = []) {
  if (pc == null || typeof pc.getStats !== 'function') return null
  const stats = await pc.getStats()
  let pair = null
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId)
  })
  if (pair == null) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s
    })
  }
  if (pair == null) return null
  const l = stats.get(pair.localCandidateId)
  const r = stats.get(pair.remoteCandidateId)
  if (l == null || r == null) return null
  const desc = {
    local: l.candidateType,
    remote: r.candidateType,
    local_addr: `${l.address ?? l.ip}:${l.port}`,
    remote_addr: `${r.address ?? r.ip}:${r.port}`
  }
  if (l.candidateType === 'relay') return { path: 'turn', relay: l.address ?? l.ip, pair: desc }
  const remoteIp = r.address ?? r.ip
  if (r.candidateType === 'relay' || (r.candidateType === 'prflx' && turnHosts.includes(remoteIp))) {
    return { path: 'turn', relay: remoteIp, pair: desc }
  }
  return { path: 'direct', pair: desc }
}

/** The hosts of turn:/turns: URLs (turn:203.0.113.10:3478?transport=udp -> 203.0.113.10). */
export function turnHosts (iceServers) {
  const hosts = new Set()
  for (const s of iceServers) {
    for (const url of [s.urls].flat()) {
      const m = /^turns?:(\[[^\]]+\]|[^:?]+)/.exec(url)
      if (m != null) hosts.add(m[1].replace(/^\[|\]$/g, ''))
    }
  }
  return [...hosts]
}
