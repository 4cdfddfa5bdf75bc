// Unit tests for the dependency-free modules of the page: `node --test test/` (Node >= 22).
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import { errorText, explainError, limitsAtOpen, noDirectPath, relayedEndReason } from '../src/explain.js'
import { Sha256, sha256Blob } from '../src/sha256.js'

const reference = (bytes) => createHash('sha256').update(bytes).digest('hex')

test('Sha256 matches node:crypto for every length around the block boundaries', () => {
  for (let n = 0; n < 200; n++) {
    const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff)
    assert.equal(new Sha256().update(data).hex(), reference(data), `length ${n}`)
  }
})

test('Sha256 is incremental: any split gives the same digest', () => {
  const data = Uint8Array.from({ length: 100_003 }, (_, i) => (i * 7) & 0xff)
  for (const piece of [1, 3, 63, 64, 65, 4096, 65537]) {
    const h = new Sha256()
    for (let off = 0; off < data.length; off += piece) h.update(data.subarray(off, off + piece))
    assert.equal(h.hex(), reference(data), `pieces of ${piece}`)
  }
})

test('Sha256 known answers', () => {
  assert.equal(new Sha256().hex(), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  assert.equal(new Sha256().update(new TextEncoder().encode('abc')).hex(),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
})

test('sha256Blob without WebCrypto streams through the fallback', async () => {
  const data = Uint8Array.from({ length: 9 * 1024 * 1024 + 5 }, (_, i) => i & 0xff)
  const seen = []
  // as on a plain-http page from another host: an own property shadows Crypto's getter
  Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true })
  try {
    assert.equal(await sha256Blob(new Blob([data]), (done) => seen.push(done)), reference(data))
  } finally {
    delete globalThis.crypto.subtle
  }
  assert.deepEqual(seen, [4 * 1024 * 1024, 8 * 1024 * 1024, data.length])
  assert.equal(await sha256Blob(new Blob([data])), reference(data)) // WebCrypto path
})

