// Unit tests of web/src/turn.js (the page's client of /p2prtc/turn-credentials/1.0.0):
// `node --test test/turn.test.mjs`. tests/e2e/test_web_turn.py runs it with TURN_ANSWER_HEX, an
// answer encoded by the Python relay (protocols/turn_credentials.py), and TURN_PASSWORD.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  TurnCache, TurnCredentialsError, decodeCredentials, encodeRequest, iceServersFrom,
  lengthPrefixedBody, selectedPath, turnHosts
} from '../src/turn.js'

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16))

test('the request is one empty length-prefixed message', () => {
  assert.deepEqual([...encodeRequest()], [0])
})

test('an answer written by the Python relay decodes', { skip: process.env.TURN_ANSWER_HEX == null }, () => {
  const creds = decodeCredentials(fromHex(process.env.TURN_ANSWER_HEX))
  assert.deepEqual(creds.urls, ['turn:203.0.113.10:3478?transport=udp', 'turn:203.0.113.10:4884?transport=tcp'])
  assert.equal(creds.username, '1800003600:12D3KooWTest')
  assert.equal(creds.password, process.env.TURN_PASSWORD)
  assert.equal(creds.ttl, 3600)
  assert.equal(creds.expires, 1800003600)
  assert.deepEqual(iceServersFrom(creds), [{ urls: creds.urls, username: creds.username, credential: creds.password }])
  assert.deepEqual(turnHosts(iceServersFrom(creds)), ['203.0.113.10'])
})

function field (n, text) {
  const b = new TextEncoder().encode(text)
  return [n * 8 + 2, b.length, ...b]
}

test('unusable answers are refused', () => {
  const ok = [...field(1, 'turn:h:1'), ...field(2, 'u'), ...field(3, 'p')]
  assert.equal(decodeCredentials(Uint8Array.from(ok), 100).expires, 100) // no expiry in the name: ttl 0
  assert.throws(() => decodeCredentials(Uint8Array.from([...field(1, 'stun:h:1'), ...field(2, 'u'), ...field(3, 'p')])), TurnCredentialsError)
  assert.throws(() => decodeCredentials(Uint8Array.from([...field(1, 'turn:h:1'), ...field(3, 'p')])), TurnCredentialsError)
  assert.throws(() => decodeCredentials(Uint8Array.from(ok.slice(0, -1))), TurnCredentialsError)
  assert.throws(() => decodeCredentials(Uint8Array.from([0x0b])), TurnCredentialsError) // wire type 3
  const many = Array.from({ length: 17 }, () => field(1, 'turn:h:1')).flat()
  assert.throws(() => decodeCredentials(Uint8Array.from([...many, ...field(2, 'u'), ...field(3, 'p')])), /bad TURN URLs/)
})

test('length prefix: incomplete, complete, too long', () => {
  assert.equal(lengthPrefixedBody(Uint8Array.from([])), null)
  assert.equal(lengthPrefixedBody(Uint8Array.from([3, 1, 2])), null)
  assert.deepEqual([...lengthPrefixedBody(Uint8Array.from([3, 1, 2, 3, 9]))], [1, 2, 3])
  assert.equal(lengthPrefixedBody(Uint8Array.from([0x80])), null)
  assert.throws(() => lengthPrefixedBody(Uint8Array.from([0x81, 0x80, 0x01])), /over 8192/)
})

test('TurnCache: one fetch at a time, cached until near expiry, a "no" held for a while', async () => {
  let calls = 0
  const now = Date.now() / 1000
  const cache = new TurnCache({
    fetch: async () => { calls++; return { urls: ['turn:h:1'], username: 'u', password: 'p', expires: now + 86400 } }
  })
  await Promise.all([cache.refresh('r', {}), cache.refresh('r', {})])
  await cache.refresh('r', {})
  assert.equal(calls, 1)
  assert.deepEqual(cache.iceServers(), [{ urls: ['turn:h:1'], username: 'u', credential: 'p' }])
  const none = new TurnCache({ fetch: async () => { calls++; return null } })
  await none.refresh('x', {})
  await none.refresh('x', {})
  assert.equal(calls, 2)
  assert.deepEqual(none.iceServers(), [])
})

function fakePc (local, remote) {
  const stats = new Map([
    ['T', { type: 'transport', selectedCandidatePairId: 'P' }],
    ['P', { type: 'candidate-pair', localCandidateId: 'L', remoteCandidateId: 'R' }],
    ['L', { candidateType: local[0], address: local[1], port: 1 }],
    ['R', { candidateType: remote[0], address: remote[1], port: 2 }]
  ])
  return { getStats: async () => stats }
}

test('selectedPath: direct, our relay candidate, theirs, theirs seen as peer-reflexive', async () => {
  assert.equal((await selectedPath(fakePc(['host', '10.0.0.1'], ['srflx', '192.0.2.1']))).path, 'direct')
  assert.deepEqual(await selectedPath(fakePc(['relay', '203.0.113.10'], ['srflx', '192.0.2.1'])).then((p) => [p.path, p.relay]), ['turn', '203.0.113.10'])
  assert.equal((await selectedPath(fakePc(['srflx', '192.0.2.1'], ['relay', '203.0.113.10']))).path, 'turn')
  assert.equal((await selectedPath(fakePc(['srflx', '192.0.2.1'], ['prflx', '203.0.113.10']), ['203.0.113.10'])).path, 'turn')
  // a host candidate on the TURN server's machine is still direct
  assert.equal((await selectedPath(fakePc(['host', '203.0.113.10'], ['host', '203.0.113.10']), ['203.0.113.10'])).path, 'direct')
  assert.equal(await selectedPath(null), null)
})
