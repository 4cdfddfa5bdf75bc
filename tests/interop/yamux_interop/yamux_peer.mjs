// A js yamux peer (@chainsafe/libp2p-yamux) over a plain TCP socket on loopback, no Noise:
// both sides frame yamux directly on TCP. Driven by run_yamux_interop.py (see README.md).
//
//   node yamux_peer.mjs client PORT     dial 127.0.0.1:PORT, be the yamux client (odd ids)
//   node yamux_peer.mjs server          listen on 127.0.0.1:0, print "LISTENING <port>"
//
// Every inbound stream is echoed (then closed). The peer also opens STREAMS streams of its
// own, sends SIZE random bytes on each, half-closes, and checks the echo by SHA-256; it pings
// the muxer and reports one JSON line on stdout when the connection ends.

import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

// The packages come from the js interop harness (tests/interop/js, installed by its install.sh)
// or from YAMUX_NODE_MODULES; ESM has no NODE_PATH, so resolve their entry points by hand.
const MODULES = process.env.YAMUX_NODE_MODULES ??
  fileURLToPath(new URL('../js/node_modules/', import.meta.url))

async function load (pkg) {
  const dir = path.join(MODULES, pkg)
  const meta = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8'))
  let entry = meta.exports?.['.'] ?? meta.main
  while (typeof entry === 'object') entry = entry.import ?? entry.default
  return import(pathToFileURL(path.join(dir, entry)).href)
}

const { yamux } = await load('@chainsafe/libp2p-yamux')
const { defaultLogger } = await load('@libp2p/logger')
const { AbstractMultiaddrConnection } = await load('@libp2p/utils')
const { multiaddr } = await load('@multiformats/multiaddr')

const STREAMS = Number(process.env.YAMUX_STREAMS ?? 4)
const SIZE = Number(process.env.YAMUX_SIZE ?? 1024 * 1024)
const CHUNK = 64 * 1024

// A MessageStream over a raw net.Socket, the shape @libp2p/tcp gives js-libp2p's upgrader.
class SocketConnection extends AbstractMultiaddrConnection {
  constructor (socket, direction) {
    super({
      remoteAddr: multiaddr(`/ip4/127.0.0.1/tcp/${socket.remotePort}`),
      direction,
      log: defaultLogger().forComponent(`yamux-interop:${direction}`)
    })
    this.socket = socket
    socket.on('data', buf => { this.onData(buf) })
    socket.on('error', err => { this.abort(err) })
    socket.once('end', () => { this.onTransportClosed() })
    socket.once('close', () => { this.onTransportClosed() })
    socket.on('drain', () => { this.safeDispatchEvent('drain') })
  }

  sendData (data) {
    let sentBytes = 0
    let canSendMore = true
    for (const buf of data) {
      sentBytes += buf.byteLength
      canSendMore = this.socket.write(buf)
      if (!canSendMore) break
    }
    return { sentBytes, canSendMore }
  }

  async sendClose () {
    if (!this.socket.destroyed) {
      this.socket.destroySoon()
    }
  }

  sendReset () { this.socket.resetAndDestroy() }
  sendPause () { this.socket.pause() }
  sendResume () { this.socket.resume() }
}

async function send (stream, buf) {
  if (!stream.send(buf)) {
    await stream.onDrain()
  }
}

async function echo (stream) {
  let bytes = 0
  try {
    for await (const chunk of stream) {
      const buf = chunk.subarray()
      bytes += buf.byteLength
      await send(stream, buf)
    }
    await stream.close()
  } catch (err) {
    log(`echo on stream ${stream.id} failed: ${err}`)
    stream.abort(err)
  }
  return bytes
}

async function roundTrip (muxer, i) {
  const stream = await muxer.createStream()
  const payload = randomBytes(SIZE)
  const want = createHash('sha256').update(payload).digest('hex')
  const hash = createHash('sha256')
  let got = 0
  const reading = (async () => {
    for await (const chunk of stream) {
      const buf = chunk.subarray()
      got += buf.byteLength
      hash.update(buf)
    }
  })()
  for (let off = 0; off < payload.length; off += CHUNK) {
    await send(stream, payload.subarray(off, off + CHUNK))
  }
  await stream.close()
  await reading
  return { stream: stream.id, sent: SIZE, received: got, ok: hash.digest('hex') === want }
}

function log (msg) {
  process.stderr.write(`[js] ${msg}\n`)
}

async function run (socket, direction) {
  const conn = new SocketConnection(socket, direction)
  const muxer = yamux()().createStreamMuxer(conn)
  const inbound = []
  muxer.addEventListener('stream', evt => { inbound.push(echo(evt.detail)) })
  const closed = new Promise(resolve => conn.addEventListener('close', resolve, { once: true }))

  const rtt = await muxer.ping()
  const started = Date.now()
  const results = await Promise.all(Array.from({ length: STREAMS }, (_, i) => roundTrip(muxer, i)))
  const seconds = (Date.now() - started) / 1000
  log(`own streams done in ${seconds}s`)
  // the Python side closes the connection (GoAway) once its own streams are done
  await closed
  const echoed = await Promise.all(inbound)
  const report = {
    role: direction === 'outbound' ? 'client' : 'server',
    yamux: '@chainsafe/libp2p-yamux',
    node: process.version,
    pingMs: rtt,
    streams: results,
    echoedStreams: echoed.length,
    echoedBytes: echoed.reduce((a, b) => a + b, 0),
    mbPerSecond: (STREAMS * SIZE * 2) / seconds / 1e6,
    ok: results.every(r => r.ok)
  }
  process.stdout.write(JSON.stringify(report) + '\n')
}

const [role, port] = process.argv.slice(2)
if (role === 'client') {
  const socket = net.connect({ host: '127.0.0.1', port: Number(port) })
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  await run(socket, 'outbound')
} else if (role === 'server') {
  const server = net.createServer()
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  process.stdout.write(`LISTENING ${server.address().port}\n`)
  const socket = await new Promise(resolve => server.once('connection', resolve))
  server.close()
  await run(socket, 'inbound')
} else {
  process.stderr.write('usage: yamux_peer.mjs client PORT | server\n')
  process.exit(2)
}