test('relay refusals and failed upgrades are explained', () => {
  assert.match(explainError(new Error('failed to connect via relay with status NO_RESERVATION')),
    /not connected to this relay/)
  assert.match(explainError(new Error('failed to connect via relay with status RESOURCE_LIMIT_EXCEEDED')),
    /relay is at its limits/)
  assert.match(explainError(new Error('reservation failed with status RESERVATION_REFUSED')),
    /refused/)
  assert.equal(explainError(new Error('RTCPeerConnection connection state became "failed"')), noDirectPath())
  assert.match(noDirectPath(), /No direct path possible \(symmetric NAT\?/)
  assert.match(noDirectPath(), /chatting over the relay is not possible from a browser/)
  assert.equal(explainError(new Error('something else entirely')), null)
})

test('errorText copes with Events, aggregates and plain values', () => {
  assert.equal(errorText(new Error('boom')), 'boom')
  assert.equal(errorText(new AggregateError([new Error('a'), new Error('b')], 'All multiaddr dials failed')),
    'All multiaddr dials failed: a; b')
  assert.equal(errorText(new Event('error')), 'error event')
  assert.equal(errorText('text'), 'text')
  assert.equal(errorText(undefined), 'unknown error')
})

test('a relayed connection\'s end in words, as p2prtc listen/dial say it', () => {
  // js counts the handshake before the connection opens: 128 KiB minus a little is left then
  const atOpen = limitsAtOpen({ bytes: 131072n - 1500n, seconds: 120 })
  assert.deepEqual(atOpen, { bytes: 131072, seconds: 120 })
  assert.equal(relayedEndReason(atOpen, { bytes: 90000n, seconds: 1 }, false),
    "the relay's 2-minute time limit was reached")
  assert.equal(relayedEndReason(atOpen, { bytes: 0n, seconds: 80 }, false),
    "the relay's 128 KiB data limit was reached")
  assert.equal(relayedEndReason(atOpen, { bytes: 0n, seconds: 80 }, true),
    "the relay's 128 KiB data limit was reached")
  assert.equal(relayedEndReason(atOpen, { bytes: 90000n, seconds: 80 }, true), 'the relay went away')
  assert.equal(relayedEndReason(atOpen, { bytes: 90000n, seconds: 80 }, false), 'the peer left')
  assert.equal(relayedEndReason(limitsAtOpen({ seconds: 6 }), { seconds: 0 }, false),
    "the relay's 6-second time limit was reached")
  assert.equal(relayedEndReason(limitsAtOpen({ bytes: 65536n - 900n }), { bytes: 10n }, false),
    "the relay's 64 KiB data limit was reached")
  assert.equal(relayedEndReason(null, undefined, true), 'the relay went away')
  // a js relay's 2 minutes, written as 120000 "seconds", after 2 minutes
  assert.equal(relayedEndReason(limitsAtOpen({ seconds: 120000 }), { seconds: 119880 }, false),
    "the relay's 2-minute time limit was reached")
  assert.equal(relayedEndReason(limitsAtOpen({ seconds: 120000 }), { seconds: 119950 }, false),
    'the peer left')
})

// -- links.js: which relay address a page can use, and #/dial/ links --------------------------
import { chooseRelay, chooseRelays, dialLink, dialTarget, mixedContentProblem } from '../src/links.js'
import encodeQR from '@paulmillr/qr'

const RID = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const WS = `/ip4/203.0.113.5/tcp/8080/ws/p2p/${RID}`
const TLS = `/dns4/relay.example.org/tcp/443/tls/ws/p2p/${RID}`
const WSS = `/dns4/relay.example.org/tcp/443/wss/p2p/${RID}`
const DIRECT = `/ip4/203.0.113.5/udp/4885/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/${RID}`

test('an https page takes the secure WebSocket, then webrtc-direct, never ws', () => {
  assert.deepEqual(chooseRelay([WS, TLS], 'https:'), { relay: TLS, problem: null })
  assert.deepEqual(chooseRelay([WS, WSS], 'https:'), { relay: WSS, problem: null })
  assert.deepEqual(chooseRelay([WS, DIRECT], 'https:'), { relay: DIRECT, problem: null })
  assert.deepEqual(chooseRelay([DIRECT, TLS], 'https:'), { relay: TLS, problem: null })
  // an http page keeps the order it was given, ws first
  assert.deepEqual(chooseRelay([WS, TLS], 'http:'), { relay: WS, problem: null })
  assert.deepEqual(chooseRelay([], 'https:'), { relay: null, problem: null })
})

test('several relays: one address per relay, the best-ranked relay first', () => {
  const RID2 = '12D3KooWH3uVF6wv47WnArKHk5p6cvgCJEb74UTmxztmQDc298L3'
  const WS2 = `/ip4/203.0.113.6/tcp/8080/ws/p2p/${RID2}`
  assert.deepEqual(chooseRelays([WS, WS2], 'http:'), [WS, WS2])
  assert.deepEqual(chooseRelays([WS, TLS, WS2], 'https:'), [TLS])
  assert.deepEqual(chooseRelays([WS, WS2, TLS], 'http:'), [WS, WS2])
  assert.deepEqual(chooseRelays([DIRECT, WS2, WS], 'http:'), [WS2, WS])
  assert.deepEqual(chooseRelays([], 'http:'), [])
})

test('an https page with only a ws:// relay says so plainly', () => {
  const { relay, problem } = chooseRelay([WS], 'https:')
  assert.equal(relay, null)
  assert.match(problem, /The only relay address this page has \(\/ip4\/203\.0\.113\.5\/tcp\/8080\/ws\/p2p\/12D3KooW\w+\) is plain WebSocket/)
  assert.match(problem, /mixed content/)
  assert.match(problem, /--wss-port/)
  assert.equal(mixedContentProblem([WS], 'http:'), null)
  assert.equal(mixedContentProblem([WS, TLS], 'https:'), null)
})

test('dial links round-trip and match what p2prtc listen --web-url prints', () => {
  const addr = `${TLS}/p2p-circuit/webrtc/p2p/${RID}`
  const link = dialLink('https://chat.example.org/?auto=1#old', addr)
  assert.equal(link, `https://chat.example.org/?auto=1#/dial/${addr}`)
  assert.equal(dialTarget(new URL(link).hash), addr)
  assert.equal(dialTarget('#/dial/%2Fip4%2F1.2.3.4'), '/ip4/1.2.3.4')
  assert.equal(dialTarget('#/dial/%zz'), null)
  assert.equal(dialTarget('#other'), null)
  assert.equal(dialTarget(''), null)
  const weird = '/dns4/a b.example/tcp/1/ws'
  assert.equal(dialTarget(new URL(dialLink('https://x.test/', weird)).hash), weird)
})

test('the QR code of a link is an SVG', () => {
  const svg = encodeQR(dialLink('https://chat.example.org/', `${TLS}/p2p-circuit/webrtc/p2p/${RID}`), 'svg')
  assert.match(svg, /^<svg[^>]*viewBox/)
})
