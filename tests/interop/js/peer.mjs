// A js-libp2p peer in Node 22, driven over JSON lines (see tests/interop/control.py).
//
//   node peer.mjs [--listen MA]... [--seed N] [--relay] [--circuit] [--webrtc] [--webrtc-direct]
//                 [--ice-servers JSON] [--rtc-config JSON] [--example-relay]
//
// --example-relay: a relay set up as js-libp2p-example-webrtc-private-to-private's relay.js is
// (WebSocket transport only, identify + circuitRelayServer with only maxReservations lifted, every
// other limit and the connection manager at js-libp2p's defaults); give it a /ws --listen address.
//
// stdout carries only JSON lines: {"event": ...} events and {"id": N, "ok": ...} replies;
// everything else (libp2p's DEBUG logs, our diagnostics) goes to stderr.

import { createHash } from 'node:crypto'
import process from 'node:process'
import readline from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { identify, identifyPush } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { webRTC, webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { createLibp2p } from 'libp2p'
import { createHarness, errorText, registerProtocols } from './lib/harness.mjs'

function write (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function log (...args) {
  process.stderr.write(`[peer ${new Date().toISOString()}] ${args.join(' ')}\n`)
}

process.on('unhandledRejection', (err) => log('unhandled rejection:', errorText(err), err?.stack ?? ''))
process.on('uncaughtException', (err) => log('uncaught exception:', errorText(err), err?.stack ?? ''))

function usage (msg) {
  process.stderr.write(`peer.mjs: ${msg}\n`)
  process.exit(2)
}

let flags
try {
  flags = parseArgs({
    options: {
      listen: { type: 'string', multiple: true, default: [] },
      seed: { type: 'string' },
      relay: { type: 'boolean', default: false },
      'example-relay': { type: 'boolean', default: false },
      circuit: { type: 'boolean', default: false },
      webrtc: { type: 'boolean', default: false },
      'webrtc-direct': { type: 'boolean', default: false },
      'ice-servers': { type: 'string' },
      'rtc-config': { type: 'string' }
    },
    strict: true
  }).values
} catch (err) {
  usage(err.message)
}

async function privateKey () {
  if (flags.seed == null) return generateKeyPair('Ed25519')
  const n = Number(flags.seed)
  if (!Number.isInteger(n) || n < 0 || n > 255) usage('--seed must be an integer 0..255')
  // Same derivation as rust-libp2p's relay-server: a raw ed25519 secret [n, 0, 0, ...]
  const seed = new Uint8Array(32)
  seed[0] = n
  return generateKeyPairFromSeed('Ed25519', seed)
}

function rtcConfiguration () {
  const conf = { iceServers: [] }
  try {
    if (flags['rtc-config'] != null) Object.assign(conf, JSON.parse(flags['rtc-config']))
    if (flags['ice-servers'] != null) conf.iceServers = JSON.parse(flags['ice-servers'])
  } catch (err) {
    usage(`bad JSON in --rtc-config/--ice-servers: ${err.message}`)
  }
  if (!Array.isArray(conf.iceServers)) usage('iceServers must be a JSON array')
  return conf
}

const listen = [...flags.listen]
const circuit = flags.circuit || flags.webrtc // /webrtc signals over a relayed connection
if (flags.webrtc && !listen.some(a => a.endsWith('/webrtc'))) listen.push('/webrtc')

const transports = [
  tcp(),
  // @libp2p/websockets 10 has no address filter any more: what may be dialled is decided by the
  // connection gater, and Node's default gater allows ws:// to loopback and private addresses.
  webSockets()
]
if (circuit) transports.push(circuitRelayTransport())
if (flags.webrtc) transports.push(webRTC({ rtcConfiguration: rtcConfiguration() }))
// dial and listen on /webrtc-direct (listen with --listen /ip4/127.0.0.1/udp/0/webrtc-direct)
if (flags['webrtc-direct'] || listen.some(a => a.includes('/webrtc-direct'))) {
  transports.push(webRTCDirect({ rtcConfiguration: rtcConfiguration() }))
}

const services = {
  identify: identify(),
  identifyPush: identifyPush(),
  ping: ping()
}
if (flags.relay) {
  services.relay = circuitRelayServer({
    // limits lifted (js defaults: 15 reservations, 2 min / 128 KiB per circuit) so the relay
    // itself is never what a benchmark measures
    reservations: { maxReservations: 1024, applyDefaultLimit: false },
    maxInboundHopStreams: 1024,
    maxOutboundStopStreams: 1024
  })
}

// What relay.js configures, and nothing else: the seed's js relay as its authors run it.
function exampleRelayConfig () {
  if (flags.relay || circuit || flags['webrtc-direct']) usage('--example-relay goes without --relay/--circuit/--webrtc*')
  if (!listen.every(a => a.endsWith('/ws'))) usage('--example-relay listens on /ws addresses only')
  return {
    addresses: { listen },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      relay: circuitRelayServer({ reservations: { maxReservations: Infinity } })
    }
  }
}

let node
try {
  if (flags['example-relay']) {
    node = await createLibp2p({ privateKey: await privateKey(), ...exampleRelayConfig() })
  } else {
    node = await createLibp2p({
      privateKey: await privateKey(),
      addresses: { listen },
      transports,
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services,
      connectionGater: {
        // allow dialling loopback and private addresses (the lab uses documentation ranges)
        denyDialMultiaddr: () => false
      },
      connectionManager: {
        maxConnections: 4096,
        // js refuses more than 5 inbound connections per second from one host by default;
        // every test peer is on 127.0.0.1
        inboundConnectionThreshold: 100000,
        maxIncomingPendingConnections: 1024
      }
    })
    await registerProtocols(node)
  }
} catch (err) {
  log('failed to start:', errorText(err), err?.stack ?? '')
  process.exit(1)
}

const harness = createHarness(node, {
  emit: write,
  newHasher () {
    const h = createHash('sha256')
    return { update: (b) => h.update(b), digest: async () => h.digest('hex') }
  }
})

let stopping = false
async function stop (code = 0) {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(code), 3000)
  timer.unref()
  try {
    await node.stop()
  } catch (err) {
    log('stop:', errorText(err))
  }
  process.exit(code)
}

process.on('SIGTERM', () => { stop(0) })
process.on('SIGINT', () => { stop(0) })

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', async (line) => {
  if (line.trim() === '') return
  let msg
  try {
    msg = JSON.parse(line)
  } catch (err) {
    write({ id: null, ok: false, error: `bad JSON: ${err.message}` })
    return
  }
  const id = msg?.id ?? null
  if (msg?.cmd === 'stop') {
    write({ id, ok: true })
    await stop(0)
    return
  }
  const reply = await harness.run(msg)
  write({ ...reply, id })
})
// The controller went away: don't linger as an orphan.
rl.on('close', () => { stop(0) })

write({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(a => a.toString()),
  protocols: node.getProtocols().sort()
})
