// js-libp2p Noise (@chainsafe/libp2p-noise) on one loopback TCP connection, for p2prtc's interop
// tests. Talks JSON lines on stdout (see tests/interop/control.py: a "ready" event first).
//
//   node noise_peer.mjs peer --role responder|initiator [--port P] [options]
//     responder: listens on 127.0.0.1:0, prints {"event":"ready","peerId","port"}, accepts one
//       connection and runs secureInbound.
//     initiator: prints {"event":"ready","peerId"}, connects to 127.0.0.1:P, runs secureOutbound.
//     Then prints {"event":"secured","remotePeer","remoteExtensions"}, sends "hello from js",
//     echoes every byte it receives, and when the remote closes its write half prints
//     {"event":"done","received":N,"sha256":hex} and closes. Failures print
//     {"event":"error","error":msg} and exit 1.
//   node noise_peer.mjs vector [options]
//     js initiator and js responder in this process over loopback TCP with fixed keys; prints one
//     JSON object with the keys used and every byte each side sent (a known-answer vector).
//
// Options: --key-type Ed25519|secp256k1|RSA (identity key, default Ed25519; js peer ids refuse ECDSA)
//   --seed HEX (32-byte Ed25519 identity seed)  --static-key HEX  --ephemeral-key HEX
//   --prologue HEX  --muxers a,b (stream muxers announced in the extensions)
//   --certhashes HEX,HEX (webtransport certhashes)  --expect-peer PEERID
import { createHash } from 'node:crypto'
import net from 'node:net'
import { noise } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { AbstractMultiaddrConnection } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'

const logger = defaultLogger()

