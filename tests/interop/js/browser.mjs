// The browser build of the harness peer (bundled by build.mjs into dist/browser.js).
//
// window.harness.start(opts) creates a js-libp2p node like the one in
// js-libp2p-example-webrtc-private-to-private (websockets + webRTC + circuit relay transport,
// plus webRTCDirect to reach relays over webrtc-direct,
// noise, yamux, identify, identifyPush, ping) and every other method mirrors a command of
// peer.mjs, resolving to the same JSON-able reply ({ok: true, ...} or {ok: false, error}).
// Events ({event: ...}) go to window.__harnessEvent when the controller exposed it (Playwright's
// expose_function), and are always kept in window.harness.events for polling.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify, identifyPush } from '@libp2p/identify'
import { enable as enableLogs } from '@libp2p/logger'
import { ping } from '@libp2p/ping'
import { webRTC, webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { createLibp2p } from 'libp2p'
import { createHarness, errorText, registerProtocols } from './lib/harness.mjs'

function hex (buf) {
  return Array.from(new Uint8Array(buf), b => b.toString(16).padStart(2, '0')).join('')
}

// WebCrypto has no incremental SHA-256: keep the chunks and hash them at the end.
function newHasher () {
  const parts = []
  let size = 0
  return {
    update (b) { parts.push(b.slice()); size += b.byteLength },
    async digest () {
      const all = new Uint8Array(size)
      let off = 0
      for (const p of parts) { all.set(p, off); off += p.byteLength }
      return hex(await crypto.subtle.digest('SHA-256', all))
    }
  }
}

const events = []
function emit (obj) {
  events.push(obj)
  if (typeof window.__harnessEvent === 'function') {
    try {
      window.__harnessEvent(JSON.stringify(obj))
    } catch (err) {
      console.error('harness: event delivery failed', err)
    }
  }
}

let node = null
let harness = null

async function start (opts = {}) {
  try {
    if (node != null) throw new Error('already started')
    // js-libp2p debug logs (e.g. 'libp2p:webrtc*') to the console, which the controller records
    if (opts.debug) enableLogs(opts.debug)
    const rtcConfiguration = { iceServers: [], ...(opts.rtcConfiguration ?? {}) }
    if (opts.iceServers != null) rtcConfiguration.iceServers = opts.iceServers
    node = await createLibp2p({
      addresses: { listen: opts.listen ?? ['/p2p-circuit', '/webrtc'] },
      transports: [
        webSockets(),
        webRTC({ rtcConfiguration }),
        // dials /webrtc-direct addresses (e.g. a relay's --webrtc-port); browsers cannot listen
        webRTCDirect({ rtcConfiguration }),
        circuitRelayTransport()
      ],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      // the browser's default gater refuses ws:// and private/loopback addresses
      connectionGater: { denyDialMultiaddr: () => false },
      services: {
        identify: identify(),
        identifyPush: identifyPush(),
        ping: ping()
      }
    })
    await registerProtocols(node)
    harness = createHarness(node, { emit, newHasher })
    const ready = {
      event: 'ready',
      peerId: node.peerId.toString(),
      addrs: node.getMultiaddrs().map(a => a.toString()),
      protocols: node.getProtocols().sort()
    }
    emit(ready)
    const { event, ...rest } = ready
    return { ok: true, ...rest }
  } catch (err) {
    console.error('harness: start failed', err)
    return { ok: false, error: errorText(err) }
  }
}

async function call (cmd, args = {}) {
  if (harness == null) return { ok: false, error: 'not started: call harness.start() first' }
  return harness.run({ ...args, cmd })
}

async function stop () {
  if (node == null) return { ok: true }
  try {
    await node.stop()
    return { ok: true }
  } catch (err) {
    return { ok: false, error: errorText(err) }
  } finally {
    node = null
    harness = null
  }
}

window.harness = {
  events,
  start,
  stop,
  call,
  info: () => call('info'),
  addrs: () => call('addrs'),
  dial: (addr, opts = {}) => call('dial', { addr, ...opts }),
  ping: (args) => call('ping', args),
  identify: (args) => call('identify', args),
  echo: (args) => call('echo', args),
  perf: (args) => call('perf', args),
  connections: () => call('connections'),
  hangup: (args) => call('hangup', args),
  get node () { return node }
}
document.documentElement.dataset.harness = 'loaded'