function parseArgs (argv) {
  const opts = { mode: argv[0] }
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`)
    opts[argv[i].slice(2)] = argv[i + 1]
  }
  return opts
}

const hex = (buf) => Buffer.from(buf.subarray ? buf.subarray() : buf).toString('hex')
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'))
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

// A MessageStream over a net.Socket (what @libp2p/tcp does, minus metrics and timeouts).
// `record`, if given, collects every byte written, in order.
class SocketConnection extends AbstractMultiaddrConnection {
  constructor (socket, direction, record) {
    super({
      remoteAddr: multiaddr(`/ip4/127.0.0.1/tcp/${socket.remotePort ?? 0}`),
      direction,
      log: logger.forComponent(`noise-peer:socket:${direction}`)
    })
    this.socket = socket
    this.record = record
    socket.on('data', (buf) => this.onData(buf))
    socket.on('end', () => this.onRemoteCloseWrite())
    socket.on('close', () => this.onTransportClosed())
    socket.on('error', (err) => this.abort(err))
    socket.on('drain', () => this.safeDispatchEvent('drain'))
  }

  sendData (data) {
    let canSendMore = true
    for (const buf of data) {
      this.record?.push(Buffer.from(buf))
      canSendMore = this.socket.write(buf)
    }
    return { sentBytes: data.byteLength, canSendMore }
  }

  sendReset () { this.socket.resetAndDestroy() }
  sendPause () { this.socket.pause() }
  sendResume () { this.socket.resume() }
  async sendClose () { await new Promise((resolve) => this.socket.end(resolve)) }
}

async function identityKey (opts, seedOverride) {
  const seed = seedOverride ?? opts.seed
  if (seed) return generateKeyPairFromSeed('Ed25519', unhex(seed))
  const type = opts['key-type'] ?? 'Ed25519'
  if (type === 'RSA') return generateKeyPair('RSA', 2048)
  return generateKeyPair(type)
}

function makeNoise (privateKey, opts, keys = {}) {
  const staticKey = keys.static ?? opts['static-key']
  const ephemeralKey = keys.ephemeral ?? opts['ephemeral-key']
  const prologue = keys.prologue ?? opts.prologue
  const muxers = new Map((opts.muxers ? opts.muxers.split(',') : []).map((m) => [m, {}]))
  const init = {}
  if (staticKey) init.staticNoiseKey = unhex(staticKey)
  if (prologue) init.prologueBytes = unhex(prologue)
  if (opts.certhashes) init.extensions = { webtransportCerthashes: opts.certhashes.split(',').map(unhex) }
  if (ephemeralKey) {
    // js-noise takes its ephemeral key from the crypto implementation: pin it for known answers.
    init.crypto = {
      ...defaultCrypto,
      generateX25519KeyPair: () => defaultCrypto.generateX25519KeyPairFromSeed(unhex(ephemeralKey))
    }
  }
  return noise(init)({
    privateKey,
    peerId: peerIdFromPrivateKey(privateKey),
    logger,
    upgrader: { getStreamMuxers: () => muxers }
  })
}

function describeExtensions (ext) {
  if (ext == null) return null
  return {
    streamMuxers: ext.streamMuxers ?? [],
    webtransportCerthashes: (ext.webtransportCerthashes ?? []).map(hex)
  }
}

async function runPeer (opts) {
  const privateKey = await identityKey(opts)
  const peerId = peerIdFromPrivateKey(privateKey)
  const encrypter = makeNoise(privateKey, opts)
  const remotePeer = opts['expect-peer'] ? peerIdFromString(opts['expect-peer']) : undefined

  let socket
  if (opts.role === 'responder') {
    const server = net.createServer()
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    emit({ event: 'ready', peerId: peerId.toString(), port: server.address().port })
    socket = await new Promise((resolve) => server.once('connection', resolve))
    server.close()
  } else if (opts.role === 'initiator') {
    emit({ event: 'ready', peerId: peerId.toString() })
    socket = net.connect(Number(opts.port), '127.0.0.1')
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  } else {
    throw new Error('--role must be initiator or responder')
  }
  socket.setNoDelay(true)

  const conn = new SocketConnection(socket, opts.role === 'initiator' ? 'outbound' : 'inbound')
  const secured = opts.role === 'initiator'
    ? await encrypter.secureOutbound(conn, { remotePeer })
    : await encrypter.secureInbound(conn, { remotePeer })
  emit({
    event: 'secured',
    remotePeer: secured.remotePeer.toString(),
    remoteExtensions: describeExtensions(secured.remoteExtensions)
  })

  const stream = secured.connection
  const send = async (data) => {
    if (!stream.send(data)) await stream.onDrain()
  }
  await send(new TextEncoder().encode('hello from js'))
  const hash = createHash('sha256')
  let received = 0
  for await (const chunk of stream) {
    const bytes = chunk.subarray()
    received += bytes.byteLength
    hash.update(bytes)
    await send(bytes)
  }
  emit({ event: 'done', received, sha256: hash.digest('hex') })
  await stream.close()
}

// Both sides in this process; fixed keys unless given.
async function runVector (opts) {
  const sides = {
    initiator: {
      seed: opts['initiator-seed'] ?? '11'.repeat(32),
      static: opts['initiator-static-key'] ?? '21'.repeat(32),
      ephemeral: opts['initiator-ephemeral-key'] ?? '31'.repeat(32)
    },
    responder: {
      seed: opts['responder-seed'] ?? '12'.repeat(32),
      static: opts['responder-static-key'] ?? '22'.repeat(32),
      ephemeral: opts['responder-ephemeral-key'] ?? '32'.repeat(32)
    }
  }
  const prologue = opts.prologue ?? ''
  const records = { initiator: [], responder: [] }
  const make = async (role) => {
    const key = await identityKey(opts, sides[role].seed)
    return { key, noise: makeNoise(key, opts, { ...sides[role], prologue }) }
  }
  const init = await make('initiator')
  const resp = await make('responder')

  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise((resolve) => server.once('connection', resolve))
  const client = net.connect(server.address().port, '127.0.0.1')
  await new Promise((resolve, reject) => { client.once('connect', resolve); client.once('error', reject) })
  const serverSocket = await accepted
  server.close()

  const iconn = new SocketConnection(client, 'outbound', records.initiator)
  const rconn = new SocketConnection(serverSocket, 'inbound', records.responder)
  const [iSecured, rSecured] = await Promise.all([
    init.noise.secureOutbound(iconn, { remotePeer: peerIdFromPrivateKey(resp.key) }),
    resp.noise.secureInbound(rconn, { remotePeer: peerIdFromPrivateKey(init.key) })
  ])
  const firstMessage = (stream) => new Promise((resolve) => {
    stream.addEventListener('message', (evt) => resolve(Buffer.from(evt.data.subarray()).toString()), { once: true })
  })
  const iGot = firstMessage(iSecured.connection)
  const rGot = firstMessage(rSecured.connection)
  iSecured.connection.send(new TextEncoder().encode('hello from the initiator'))
  await rGot
  rSecured.connection.send(new TextEncoder().encode('hello from the responder'))
  await iGot
  await Promise.all([iSecured.connection.close(), rSecured.connection.close()])

  emit({
    generator: 'tests/interop/js/noise_peer.mjs vector',
    prologue,
    muxers: opts.muxers ? opts.muxers.split(',') : [],
    initiator: { ...sides.initiator, peerId: peerIdFromPrivateKey(init.key).toString() },
    responder: { ...sides.responder, peerId: peerIdFromPrivateKey(resp.key).toString() },
    initiatorSent: hex(Buffer.concat(records.initiator)),
    responderSent: hex(Buffer.concat(records.responder)),
    messages: { initiator: await rGot, responder: await iGot }
  })
}

const opts = parseArgs(process.argv.slice(2))
try {
  if (opts.mode === 'peer') await runPeer(opts)
  else if (opts.mode === 'vector') await runVector(opts)
  else throw new Error('usage: noise_peer.mjs peer|vector [--option value]...')
  process.exit(0)
} catch (err) {
  emit({ event: 'error', error: err?.message ?? String(err) })
  console.error(err)
  process.exit(1)
}
